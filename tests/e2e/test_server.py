"""A real ``studiolo serve`` process over real HTTP: submit, live events, files, docs, restarts, empty install."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import Launcher, Server, echo_env, studiolo_env

pytestmark = pytest.mark.slow

GEN = "/api/v1/generations"
TERMINAL = ("succeeded", "failed", "canceled")
# uvicorn shuts down gracefully on SIGTERM, then re-raises the signal, so a clean stop reads as -SIGTERM.
STOPPED = (0, -signal.SIGTERM)


def submit(server: Server, **body: Any) -> dict[str, Any]:
    body.setdefault("size", "64x64")
    r = server.client.post(GEN, json=body)
    assert r.status_code == 202, r.text
    accepted: dict[str, Any] = r.json()
    assert accepted["status"] == "queued"
    return accepted


def wait_job(server: Server, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
    """Poll GET /jobs/{id} until the job is finished."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = server.client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s:\n{server.output()}")
        time.sleep(0.1)


def wait_running(server: Server, job_id: str, timeout: float = 60.0) -> None:
    """Poll until the job is running and has made progress."""
    deadline = time.monotonic() + timeout
    while True:
        job = server.client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] == "running" and job["progress"]["step"] > 0:
            return
        assert job["status"] in ("queued", "running"), job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not running after {timeout} s:\n{server.output()}")
        time.sleep(0.05)


def read_sse(server: Server, path: str) -> list[dict[str, Any]]:
    """Follow a Server-Sent Events stream to its end, parsing the wire format (event:, data:, blank line)."""
    events: list[dict[str, Any]] = []
    timeout = httpx.Timeout(30.0, read=60.0)  # the server sends a keep-alive comment every 15 s when idle
    with server.client.stream("GET", path, timeout=timeout) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        name: str | None = None
        data: list[str] = []
        for line in r.iter_lines():
            if line == "":
                if data:
                    event = json.loads("\n".join(data))
                    assert event["type"] == name, (name, event)
                    events.append(event)
                name, data = None, []
            elif line.startswith(":") or line.startswith("retry:"):
                continue
            elif line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].strip())
    return events


def fetch_png(server: Server, url: str) -> tuple[bytes, Image.Image]:
    r = server.client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    image.load()
    assert image.format == "PNG"
    return r.content, image


def test_jobs_run_stream_and_survive_restarts(launcher: Launcher, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = echo_env(data, echo_step_delay=0.05)

    # -- 1: a server with one in-process worker runs two jobs ----------------------------------------------------
    server = launcher.server(env, tmp_path)
    first = submit(server, prompt="a lighthouse at dusk", steps=30, seed=3)
    batch = submit(server, prompt="a red fox in the snow", steps=30, seed=7, n=2)
    assert batch["urls"]["events"] == f"/api/v1/jobs/{batch['id']}/events"

    events = read_sse(server, batch["urls"]["events"])
    types = [e["type"] for e in events]
    assert types[-1] == "succeeded", types
    assert all(t in ("queued", "started", "progress", "preview", "output", "succeeded") for t in types), types
    if types[0] != "succeeded":
        # The stream opened before the job ended, so it must have carried its progress live.
        steps = [e["step"] for e in events if e["type"] == "progress"]
        assert steps and steps == sorted(steps) and steps[-1] <= 30, types
        assert all(e["total"] == 30 for e in events if e["type"] == "progress")
    final = events[-1]
    assert final["job"]["id"] == batch["id"] and final["job"]["status"] == "succeeded"
    assert len(final["image_ids"]) == 2

    done_first = wait_job(server, first["id"])
    assert done_first["status"] == "succeeded" and [o["seed"] for o in done_first["outputs"]] == [3]
    done_batch = server.client.get(batch["urls"]["get"]).json()
    assert done_batch["status"] == "succeeded"
    assert done_batch["attempts"] == 1
    assert done_batch["progress"] == {"step": 30, "total": 30, "image": 0, "images": 2}  # the echo engine: one call
    assert [o["seed"] for o in done_batch["outputs"]] == [7, 8]
    assert [o["image_id"] for o in done_batch["outputs"]] == final["image_ids"]

    originals: dict[str, bytes] = {}
    for job in (done_first, done_batch):
        for output in job["outputs"]:
            png, image = fetch_png(server, output["url"])
            assert image.size == (64, 64)
            parameters = image.info["parameters"]
            assert f"Seed: {output['seed']}" in parameters and "Size: 64x64" in parameters
            assert "Model: echo" in parameters
            originals[output["image_id"]] = png
            thumb = server.client.get(output["thumbnail_url"])
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
            assert Image.open(io.BytesIO(thumb.content)).format == "WEBP"
    assert len(set(originals.values())) == 3  # three different pictures

    ready = server.client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    docs = server.client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    paths = server.client.get("/openapi.json").json()["paths"]
    assert "/api/v1/generations" in paths and "post" in paths["/api/v1/generations"]
    assert "/api/v1/jobs/{job_id}/events" in paths

    # Stopped mid-job: the in-process worker hands the job back instead of losing it or charging an attempt.
    interrupted = submit(server, prompt="interrupted by a restart", steps=100, seed=21)  # 5 s of work
    wait_running(server, interrupted["id"])
    assert server.stop() in STOPPED, server.output()

    # -- 2: restarted with no workers, everything is still there; a new job waits in the queue ----------------------
    server = launcher.server(env, tmp_path, "--workers", "0")
    jobs = {j["id"]: j for j in server.client.get("/api/v1/jobs").json()["items"]}
    assert set(jobs) == {first["id"], batch["id"], interrupted["id"]}
    assert jobs[first["id"]]["status"] == jobs[batch["id"]]["status"] == "succeeded"
    assert jobs[batch["id"]]["outputs"] == done_batch["outputs"]
    assert jobs[interrupted["id"]]["status"] == "queued" and jobs[interrupted["id"]]["attempts"] == 0
    images = server.client.get("/api/v1/images").json()["items"]
    assert {i["id"] for i in images} == set(originals)
    for image_id, png in originals.items():
        assert fetch_png(server, f"/api/v1/images/{image_id}/file")[0] == png

    not_ready = server.client.get("/ready")  # no worker is alive to run jobs
    assert not_ready.status_code == 503 and not_ready.json()["checks"]["workers"]["ok"] is False

    pending = submit(server, prompt="a queued job", steps=2, seed=11)
    assert server.client.get(pending["urls"]["get"]).json()["status"] == "queued"
    assert server.stop() in STOPPED, server.output()

    # -- 3: restarted with a worker, the jobs left queued while the server was down run --------------------------------
    server = launcher.server(echo_env(data, echo_step_delay=0.01), tmp_path)
    new_images: set[str] = set()
    for job_id, seed in ((pending["id"], 11), (interrupted["id"], 21)):
        resumed = wait_job(server, job_id)
        assert resumed["status"] == "succeeded", resumed
        assert resumed["attempts"] == 1 and [o["seed"] for o in resumed["outputs"]] == [seed]
        fetch_png(server, resumed["outputs"][0]["url"])
        new_images.add(resumed["outputs"][0]["image_id"])
    images = server.client.get("/api/v1/images").json()["items"]
    assert {i["id"] for i in images} == {*originals, *new_images}
    assert server.client.get("/ready").status_code == 200
    assert server.stop() in STOPPED, server.output()


def test_fresh_install_without_a_model_serves_and_generates_with_the_demo_model(
    launcher: Launcher, tmp_path: Path
) -> None:
    env = studiolo_env(tmp_path / "data", enable_echo_engine=False, default_model="stabilityai/sd-turbo")
    server = launcher.server(env, tmp_path)

    health = server.client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    models = server.client.get("/api/v1/models")
    assert models.status_code == 200
    # Nothing installed: the built-in demo model (issue 6) stands in for the missing default, labelled as such.
    listed = models.json()
    assert listed["default"] == "studiolo-demo"
    assert [(m["id"], m["demo"], m["is_default"]) for m in listed["items"]] == [("studiolo-demo", True, True)]
    images = server.client.get("/api/v1/images")
    assert images.status_code == 200 and images.json()["items"] == []

    # Asking for the missing model by name is still refused, with install advice, before anything is queued.
    r = server.client.post(GEN, json={"prompt": "a lighthouse at dusk", "model": "stabilityai/sd-turbo"})
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["error"]["code"] == "model_unavailable"
    assert "studiolo models import" in body["error"]["message"]
    assert "stabilityai/sd-turbo" in body["error"]["message"]
    assert server.client.get("/api/v1/jobs").json()["items"] == []  # nothing was queued

    # Naming no model makes a picture with the demo model.
    job = wait_job(server, submit(server, prompt="a lighthouse by the sea at dusk, pixel art", steps=4)["id"])
    assert job["status"] == "succeeded", job
    assert job["model"] == "studiolo-demo" and len(job["outputs"]) == 1
    assert server.stop() in STOPPED, server.output()


def test_sigterm_stops_the_server_while_a_client_follows_a_job(launcher: Launcher, tmp_path: Path) -> None:
    server = launcher.server(echo_env(tmp_path / "data"), tmp_path, "--workers", "0")
    job = submit(server, prompt="never runs: no workers", steps=2)
    opened = threading.Event()

    def follow() -> None:
        try:
            with httpx.stream("GET", server.url + job["urls"]["events"], timeout=httpx.Timeout(60.0)) as r:
                opened.set()
                for _ in r.iter_lines():
                    pass
        except httpx.HTTPError:
            pass  # the server going away ends the stream; that is the point

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert opened.wait(30)
    # 10 s: far longer than handing back a job takes, short enough that a supervisor need not SIGKILL.
    assert server.stop(timeout=10) in STOPPED, server.output()
    follower.join(10)
