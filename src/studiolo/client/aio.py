"""The asyncio client, on httpx.AsyncClient: the same methods as Studiolo (sync.py), awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from studiolo.client import _core
from studiolo.client._core import API, Call, EventFollower, ImageInput, M, RetryPolicy
from studiolo.client.errors import WaitTimeout
from studiolo.client.models import Image, ImagePage, Job, JobAccepted, JobEvent, JobPage, ModelList, StyleCatalog

EventHandler = Callable[[JobEvent], Awaitable[None] | None]


class AsyncStudiolo:
    """A Studiolo server's native API (/api/v1). ``api_key``: an ``ais_…`` key (Account → API keys)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        poll_interval: float = 0.5,
    ):
        self.retry = RetryPolicy(max_retries=max_retries)
        self.poll_interval = poll_interval
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=_core.auth_headers(api_key),
            timeout=timeout,
            transport=transport,
            follow_redirects=True,  # an S3 store answers image files with a 307 to a presigned URL
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncStudiolo:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(self, call: Call) -> httpx.Response:
        attempt = 0
        while True:
            delay: float | None
            try:
                response = await self._http.request(call.method, call.path, **call.request_kwargs())
            except httpx.TransportError as exc:
                delay = self.retry.after_error(call, attempt, exc)
            else:
                delay = self.retry.after_response(call, attempt, response)
                if delay is None:
                    return response
            attempt += 1
            await asyncio.sleep(delay)

    async def _get(self, path: str, model: type[M], params: dict[str, Any] | None = None) -> M:
        return _core.parse(await self._send(Call("GET", path, params=params)), model)

    async def generate(
        self,
        prompt: str,
        *,
        init_image: ImageInput | None = None,
        mask_image: ImageInput | None = None,
        kind: str | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> JobAccepted:
        """Queue a job (GenerationParams as keyword arguments: size, steps, seed, n, model, style, ...); an
        init_image makes it img2img, a mask_image too inpaint (bytes, a path or a PIL image)."""
        call = _core.generation_call(
            prompt, params, init_image=init_image, mask_image=mask_image, kind=kind, idempotency_key=idempotency_key
        )
        return _core.accepted(await self._send(call))

    async def generate_and_wait(
        self,
        prompt: str,
        *,
        timeout: float = 600.0,  # noqa: ASYNC109 - the sync client's signature; it bounds the polling too
        on_event: EventHandler | None = None,
        **kwargs: Any,
    ) -> Job:
        """Queue a job and wait until it is finished (succeeded, failed or canceled: check ``status``)."""
        job = await self.generate(prompt, **kwargs)
        return await self.wait(job.id, timeout=timeout, on_event=on_event)

    async def get_job(self, job_id: str) -> Job:
        return await self._get(f"{API}/jobs/{job_id}", Job)

    async def list_jobs(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> JobPage:
        return await self._get(f"{API}/jobs", JobPage, _core.page_params(cursor, limit, {"status": status}))

    async def cancel_job(self, job_id: str) -> Job:
        return _core.parse(await self._send(Call("POST", f"{API}/jobs/{job_id}/cancel")), Job)

    async def events(self, job_id: str, *, _deadline: float | None = None) -> AsyncIterator[JobEvent]:
        """The job's live events until a terminal one (succeeded, failed or canceled). A dropped stream or the
        server's ``shutdown`` is followed by one reconnection; after that the iterator just ends."""
        follower = EventFollower(job_id)
        while follower.connect():
            follower.open_stream()
            try:
                timeout = _core.stream_timeout(self._http.timeout, _deadline)
                stream = self._http.stream("GET", follower.path, headers=follower.headers, timeout=timeout)
                async with stream as response:
                    if response.status_code >= 400:
                        await response.aread()
                        _core.checked(response)
                    async for text in response.aiter_text():
                        for event in follower.feed(text):
                            yield event
                        if follower.finished:
                            return
            except httpx.TransportError:
                pass  # dropped: reconnect once
            if _deadline is not None and time.monotonic() >= _deadline:
                return
            await asyncio.sleep(follower.reconnect_delay())

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,  # noqa: ASYNC109 - as in generate_and_wait
        on_event: EventHandler | None = None,
    ) -> Job:
        """The finished job: follows its events (``on_event`` sees each), polling GET /jobs/{id} once the stream
        cannot be followed. Raises WaitTimeout after ``timeout`` seconds (the job goes on)."""
        deadline = time.monotonic() + timeout
        async for event in self.events(job_id, _deadline=deadline):
            if on_event is not None and (pending := on_event(event)) is not None:
                await pending
            if event.terminal and event.job is not None:
                return event.job
        while True:
            job = await self.get_job(job_id)
            if job.done:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(job_id, timeout)
            await asyncio.sleep(min(self.poll_interval, left))

    async def list_images(self, *, cursor: str | None = None, limit: int | None = None, **filters: Any) -> ImagePage:
        """Your gallery, newest first; filters: style, model, starred, collection, job, q, trash."""
        return await self._get(f"{API}/images", ImagePage, _core.page_params(cursor, limit, filters))

    async def get_image(self, image_id: str) -> Image:
        return await self._get(f"{API}/images/{image_id}", Image)

    async def download(self, image_id: str, size: str = "original") -> bytes:
        """An image's file: ``original`` (PNG), or a WebP thumbnail that fits ``150``, ``300``, ``800`` or ``1920``."""
        call = Call("GET", f"{API}/images/{image_id}/file", params={"size": size})
        return _core.checked(await self._send(call)).content

    async def models(self) -> ModelList:
        return await self._get(f"{API}/models", ModelList)

    async def styles(self) -> StyleCatalog:
        return await self._get(f"{API}/styles", StyleCatalog)
