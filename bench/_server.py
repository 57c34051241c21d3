"""Start a real `studiolo serve` subprocess for benchmarks and measure it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def studiolo_server(data_dir: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `python -m studiolo serve` on a free port with STUDIOLO_* settings; yields (base_url, process)."""
    port = free_port()
    full_env = {
        **os.environ,
        "STUDIOLO_DATA_DIR": str(data_dir),
        "STUDIOLO_LOG_LEVEL": "warning",
        **{f"STUDIOLO_{k.upper()}": v for k, v in env.items()},
    }
    # stderr to a file, not a pipe: nobody reads the pipe during a run, and once its buffer is full every thread of
    # the server that logs (or prints mail, with the console mailer) waits forever.
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [sys.executable, "-m", "studiolo", "serve", "--port", str(port)],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server exited: {log.read().decode(errors='replace')}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        yield base, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def ok(response: httpx.Response) -> Any:
    """The JSON body of a 2xx response; otherwise an error that shows the status and the error body.

    A bench script that indexed ``.json()["urls"]`` of a 401 died with ``KeyError: 'urls'`` (issue 13)."""
    if not response.is_success:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    return response.json()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


ADMIN_EMAIL = "bench@example.com"
ADMIN_PASSWORD = "bench password 4 studiolo"


def sign_in(base: str, data_dir: Path, **env: str) -> dict[str, str]:
    """An Authorization header for the install's administrator (created with the CLI on first use, which
    adopts the local owner: rows inserted for LOCAL_USER_ID belong to this admin)."""
    login = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    r = httpx.post(f"{base}/api/v1/auth/login", json=login, timeout=30)
    if r.status_code == 401:
        subprocess.run(
            [sys.executable, "-m", "studiolo", "users", "create-admin", "--email", ADMIN_EMAIL],
            env={
                **os.environ,
                "STUDIOLO_DATA_DIR": str(data_dir),
                "STUDIOLO_ADMIN_PASSWORD": ADMIN_PASSWORD,
                **{f"STUDIOLO_{k.upper()}": v for k, v in env.items()},
            },
            check=True,
            capture_output=True,
        )
        r = httpx.post(f"{base}/api/v1/auth/login", json=login, timeout=30)
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}
