"""Server-Sent Events for job progress: in-process fan-out and the cross-process (polling) path."""

from __future__ import annotations

import json
import threading
from typing import Any

from fastapi.testclient import TestClient

from studiolo.app import create_app
from studiolo.services import build_services
from tests.helpers import auth_headers, drain


def _events(client: TestClient, url: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with client.stream("GET", url) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert data["type"] == name
                events.append(data)
    return events


def test_event_stream_follows_a_job_to_the_end(settings_factory: Any) -> None:
    svc = build_services(settings_factory(echo_step_delay=0.02), upgrade_db=False)
    try:
        with TestClient(create_app(services=svc, start_workers=False)) as client:
            client.headers.update(auth_headers(svc))
            job = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "steps": 5, "n": 2}).json()
            svc.start_workers(1)
            events = _events(client, job["urls"]["events"])
    finally:
        svc.close()
    types = [e["type"] for e in events]
    assert types[0] in ("queued", "started")
    assert "started" in types
    steps = [e["step"] for e in events if e["type"] == "progress"]
    assert steps == sorted(steps) and steps[-1] == 5 and all(e["total"] == 5 for e in events if e["type"] == "progress")
    assert types.count("output") == 2
    assert types[-1] == "succeeded"
    assert len(events[-1]["image_ids"]) == 2 and events[-1]["job"]["status"] == "succeeded"


def test_event_stream_of_a_finished_job_ends_at_once(client: TestClient, services: Any) -> None:
    job = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "steps": 2}).json()
    client.post(job["urls"]["cancel"])
    events = _events(client, job["urls"]["events"])
    assert [e["type"] for e in events] == ["canceled"]


def test_event_stream_sees_a_job_run_by_another_process(settings_factory: Any) -> None:
    settings = settings_factory(echo_step_delay=0.02)
    api = build_services(settings, upgrade_db=False)
    other = build_services(settings, upgrade_db=False)  # its own event bus: like a separate worker process
    try:
        with TestClient(create_app(services=api, start_workers=False)) as client:
            client.headers.update(auth_headers(api))
            job = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "steps": 3}).json()
            runner = threading.Thread(target=drain, args=(other,))
            runner.start()
            events = _events(client, job["urls"]["events"])
            runner.join()
    finally:
        other.close()
        api.close()
    assert events[0]["type"] in ("queued", "started", "progress")
    assert events[-1]["type"] == "succeeded" and len(events[-1]["image_ids"]) == 1
