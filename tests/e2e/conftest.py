"""End-to-end fixtures: the real ``studiolo`` command run as subprocesses on a temporary data directory.

Every process started here is killed at teardown, whatever the test did; ports come from the OS (bind to
port 0); nothing touches the user's home (data, hub cache and HOME all point into ``tmp_path``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from studiolo.services import Services, build_services
from studiolo.settings import Settings

# Generous: a cold start imports FastAPI, SQLAlchemy and runs migrations on a loaded 2-core machine.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct horse battery staple"


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def studiolo_env(data_dir: Path, **overrides: Any) -> dict[str, str]:
    """The environment for a ``studiolo`` subprocess: this one minus any STUDIOLO_* setting, plus ours.

    ``overrides`` use setting names (``enable_echo_engine=True`` becomes STUDIOLO_ENABLE_ECHO_ENGINE=true).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIOLO_", "HF_"))}
    home = data_dir.parent / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "HOME": str(home),
            "HF_HOME": str(home / "hf"),
            "STUDIOLO_DATA_DIR": str(data_dir),
            "STUDIOLO_ENV": "test",
            "STUDIOLO_LOG_LEVEL": "warning",
            "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1",
            # cheap password hashing in tests (bench/auth.py measures the real cost)
            "STUDIOLO_ARGON2_TIME_COST": "1",
            "STUDIOLO_ARGON2_MEMORY_KIB": "1024",
        }
    )
    for key, value in overrides.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        env[f"STUDIOLO_{key.upper()}"] = text
    return env


def echo_env(data_dir: Path, **overrides: Any) -> dict[str, str]:
    """A model-free install: the echo engine is the default model."""
    values: dict[str, Any] = {"enable_echo_engine": True, "default_model": "echo"}
    values.update(overrides)
    return studiolo_env(data_dir, **values)


def echo_services(data_dir: Path, **overrides: Any) -> Services:
    """In-process services (the API's side) of a model-free install with no worker threads of its own: the
    subprocesses under test run the jobs."""
    settings = Settings(
        env="test", data_dir=data_dir, enable_echo_engine=True, default_model="echo", inline_workers=0, **overrides
    )
    return build_services(settings)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


@dataclass
class Proc:
    """A running ``python -m studiolo ...`` with its output going to a log file (a pipe could fill and block)."""

    args: list[str]
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return _tail(self.log)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and wait for the exit code; SIGKILL if it does not exit within ``timeout``."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
                message = f"{self.args} did not exit {timeout} s after signal {sig}:\n{self.output()}"
                raise AssertionError(message) from None
        return int(self.popen.returncode)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


@dataclass
class Server(Proc):
    port: int = 0
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(30.0))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise AssertionError(f"server exited with {self.popen.returncode} before answering:\n{self.output()}")
            try:
                if self.client.get("/health", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not healthy after {timeout} s:\n{self.output()}")
            time.sleep(0.1)

    def sign_in(self, env: dict[str, str], cwd: Path) -> None:
        """Sign the client in as the install's administrator, creating it with the CLI on a fresh data dir
        (the way a person sets up a new install)."""
        login = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        r = self.client.post("/api/v1/auth/login", json=login)
        if r.status_code == 401:
            created = run_cli(
                "users",
                "create-admin",
                "--email",
                ADMIN_EMAIL,
                env=env | {"STUDIOLO_ADMIN_PASSWORD": ADMIN_PASSWORD},
                cwd=cwd,
            )
            assert created.returncode == 0, created.stdout + created.stderr
            r = self.client.post("/api/v1/auth/login", json=login)
        assert r.status_code == 200, r.text
        self.client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        self.client.close()
        return super().stop(sig, timeout)


class Launcher:
    """Starts studiolo subprocesses and guarantees they are all gone at teardown."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def _popen(self, args: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[bytes], Path]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{len(self.procs):02d}-{args[0]}.log"
        with log.open("wb") as fh:
            popen = subprocess.Popen(
                [sys.executable, "-m", "studiolo", *args],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        return popen, log

    def start(self, args: list[str], env: dict[str, str], cwd: Path) -> Proc:
        popen, log = self._popen(args, env, cwd)
        proc = Proc(args, popen, log)
        self.procs.append(proc)
        return proc

    def server(self, env: dict[str, str], cwd: Path, *extra: str, port: int | None = None) -> Server:
        """``studiolo serve`` on a free port, returned once /health answers."""
        port = port or free_port()
        args = ["serve", "--host", "127.0.0.1", "--port", str(port), *extra]
        popen, log = self._popen(args, env, cwd)
        server = Server(args, popen, log, port=port)
        self.procs.append(server)
        server.wait_healthy()
        server.sign_in(env, cwd)
        return server

    def close(self) -> None:
        for proc in self.procs:
            if isinstance(proc, Server):
                proc.client.close()
            proc.kill()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launched = Launcher(tmp_path / "logs")
    try:
        yield launched
    finally:
        launched.close()


def run_cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m studiolo ARGS`` to completion (``subprocess.run`` kills it on timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "studiolo", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def flat(text: str) -> str:
    """Collapse whitespace: Rich wraps long messages at the terminal width, even mid-phrase."""
    return " ".join(text.split())
