"""The HTTP server of ``studiolo serve``: uvicorn, made safe to face clients directly.

- The port is bound, and listening, before any start-up work (``bind``): a second server on a busy port says
  so at once, instead of migrating the database and starting workers before uvicorn finds the port taken.
- Read limits (``GuardedHttpProtocol``). uvicorn's default HTTP protocol (httptools, whenever it is
  installed, as ``uvicorn[standard]`` does) caps neither the size nor the count of request headers, and has no
  read timeout: a connection that never sends a request, trickles its request line or headers, or trickles its
  body stays open for good (a handful of such "slowloris" clients hold every connection). uvicorn's
  ``h11_max_incomplete_event_size`` only applies to its h11 protocol, which does not run when httptools is there.
- Shutdown ends job event streams with a last event first (``ShutdownNotice``), so Ctrl-C neither waits out the
  grace period nor cancels streams with tracebacks.

Limits and their settings: docs/deployment.md, "Timeouts and limits"; tests: tests/e2e/test_http_limits.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from studiolo.errors import StudioloError
from studiolo.lifecycle import ShutdownNotice
from studiolo.settings import Settings

log = logging.getLogger(__name__)

BACKLOG = 2048  # uvicorn's default


@dataclass(frozen=True)
class HttpLimits:
    """How long and how much a client may take to send a request (settings STUDIOLO_HTTP_*)."""

    header_timeout: float  # seconds from connecting (or a request's first byte) to the end of its headers
    body_timeout: float  # longest pause within a request body, and the time before its rate is checked
    body_min_rate: int  # bytes per second a body must average once body_timeout has passed
    max_header_bytes: int  # request line plus headers
    max_headers: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            header_timeout=settings.http_header_timeout_seconds,
            body_timeout=settings.http_body_timeout_seconds,
            body_min_rate=settings.http_body_min_bytes_per_second,
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
        )


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; ``data_received`` answers with the status."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size and count cap, a header timeout and a body rate.

    - The head (request line and headers) must arrive within ``header_timeout`` of the connection being made
      (a connection that sends nothing is closed then) or of the request's first byte; a head that stops half-way
      is answered with 408, and the connection closed.
    - It may hold ``max_header_bytes`` and ``max_headers`` at most: 431 (414 for the request line alone).
      Complete headers are measured exactly; a single endless header is caught as soon as the bytes received for
      the unfinished head pass the limit (one socket read late at most), so it never fills memory.
    - A body may pause ``body_timeout`` seconds at most, and must average ``body_min_rate`` bytes per second once
      it has taken longer than that; else the connection is closed (the application sees a disconnect). Time in
      which the server itself stopped reading (the application not taking the body yet) does not count.
    - Between requests, uvicorn's own ``timeout_keep_alive`` applies.
    """

    limits: ClassVar[HttpLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._messages_begun = 0
        self._reading_head = False  # between a request's first byte and the end of its headers
        self._head_bytes = 0  # request line and complete headers, measured by the parser's callbacks
        self._head_streamed = 0  # socket reads that fell wholly inside the unfinished head
        self._header_count = 0
        self._refusal: tuple[int, str] | None = None
        self._reading_body = False  # between the end of the headers and the end of the request
        self._body_started = 0.0
        self._body_last = 0.0
        self._body_checked = 0.0
        self._body_received = 0

    # -- connection ----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own data_received, except that a refused head gets its own status instead of 400.
        begun = self._messages_begun
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is None:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            else:
                self._answer_and_close(*self._refusal)
            return
        if self._reading_head and self._messages_begun == begun:
            # The whole read belongs to a head that is still not finished: one endless header, say.
            self._head_streamed += len(data)
            if self._head_streamed > self.limits.max_header_bytes:
                self._answer_and_close(431, f"Request headers are larger than {self.limits.max_header_bytes} bytes.")
                return
        if self._reading_body and self._body_timer is None:
            self._body_timer = self.loop.call_later(self._body_tick, self._check_body)

    # -- parser callbacks ----------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._messages_begun += 1
        self._reading_head = True
        self._head_bytes = self._head_streamed = self._header_count = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse(414, f"The request line is longer than {self.limits.max_header_bytes} bytes.")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse(431, f"A request may carry at most {self.limits.max_headers} headers.")
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"Request headers are larger than {self.limits.max_header_bytes} bytes.")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        now = self.loop.time()
        self._reading_body = True
        self._body_started = self._body_last = self._body_checked = now
        self._body_received = 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_received += len(body)
        self._body_last = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()
        if self.cycle.response_complete and self.timeout_keep_alive_task is None and not self.pipeline:
            # Answered before its body was in (a 401, say): uvicorn armed the keep-alive timer then, and the body's
            # bytes cancelled it; the connection is idle from now on and must be closed like any other.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    # -- limits --------------------------------------------------------------------------------------------
    def _refuse(self, status: int, message: str) -> None:
        self._refusal = (status, message)
        raise _Refused(message)

    def _answer_and_close(self, status: int, message: str) -> None:
        self.logger.info("Refused a request from %s: %d %s", self._client_name, status, message)
        body = message.encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(
            b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    @property
    def _client_name(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head waits behind a response still being sent: the delay is ours, not the client's.
            self._arm_head_timer()
            return
        if self._reading_head:
            self._answer_and_close(408, f"The request headers did not arrive within {self.limits.header_timeout:g} s.")
        else:
            self.transport.close()  # connected and never sent a byte

    @property
    def _body_tick(self) -> float:
        return min(1.0, self.limits.body_timeout / 4)

    def _check_body(self) -> None:
        self._body_timer = None
        if not self._reading_body or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:
            # The application has not taken what arrived yet, so the server is not reading: that time is ours.
            paused = now - self._body_checked
            self._body_started += paused
            self._body_last += paused
        else:
            limits = self.limits
            stalled = now - self._body_last >= limits.body_timeout
            elapsed = now - self._body_started
            slow = elapsed >= limits.body_timeout and self._body_received < limits.body_min_rate * elapsed
            if stalled or slow:
                why = "paused" if stalled else "too slow"
                self.logger.info("Closed the connection of %s: request body %s", self._client_name, why)
                self.transport.close()
                return
        self._body_checked = now
        self._body_timer = self.loop.call_later(self._body_tick, self._check_body)


class EnvironmentHttpProtocol(GuardedHttpProtocol):
    """The same limits for uvicorn run by hand (``uvicorn --http studiolo.server:EnvironmentHttpProtocol``, which
    can only name a class): read from the STUDIOLO_HTTP_* environment variables when the first connection comes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        if "limits" not in cls.__dict__:
            cls.limits = HttpLimits.from_settings(Settings())
        super().__init__(*args, **kwargs)


def protocol_class(limits: HttpLimits) -> type[GuardedHttpProtocol]:
    """A protocol class for uvicorn (which builds one per connection from the class) with these limits."""
    return type("StudioloHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, or a StudioloError saying why not (port taken, ...).

    Listening at once, not only binding: on Linux two sockets with SO_REUSEADDR may both bind a port nobody
    listens on yet, so only ``listen`` settles which of two servers started together gets it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise StudioloError(f"Cannot listen on {host!r}: {exc.strerror}.", code="invalid_host") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once, despite TIME_WAIT
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise _bind_error(host, port, exc) from exc
    return sock


def _bind_error(host: str, port: int, exc: OSError) -> StudioloError:
    if exc.errno == errno.EADDRINUSE:
        suggestion = port + 1 if port < 65535 else 8000
        return StudioloError(
            f"Port {port} on {host} is already in use (is another `studiolo serve` running?). Stop that server, "
            f"or choose another port: studiolo serve --port {suggestion}",
            code="port_in_use",
        )
    if exc.errno == errno.EACCES:
        return StudioloError(
            f"Not allowed to listen on port {port} (ports below 1024 need privileges). Choose another port with "
            "--port, e.g. --port 8000.",
            code="port_not_allowed",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return StudioloError(
            f"{host} is not an address of this machine. Choose one with --host (127.0.0.1, or 0.0.0.0 for all).",
            code="invalid_host",
        )
    return StudioloError(f"Cannot listen on {host}:{port}: {exc.strerror}.", code="listen_failed")


class _Server(uvicorn.Server):
    """uvicorn's server, telling long-lived responses first when it shuts down."""

    def __init__(self, config: uvicorn.Config, notice: ShutdownNotice) -> None:
        super().__init__(config)
        self._notice = notice

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Before uvicorn waits for open connections: streams send their last event and end, so the wait is short
        # (tests/e2e/test_serve_lifecycle.py::test_ctrl_c_ends_event_streams).
        self._notice.begin()
        await super().shutdown(sockets=sockets)


def run(app: FastAPI, settings: Settings, listener: socket.socket) -> None:
    """Serve ``app`` on ``listener`` (from ``bind``) until SIGINT or SIGTERM."""
    config = uvicorn.Config(
        app,
        http=protocol_class(HttpLimits.from_settings(settings)),
        log_level=settings.log_level,
        log_config=None,  # uvicorn's own lines (access log included) go through configure_logging's handler
        timeout_keep_alive=settings.http_keep_alive_seconds,
        # A bounded grace period: a response that does not end by itself (one not told by the notice) would
        # otherwise hold shutdown open (tests/e2e/test_server.py::test_sigterm_stops_the_server_while_a_client_...).
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    notice: ShutdownNotice = app.state.shutdown_notice
    # uvicorn re-raises the SIGINT it shut down for; the shutdown was clean, so this is no error (as uvicorn.run).
    with contextlib.suppress(KeyboardInterrupt):
        _Server(config, notice).run(sockets=[listener])
