"""Server-Sent Events for job progress: in-process fan-out, the cross-process (polling) path, live previews."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from studiolo.app import create_app
from studiolo.domain.generation.events import EventBus
from studiolo.domain.generation.previews import PREVIEW_INTERVAL_SECONDS
from studiolo.engines.base import GenerationRequest
from studiolo.engines.echo import EchoEngine
from studiolo.services import Services, build_services
from tests.helpers import auth_headers, drain, submit


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
    # Both images in one call (the echo engine): image 0 of the job's 2.
    assert all(e["image"] == 0 and e["images"] == 2 for e in events if e["type"] == "progress")
    assert types.count("output") == 2
    assert types[-1] == "succeeded"
    assert len(events[-1]["image_ids"]) == 2 and events[-1]["job"]["status"] == "succeeded"


def test_a_start_missed_between_the_first_read_and_the_subscription_is_still_told(
    client: TestClient, services: Services
) -> None:
    # The stream reads the job (queued), then subscribes; a worker's "started" published in between is gone.
    job = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "steps": 2}).json()

    def worker_side() -> None:
        deadline = time.monotonic() + 10
        while not services.events.has_listeners(job["id"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        services.events.publish(job["id"], {"type": "progress", "step": 1, "total": 2})
        services.events.publish(job["id"], {"type": "progress", "step": 2, "total": 2})
        client.post(job["urls"]["cancel"])  # ends the job (and its stream)

    publisher = threading.Thread(target=worker_side)
    publisher.start()
    events = _events(client, job["urls"]["events"])
    publisher.join()
    assert [e["type"] for e in events] == ["queued", "started", "progress", "progress", "canceled"]
    assert events[1] == {"type": "started", "attempt": 1}


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


class _CountingEcho(EchoEngine):
    """The echo engine, counting how often a preview was actually drawn."""

    def __init__(self, step_delay: float = 0.0):
        super().__init__(step_delay=step_delay)
        self.previews_drawn = 0

    def _preview(self, request: GenerationRequest, step: int) -> Image.Image:
        self.previews_drawn += 1
        return super()._preview(request, step)


def _run_job_collecting(svc: Services, steps: int, **listen: Any) -> tuple[list[dict[str, Any]], float]:
    """Submit one job, run it here while collecting its events; returns (events, seconds the job ran)."""
    events: list[dict[str, Any]] = []
    job_id = submit(svc, steps=steps)
    unsubscribe = svc.events.subscribe(job_id, events.append, **listen)
    started = time.monotonic()
    try:
        drain(svc)
    finally:
        unsubscribe()
    return events, time.monotonic() - started


def test_previews_are_rate_limited_and_skip_the_last_step(settings_factory: Any) -> None:
    engine = _CountingEcho(step_delay=0.02)
    svc = build_services(settings_factory(), engines={"echo": engine}, upgrade_db=False)
    try:
        events, seconds = _run_job_collecting(svc, steps=40)
    finally:
        svc.close()
    previews = [e for e in events if e["type"] == "preview"]
    assert previews, "no preview while a listener was subscribed"
    # The first step may send one; after that at most one per PREVIEW_INTERVAL_SECONDS of run time.
    assert len(previews) <= 1 + seconds / PREVIEW_INTERVAL_SECONDS
    assert engine.previews_drawn == len(previews)  # only the previews that were sent were drawn
    assert all(e["step"] < e["total"] == 40 for e in previews)
    steps = [e["step"] for e in previews]
    assert steps == sorted(steps) and steps[0] == 1
    for event in previews:
        prefix, _, data = event["data_url"].partition(",")
        assert prefix == "data:image/webp;base64"
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "WEBP" and max(image.size) <= 256
    # Each preview follows the progress event of its step.
    kinds = [(e["type"], e.get("step")) for e in events]
    assert all(kinds[kinds.index(("preview", s)) - 1] == ("progress", s) for s in steps)


def test_no_preview_is_drawn_when_nobody_takes_previews(settings_factory: Any) -> None:
    engine = _CountingEcho()
    svc = build_services(settings_factory(), engines={"echo": engine}, upgrade_db=False)
    try:
        events, _ = _run_job_collecting(svc, steps=5, types=("progress", "succeeded"))
    finally:
        svc.close()
    assert [e["type"] for e in events].count("progress") == 5
    assert engine.previews_drawn == 0


def test_previews_can_be_switched_off(settings_factory: Any) -> None:
    engine = _CountingEcho()
    svc = build_services(settings_factory(previews=False), engines={"echo": engine}, upgrade_db=False)
    try:
        events, _ = _run_job_collecting(svc, steps=5)
    finally:
        svc.close()
    assert "preview" not in [e["type"] for e in events] and engine.previews_drawn == 0


def test_a_failing_preview_stops_previews_not_the_job(settings_factory: Any) -> None:
    class Broken(_CountingEcho):
        def _preview(self, request: GenerationRequest, step: int) -> Image.Image:
            self.previews_drawn += 1
            raise RuntimeError("no preview today")

    engine = Broken(step_delay=0.02)
    svc = build_services(settings_factory(), engines={"echo": engine}, upgrade_db=False)
    try:
        events, _ = _run_job_collecting(svc, steps=40)
    finally:
        svc.close()
    types = [e["type"] for e in events]
    assert types[-1] == "succeeded" and "preview" not in types
    assert engine.previews_drawn == 1


def test_with_a_relay_previews_are_made_for_other_processes() -> None:
    bus = EventBus()
    assert not bus.may_have_listeners("job", "preview")
    unsubscribe = bus.subscribe("job", lambda ev: None, types=("progress",))
    assert bus.has_listeners("job") and not bus.has_listeners("job", "preview")
    unsubscribe()
    bus.relay = lambda job_id, event: None  # listeners in other processes are invisible from here
    assert bus.may_have_listeners("job", "preview")


def test_event_stream_delivers_previews(settings_factory: Any) -> None:
    svc = build_services(settings_factory(echo_step_delay=0.05), upgrade_db=False)
    try:
        with TestClient(create_app(services=svc, start_workers=False)) as client:
            client.headers.update(auth_headers(svc))
            job = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "steps": 30}).json()
            # The worker starts a moment after the stream subscribed, so the stream takes previews from the start.
            runner = threading.Timer(0.3, drain, args=(svc,))
            runner.start()
            events = _events(client, job["urls"]["events"])
            runner.join()
    finally:
        svc.close()
    previews = [e for e in events if e["type"] == "preview"]
    assert previews and all(e["data_url"].startswith("data:image/webp;base64,") for e in previews)
    assert all(e["step"] < e["total"] == 30 for e in previews)
    assert events[-1]["type"] == "succeeded"


def test_event_stream_never_sends_progress_backwards(settings_factory: Any, monkeypatch: Any) -> None:
    """The stream re-reads the row when no live event came for a second; the row's progress is written at most
    every _PROGRESS_WRITE_INTERVAL, so it can lag behind what was already streamed and must not be re-sent."""
    from studiolo.domain.generation import worker

    monkeypatch.setattr(worker, "_PROGRESS_WRITE_INTERVAL", 3600.0)  # the row keeps step 0 for the whole run
    svc = build_services(settings_factory(echo_step_delay=1.15), upgrade_db=False)
    try:
        with TestClient(create_app(services=svc, start_workers=False)) as client:
            client.headers.update(auth_headers(svc))
            job = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "steps": 3}).json()
            svc.start_workers(1)
            events = _events(client, job["urls"]["events"])
    finally:
        svc.close()
    steps = [e["step"] for e in events if e["type"] == "progress"]
    assert steps and steps == sorted(steps) and steps[-1] == 3, steps
    assert events[-1]["type"] == "succeeded"
