"""``studiolo serve`` starting and stopping: a busy port, and Ctrl-C while a client follows a job's events."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Launcher, echo_env, flat, run_cli

pytestmark = pytest.mark.slow


def test_a_busy_port_fails_at_once_with_a_hint(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--host", "127.0.0.1", "--port", str(port), env=echo_env(data), cwd=tmp_path)
    message = flat(result.stderr)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error port_in_use:" in message, message
    assert f"Port {port} on 127.0.0.1 is already in use" in message
    assert f"studiolo serve --port {port + 1}" in message
    assert "Traceback" not in result.stderr and "Errno" not in result.stderr
    # Checked before any start-up work: no database was created or migrated, no worker started.
    assert not (data / "studiolo.db").exists()
    assert "Application startup" not in result.stderr and "alembic" not in result.stderr


def test_ctrl_c_ends_event_streams(launcher: Launcher, tmp_path: Path) -> None:
    env = echo_env(tmp_path / "data", log_level="info")
    server = launcher.server(env, tmp_path, "--workers", "0")  # no worker: the job stays queued
    r = server.client.post("/api/v1/generations", json={"prompt": "waits in the queue", "size": "64x64"})
    assert r.status_code == 202, r.text
    events_url = server.url + r.json()["urls"]["events"]
    headers = {"Authorization": server.client.headers["Authorization"]}
    events: list[dict[str, Any]] = []
    ended: list[str] = []
    opened = threading.Event()

    def follow() -> None:
        try:
            with httpx.stream("GET", events_url, headers=headers, timeout=httpx.Timeout(60.0)) as stream:
                assert stream.status_code == 200
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        events.append(json.loads(line.removeprefix("data:")))
                        opened.set()
            ended.append("complete")
        except httpx.HTTPError as exc:
            ended.append(repr(exc))  # cut off: the server did not end the stream itself

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert opened.wait(30), server.output()
    assert [e["type"] for e in events] == ["queued"]

    start = time.monotonic()
    rc = server.stop(signal.SIGINT, timeout=30)
    elapsed = time.monotonic() - start
    follower.join(10)
    print(f"serve exited {elapsed:.2f} s after SIGINT with an open event stream")

    assert rc == 0, server.output()
    # The stream ended by itself, with a last event saying the server is going away (the job goes on).
    assert ended == ["complete"], (ended, events)
    assert events[-1]["type"] == "shutdown", events
    assert "reconnect" in events[-1]["message"]
    log = server.output()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    assert "timeout graceful shutdown exceeded" not in log, log
    assert "Application shutdown complete" in log, log
