"""What every hosted-provider engine shares (issue 18): HTTP with retries, a circuit breaker, error mapping.

- **Retries**: a 429, a 5xx, a timeout or a dropped connection is tried again up to STUDIOLO_PROVIDER_MAX_RETRIES
  times, after the provider's ``Retry-After`` (seconds or an HTTP date) when it sends one, else after an exponential
  backoff with jitter (0.5 s, 1 s, 2 s, ... at most 30 s). A cancel between tries ends the wait at once.
- **Circuit breaker** (one per provider and process): after STUDIOLO_PROVIDER_BREAKER_FAILURES failed calls in a row
  the provider is not called for STUDIOLO_PROVIDER_BREAKER_SECONDS; jobs fail fast with a retryable
  ``provider_unavailable`` (the queue tries them again later) instead of each waiting out its own timeouts.
- **Errors** become EngineErrors with stable codes: ``provider_auth_failed`` (401/403: the key),
  ``content_rejected`` (the provider refused the prompt or image), ``provider_rejected`` (another 4xx: the request),
  ``provider_rate_limited`` and ``provider_unavailable`` (retries spent; retryable), ``provider_timeout``
  (retryable), ``provider_invalid_reply`` (a reply that is not what the protocol says).
- **Keys** travel only in headers (never in URLs, which httpx logs) and never appear in messages.

Subclasses implement ``_generate`` with ``self.http`` and return one GeneratedImage per seed, with ``cost``.
Tests: tests/contract/test_remote_engines.py (every provider against a local server speaking its protocol).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import io
import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx
from PIL import Image, UnidentifiedImageError

from studiolo.engines.base import (
    CancelCheck,
    Capabilities,
    EngineError,
    GeneratedImage,
    GenerationCanceled,
    GenerationRequest,
    ModelLoadError,
    ModelRef,
    StepCallback,
)
from studiolo.settings import Settings

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 524, 529})
MAX_BACKOFF_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 120.0
MAX_IMAGE_BYTES = 64 * 2**20


def provider_error(code: str, message: str) -> EngineError:
    """An EngineError with the retry flag its code implies."""
    retryable = code in ("provider_unavailable", "provider_timeout", "provider_rate_limited")
    return EngineError(message, code=code, retryable=retryable)


class CircuitBreaker:
    """Open after ``failures`` failed calls in a row; closed again (half-open: one call tries) after ``seconds``."""

    def __init__(self, provider: str, failures: int, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.provider = provider
        self.failures = failures
        self.seconds = seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._in_a_row = 0
        self._open_until = 0.0

    def check(self) -> None:
        with self._lock:
            wait = self._open_until - self.clock()
        if wait > 0:
            raise provider_error(
                "provider_unavailable",
                f"{self.provider} failed {self.failures} times in a row; not calling it for another {wait:.0f} s.",
            )

    def success(self) -> None:
        with self._lock:
            self._in_a_row = 0
            self._open_until = 0.0

    def failure(self) -> None:
        with self._lock:
            self._in_a_row += 1
            if self._in_a_row >= self.failures:
                self._open_until = self.clock() + self.seconds
                log.warning(
                    "%s failed %d times in a row: pausing calls for %.0f s", self.provider, self._in_a_row, self.seconds
                )

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until > self.clock()


def retry_after_seconds(response: httpx.Response, now: float | None = None) -> float | None:
    """The response's Retry-After (delta seconds or an HTTP date) in seconds, capped; None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (now if now is not None else time.time())
    return max(0.0, min(seconds, MAX_RETRY_AFTER_SECONDS))


class ProviderHttp:
    """One provider's HTTP client: base URL, auth headers, timeouts, retries and the breaker (see the module doc)."""

    def __init__(
        self,
        provider: str,
        *,
        base_url: str,
        headers: Mapping[str, str],
        timeout: float,
        max_retries: int,
        breaker: CircuitBreaker,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.provider = provider
        self.max_retries = max_retries
        self.breaker = breaker
        self.sleep = sleep
        # No redirects: a provider answers where it is asked; following one could send the key elsewhere.
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=dict(headers),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def _backoff(self, attempt: int) -> float:
        return float(min(MAX_BACKOFF_SECONDS, 0.5 * 2.0**attempt) * (0.5 + random.random() / 2))

    def _wait(self, seconds: float, should_cancel: CancelCheck | None) -> None:
        """Sleep ``seconds`` in short slices, ending early (GenerationCanceled) when the job is canceled."""
        end = time.monotonic() + seconds
        while True:
            if should_cancel is not None and should_cancel():
                raise GenerationCanceled()
            left = end - time.monotonic()
            if left <= 0:
                return
            self.sleep(min(left, 0.25))

    def request(
        self,
        method: str,
        url: str,
        *,
        should_cancel: CancelCheck | None = None,
        refusal: Callable[[httpx.Response], bool] | None = None,
        retry: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send, retrying what may pass (see the module doc); a 2xx comes back, anything else raises EngineError.

        ``refusal(response)``: True when a 4xx is the provider refusing the content (-> ``content_rejected``).
        ``retry``: False for calls that must not repeat (a paid submission without an idempotency key)."""
        attempt = 0
        while True:
            self.breaker.check()
            try:
                response = self.client.request(method, url, **kwargs)
            except httpx.TimeoutException as exc:
                self.breaker.failure()
                if retry and attempt < self.max_retries:
                    self._wait(self._backoff(attempt), should_cancel)
                    attempt += 1
                    continue
                raise provider_error("provider_timeout", f"{self.provider} did not answer in time.") from exc
            except httpx.TransportError as exc:
                self.breaker.failure()
                if retry and attempt < self.max_retries:
                    self._wait(self._backoff(attempt), should_cancel)
                    attempt += 1
                    continue
                raise provider_error(
                    "provider_unavailable", f"{self.provider} could not be reached ({type(exc).__name__})."
                ) from exc
            if response.is_success:
                self.breaker.success()
                return response
            status = response.status_code
            if status in RETRY_STATUSES:
                if status >= 500:
                    self.breaker.failure()
                if retry and attempt < self.max_retries:
                    delay = retry_after_seconds(response)
                    self._wait(delay if delay is not None else self._backoff(attempt), should_cancel)
                    attempt += 1
                    continue
            else:
                self.breaker.success()  # it answered: the provider is up, the request was wrong
            raise self.error_for(response, refusal)

    def error_for(self, response: httpx.Response, refusal: Callable[[httpx.Response], bool] | None) -> EngineError:
        status = response.status_code
        detail = provider_message(response)
        said = f": {detail}" if detail else ""
        # Some providers refuse content with a 403 (Stability's content_moderation): the refusal test goes first.
        if status == 403 and refusal is not None and refusal(response):
            return provider_error("content_rejected", f"{self.provider} refused the content{said}.")
        if status in (401, 403):
            return provider_error("provider_auth_failed", f"{self.provider} refused the credentials ({status}){said}.")
        if status == 429:
            return provider_error("provider_rate_limited", f"{self.provider} is rate limiting us (429){said}.")
        if status >= 500 or status in RETRY_STATUSES:
            return provider_error("provider_unavailable", f"{self.provider} failed ({status}){said}.")
        if refusal is not None and refusal(response):
            return provider_error("content_rejected", f"{self.provider} refused the content{said}.")
        return provider_error("provider_rejected", f"{self.provider} rejected the request ({status}){said}.")

    def json(self, response: httpx.Response) -> Any:
        """The reply's JSON, or ``provider_invalid_reply``."""
        try:
            return response.json()
        except ValueError as exc:
            raise invalid_reply(self.provider, "a reply that is not JSON") from exc


def provider_message(response: httpx.Response, limit: int = 300) -> str:
    """A provider's own error message, when its body has one in a usual place, cut to ``limit`` characters."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:limit] if response.headers.get("content-type", "").startswith("text/") else ""
    found: Any = body
    for path in (("error", "message"), ("error",), ("message",), ("detail",), ("errors",), ("name",)):
        found = body
        for key in path:
            found = found.get(key) if isinstance(found, dict) else None
        if isinstance(found, str) and found:
            return found[:limit]
        if isinstance(found, list) and found and isinstance(found[0], str):
            return "; ".join(found)[:limit]
        if isinstance(found, list) and found and isinstance(found[0], dict):  # FastAPI/pydantic: [{loc, msg}, ...]
            said = [f"{'.'.join(str(p) for p in e.get('loc', []))}: {e['msg']}" for e in found if "msg" in e]
            if said:
                return "; ".join(said)[:limit]
    return ""


def invalid_reply(provider: str, what: str) -> EngineError:
    return provider_error("provider_invalid_reply", f"{provider} sent {what}.")


def decode_image(data: bytes, provider: str) -> Image.Image:
    """Bytes a provider sent as an image, decoded to RGB(A) pixels, or ``provider_invalid_reply``."""
    if len(data) > MAX_IMAGE_BYTES:
        raise invalid_reply(provider, f"an image of over {MAX_IMAGE_BYTES // 2**20} MB")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            keep_alpha = img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info)
            return img.convert("RGBA" if keep_alpha else "RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise invalid_reply(provider, "an image that cannot be decoded") from exc


def decode_b64_image(value: Any, provider: str) -> Image.Image:
    """A base64 (or data: URL) image from a JSON reply, decoded, or ``provider_invalid_reply``."""
    if not isinstance(value, str) or not value:
        raise invalid_reply(provider, "no image data")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid_reply(provider, "image data that is not base64") from exc
    return decode_image(raw, provider)


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as PNG bytes (what providers take as an upload)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class RemoteEngine(ABC):
    """The Engine contract for a hosted provider. Subclasses set ``name`` and define ``base_url`` and ``_generate``."""

    name: ClassVar[str] = "remote"
    remote: ClassVar[bool] = True  # catalog.add_remote offers only engines that say so
    # What one image costs at this provider when the model row gives no ``price_per_image`` option (US dollars).
    default_price: ClassVar[float] = 0.0
    _breakers: ClassVar[dict[str, CircuitBreaker]] = {}
    _breakers_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None):
        self.settings = settings
        self.http = ProviderHttp(
            self.name,
            base_url=self.base_url(settings),
            headers=self.auth_headers(settings),
            timeout=settings.provider_timeout_seconds,
            max_retries=settings.provider_max_retries,
            breaker=self.breaker(settings),
            transport=transport,
        )

    # -- what a provider defines ---------------------------------------------------------------------------------
    @abstractmethod
    def base_url(self, settings: Settings) -> str:
        """Where the provider's API is (its setting, which tests point at a local server)."""

    def auth_headers(self, settings: Settings) -> dict[str, str]:
        return {}

    def capabilities(self, model: ModelRef) -> Capabilities:
        return Capabilities(txt2img=True)

    @abstractmethod
    def _generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        """One image per seed, made at the provider (``generate`` checks the count)."""

    # -- the Engine contract ---------------------------------------------------------------------------------------
    def load(self, model: ModelRef) -> None:
        """Nothing to load; a model row without its provider-side name cannot run."""
        if not model.remote_model:
            raise ModelLoadError(f"Model '{model.id}' names no model at {self.name} (remote_model is empty).")

    def is_loaded(self, model_id: str) -> bool:
        return True  # nothing to load: a remote model never makes a worker prefer or avoid it

    def generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        self.load(request.model)
        if should_cancel():
            raise GenerationCanceled()
        images = self._generate(request, on_step, should_cancel)
        if len(images) != request.n:
            raise invalid_reply(self.name, f"{len(images)} images for {request.n} asked")
        return images

    # -- helpers -------------------------------------------------------------------------------------------------
    def breaker(self, settings: Settings) -> CircuitBreaker:
        """This provider's breaker, shared by every engine instance of the process."""
        with self._breakers_lock:
            found = self._breakers.get(self.name)
            if found is None:
                found = CircuitBreaker(self.name, settings.provider_breaker_failures, settings.provider_breaker_seconds)
                self._breakers[self.name] = found
            return found

    def price(self, model: ModelRef) -> float:
        """What one image of ``model`` costs (the row's ``price_per_image`` option, else the provider's default)."""
        value = model.options.get("price_per_image")
        return float(value) if isinstance(value, int | float) else self.default_price

    def close(self) -> None:
        self.http.close()
