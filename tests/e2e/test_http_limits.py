"""A real ``studiolo serve`` facing raw sockets: oversized and endless headers, slowloris heads and bodies, idle
connections (server.py's GuardedHttpProtocol). Small limits through the settings keep the test short."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Launcher, Server, echo_env, free_port

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5
KEEP_ALIVE = 1
MAX_HEADER_BYTES = 8192
MAX_HEADERS = 30
# Far longer than any limit above: a connection still open after this was not closed by a limit.
PATIENCE = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("limits")
    env = echo_env(
        tmp / "data",
        http_header_timeout_seconds=HEADER_TIMEOUT,
        http_body_timeout_seconds=BODY_TIMEOUT,
        http_body_min_bytes_per_second=1000,
        http_keep_alive_seconds=KEEP_ALIVE,
        http_max_header_bytes=MAX_HEADER_BYTES,
        http_max_headers=MAX_HEADERS,
        inline_workers=0,
    )
    launcher = Launcher(tmp / "logs")
    port = free_port()
    popen, log = launcher._popen(["serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp)
    started = Server(["serve"], popen, log, port=port)
    launcher.procs.append(started)
    try:
        started.wait_healthy()
        yield started
    finally:
        launcher.close()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            raise AssertionError(f"still open after {PATIENCE} s; received {received[:200]!r}") from None
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - start


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length (headers and body), nothing after it."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(next(line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))[15:])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def send_all(sock: socket.socket, data: bytes) -> None:
    """Send what the server takes; it may close the connection half-way (that is a refusal too)."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n"


def login_head(length: int) -> bytes:
    """Sign-in reads its body before anything else, so the application is waiting on the body that is sent."""
    return (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


def test_a_normal_request_passes_and_an_idle_keep_alive_connection_is_closed(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(HEALTH + b"X-Filler: " + b"a" * (MAX_HEADER_BYTES // 2) + b"\r\n\r\n")
        first = read_response(sock)
        assert status(first) == 200, first
        rest, waited = read_until_closed(sock)  # keep-alive: nothing more is sent, the server closes
        assert rest == b""
        print(f"idle keep-alive connection closed after {waited:.1f} s (limit {KEEP_ALIVE} s)")


def test_a_request_answered_before_its_body_then_idle_is_closed(server: Server) -> None:
    # No credentials: refused before the body is read. The body then arrives, and the connection stays idle.
    head = (
        b"POST /api/v1/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(head)
        answer = read_response(sock)
        assert status(answer) == 401, answer
        sock.sendall(b'{"prompt": "a fox"} ')
        rest, waited = read_until_closed(sock)
    assert rest == b""
    print(f"connection idle after an early answer closed after {waited:.1f} s (limit {KEEP_ALIVE} s)")


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with connect(server) as sock:
        received, waited = read_until_closed(sock)
    assert received == b""
    print(f"silent connection closed after {waited:.1f} s (limit {HEADER_TIMEOUT} s)")


@pytest.mark.parametrize("part", ["request line", "headers"])
def test_a_trickled_head_is_closed_after_the_header_timeout(server: Server, part: str) -> None:
    request_line = b"GET /health?q=" + b"q" * 300 + b" HTTP/1.1\r\n"
    head = request_line + b"".join(b"X-Slow-%d: %s\r\n" % (i, b"v" * 20) for i in range(20)) + b"\r\n"
    # "headers": the request line arrives at once, then the headers a few bytes at a time
    head_start = len(request_line) if part == "headers" else 0
    with connect(server) as sock:
        sock.sendall(head[:head_start])
        sock.settimeout(0.2)
        received = b""
        start = time.monotonic()
        for i in range(head_start, len(head), 3):  # 3 bytes every 0.2 s: the head would need ~30 s
            send_all(sock, head[i : i + 3])
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            received += chunk
            if not chunk:
                break
            if time.monotonic() - start > PATIENCE:
                break
        else:
            raise AssertionError("the whole trickled head was accepted")
        waited = time.monotonic() - start
    assert waited < PATIENCE, f"still open after {waited:.1f} s"
    assert status(received) == 408, received
    print(f"trickled {part} closed after {waited:.1f} s (limit {HEADER_TIMEOUT} s)")


def test_a_trickled_body_is_closed(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(login_head(100_000) + b'{"email": "')
        sock.settimeout(0.2)
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < PATIENCE:
            send_all(sock, b"x" * 10)  # 50 bytes a second, under the 1000 required
            try:
                if sock.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
                break
        waited = time.monotonic() - start
    assert closed, f"still open after {waited:.1f} s"
    print(f"trickled body closed after {waited:.1f} s (pause limit and rate window {BODY_TIMEOUT} s)")


def test_a_paused_body_is_closed(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(login_head(100) + b'{"email": ')
        received, waited = read_until_closed(sock)
    assert received == b""  # the application was still waiting for the body
    print(f"paused body closed after {waited:.1f} s (limit {BODY_TIMEOUT} s)")


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("one 8 MiB header", HEALTH + b"X-Big: " + b"a" * (8 * 2**20) + b"\r\n\r\n", 431),
        ("headers over the byte limit", HEALTH + b"X-A: " + b"a" * MAX_HEADER_BYTES + b"\r\nX-B: b\r\n\r\n", 431),
        ("10,000 headers", HEALTH + b"".join(b"X-%d: v\r\n" % i for i in range(10_000)) + b"\r\n", 431),
        ("one header too many", HEALTH + b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS)) + b"\r\n", 431),
        ("a long request line", b"GET /health?" + b"q" * (2 * MAX_HEADER_BYTES) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ],
)
def test_oversized_heads_are_refused(server: Server, name: str, head: bytes, expected: int) -> None:
    with connect(server) as sock:
        send_all(sock, head)
        received, _ = read_until_closed(sock)
    # The answer can be lost: the server closes with the rest of the head unread, which resets the connection.
    # Either way the head was refused, not served.
    if received:
        assert status(received) == expected, (name, received[:300])
        assert b"connection: close" in received.lower()
    assert server.client.get("/health").status_code == 200


def test_the_limits_leave_the_server_working(server: Server) -> None:
    # Exactly MAX_HEADERS headers (Host, the X- ones, Connection) still pass: the cap is not off by one.
    extra = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS - 2))
    with connect(server) as sock:
        sock.sendall(HEALTH + extra + b"Connection: close\r\n\r\n")
        received, _ = read_until_closed(sock)
    assert status(received) == 200, received[:300]
    assert server.client.get("/health").status_code == 200
    assert "Traceback" not in server.output(), server.output()


def test_uvicorn_run_by_hand_can_use_the_same_limits(tmp_path: Path) -> None:
    """docs/deployment.md: uvicorn --factory studiolo.app:create_app --http studiolo.server:EnvironmentHttpProtocol"""
    port = free_port()
    env = echo_env(tmp_path / "data", inline_workers=0, http_max_headers=MAX_HEADERS, http_header_timeout_seconds=1)
    log = tmp_path / "uvicorn.log"
    args = ["--factory", "studiolo.app:create_app", "--http", "studiolo.server:EnvironmentHttpProtocol"]
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *args, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(["uvicorn"], popen, log, port=port)
    try:
        server.wait_healthy()
        with connect(server) as sock:
            send_all(sock, HEALTH + b"".join(b"X-%d: v\r\n" % i for i in range(10_000)) + b"\r\n")
            received, _ = read_until_closed(sock)
        assert not received or status(received) == 431, received[:300]
        with connect(server) as sock:
            assert read_until_closed(sock)[0] == b""  # a silent connection is closed after the header timeout
    finally:
        server.stop()
