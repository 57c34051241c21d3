"""A minimal keep-alive HTTP/1.1 load generator on asyncio streams.

httpx spends ~3 ms of CPU per request, more than the server under test; on a 2-core machine the client
would be measured instead of Studiolo. This one parses just enough HTTP (status line, Content-Length)
to cost ~0.1 ms per request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, extra: str = ""):
        self.reader = reader
        self.writer = writer
        self.host = host
        self.extra = extra  # pre-rendered extra header lines (e.g. Authorization)

    @classmethod
    async def open(cls, base: str, headers: dict[str, str] | None = None) -> Connection:
        u = urlsplit(base)
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        return cls(reader, writer, f"{u.hostname}:{u.port}", extra)

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.extra}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        status_line = await self.reader.readline()
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return status, data

    def close(self) -> None:
        self.writer.close()


async def run(
    base: str | list[str],
    requests: Iterable[tuple[str, str, Any]],
    concurrency: int,
    headers: dict[str, str] | None = None,
) -> tuple[float, list[float], list[tuple[int, bytes]]]:
    """Send ``(method, path, json_body_or_None)`` requests over ``concurrency`` connections (spread over the servers
    of ``base`` when it lists several), each sending its next request when the last one was answered.

    Returns (elapsed seconds, per-request latencies, responses in completion order)."""
    bases = [base] if isinstance(base, str) else base
    it = iter(requests)
    latencies: list[float] = []
    responses: list[tuple[int, bytes]] = []

    async def worker(n: int) -> None:
        conn = await Connection.open(bases[n % len(bases)], headers)
        try:
            for method, path, body in it:
                payload = json.dumps(body).encode() if body is not None else None
                t = time.perf_counter()
                status, data = await conn.request(method, path, payload)
                latencies.append(time.perf_counter() - t)
                responses.append((status, data))
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return time.perf_counter() - start, latencies, responses


async def run_paced(
    bases: list[str],
    request: tuple[str, str, Any],
    rate: float,
    seconds: float,
    headers: dict[str, str] | None = None,
    connections: int = 32,
) -> tuple[list[float], list[tuple[int, bytes]]]:
    """Send ``request`` at a fixed ``rate`` per second for ``seconds`` (an open loop: arrivals do not wait for
    answers), over up to ``connections`` connections. A latency counts from the request's scheduled time, so a
    request that waited for a free connection is not measured as fast (no coordinated omission)."""
    method, path, body = request
    payload = json.dumps(body).encode() if body is not None else None
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for n in range(connections):
        free.put_nowait(await Connection.open(bases[n % len(bases)], headers))
    latencies: list[float] = []
    responses: list[tuple[int, bytes]] = []

    async def one(scheduled: float) -> None:
        conn = await free.get()
        try:
            status, data = await conn.request(method, path, payload)
        finally:
            free.put_nowait(conn)
        latencies.append(time.perf_counter() - scheduled)
        responses.append((status, data))

    start = time.perf_counter()
    tasks = []
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    while not free.empty():
        free.get_nowait().close()
    return latencies, responses
