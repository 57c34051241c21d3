"""What the sync and the async client share: building each request, the retry decisions, reading responses and
following a job's event stream. Only the transport calls (and sleeping) differ between them."""

from __future__ import annotations

import io
import json
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel

from studiolo.client.errors import StudioloConnectionError, api_error, retry_after_seconds
from studiolo.client.models import JobAccepted, JobEvent
from studiolo.client.sse import ServerSentEvent, SSEDecoder

API = "/api/v1"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
M = TypeVar("M", bound=BaseModel)


class _SavesImages(Protocol):
    """A PIL image, or anything else that saves itself into a file object."""

    def save(self, fp: Any, format: str | None = None) -> None: ...


ImageInput = bytes | str | os.PathLike[str] | _SavesImages


@dataclass(frozen=True)
class Call:
    """One API request, ready for either transport. ``retry_safe``: sending it twice cannot do a thing twice (a
    read, or a job-creating POST that carries an Idempotency-Key)."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retry_safe: bool = True

    def request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": self.params, "headers": self.headers}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.data is not None or self.files is not None:
            kwargs["data"], kwargs["files"] = self.data, self.files
        return kwargs


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are tried again, and after how long: 429 (after its Retry-After), 502/503/504 and connection
    errors, at most ``max_retries`` times, with exponential backoff and full jitter."""

    max_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0  # a longer Retry-After is not waited for: the 429 is raised

    def after_response(self, call: Call, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before trying ``call`` again, or None to keep this response."""
        if response.status_code not in RETRY_STATUSES or not call.retry_safe or attempt >= self.max_retries:
            return None
        after = retry_after_seconds(response)
        if after is not None:
            return after if after <= self.max_retry_after else None
        return self._backoff(attempt)

    def after_error(self, call: Call, attempt: int, error: httpx.TransportError) -> float:
        """Seconds to wait before trying again after a connection error; raises once it may not be retried."""
        if not call.retry_safe or attempt >= self.max_retries:
            raise StudioloConnectionError(f"{call.method} {call.path}: {error or type(error).__name__}") from error
        return self._backoff(attempt)

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))


def auth_headers(api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "studiolo-client"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def checked(response: httpx.Response) -> httpx.Response:
    """The response, if it is not an error (its body must be read)."""
    if response.status_code >= 400:
        raise api_error(response)
    return response


def parse(response: httpx.Response, model: type[M]) -> M:
    return model.model_validate_json(checked(response).content)


def accepted(response: httpx.Response) -> JobAccepted:
    job = parse(response, JobAccepted)
    replayed = response.headers.get("idempotent-replayed") == "true"
    return job.model_copy(update={"replayed": True}) if replayed else job


def _image_file(name: str, image: ImageInput) -> tuple[str, bytes, str]:
    if isinstance(image, bytes):
        return name, image, "application/octet-stream"
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return path.name, path.read_bytes(), "application/octet-stream"
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return f"{name}.png", buf.getvalue(), "image/png"


def generation_call(
    prompt: str,
    params: dict[str, Any],
    *,
    init_image: ImageInput | None = None,
    mask_image: ImageInput | None = None,
    kind: str | None = None,
    idempotency_key: str | None = None,
) -> Call:
    """POST /generations: JSON for txt2img, multipart when an image goes with it. A fresh Idempotency-Key per call
    (unless given) lets a retry after a lost answer find the job the first try queued, instead of queuing another."""
    body = {"prompt": prompt, **{k: v for k, v in params.items() if v is not None}}
    headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
    if init_image is None and mask_image is None:
        if kind not in (None, "txt2img"):
            raise ValueError(f"a {kind} job needs init_image")
        return Call("POST", f"{API}/generations", json=body, headers=headers)
    if init_image is None:
        raise ValueError("mask_image needs init_image")
    data = {"params": json.dumps(body)}
    if kind is not None:
        data["kind"] = kind
    files = {"init_image": _image_file("init_image", init_image)}
    if mask_image is not None:
        files["mask_image"] = _image_file("mask_image", mask_image)
    return Call("POST", f"{API}/generations", data=data, files=files, headers=headers)


def stream_timeout(timeout: httpx.Timeout, deadline: float | None) -> httpx.Timeout:
    """An event stream's timeouts: a read may wait for the server's 15 s keep-alive, but not past ``deadline``."""
    read = 30.0 if deadline is None else max(0.05, min(30.0, deadline - time.monotonic()))
    return httpx.Timeout(timeout.connect, read=read, write=timeout.write, pool=timeout.pool)


def page_params(cursor: str | None, limit: int | None, filters: dict[str, Any]) -> dict[str, Any]:
    values = {"cursor": cursor, "limit": limit, **filters}
    return {k: str(v).lower() if isinstance(v, bool) else v for k, v in values.items() if v is not None}


class EventFollower:
    """The state of following one job's events across connections: which SSE frames are job events, when the
    stream is finished, and whether a dropped stream (or the server's ``shutdown``) earns one reconnection."""

    def __init__(self, job_id: str, reconnects: int = 1):
        self.path = f"{API}/jobs/{job_id}/events"
        self.headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        self._connects_left = 1 + reconnects
        self.retry_seconds = 1.0
        self.finished = False
        self._decoder = SSEDecoder()

    def connect(self) -> bool:
        """True while another connection may be opened (the first, then once after a drop)."""
        if self.finished or self._connects_left <= 0:
            return False
        self._connects_left -= 1
        return True

    def reconnect_delay(self) -> float:
        return min(self.retry_seconds, 5.0)

    def open_stream(self) -> None:
        self._decoder = SSEDecoder()

    def feed(self, text: str) -> list[JobEvent]:
        """The job events whose frames ended in ``text``; once a terminal one is among them, ``finished``."""
        events = [e for sse in self._decoder.feed(text) if (e := self._event(sse)) is not None]
        if self._decoder.retry is not None:
            self.retry_seconds = self._decoder.retry / 1000
        return events

    def _event(self, sse: ServerSentEvent) -> JobEvent | None:
        if self.finished:
            return None
        try:
            data = json.loads(sse.data)
        except ValueError:
            return None  # not a frame of ours
        if not isinstance(data, dict):
            return None
        data.setdefault("type", sse.event)
        event = JobEvent.model_validate(data)
        self.finished = event.terminal
        return event
