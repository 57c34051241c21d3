"""What the queue-style providers (Replicate, fal) share: waiting between polls, progress from logs, downloads.

- **Polling** starts at the model's ``poll_seconds`` option (default 0.5 s) and backs off by half each time up to
  2 s (or ``poll_seconds`` when larger); a job canceled meanwhile ends the wait at once. A request still unfinished
  after the ``max_seconds`` option (default 900 s) is canceled at the provider and fails with ``provider_timeout``.
- **Downloads** of the images a provider links to go through a client WITHOUT the provider's credentials: the
  links usually point at a CDN on another host (replicate.delivery, fal.media), and a key must never leave for
  another host. The provider's own host is trusted only for the calls that need the key (``same_origin``).
"""

from __future__ import annotations

import base64
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

from studiolo.engines.base import (
    CancelCheck,
    Capabilities,
    EngineError,
    GeneratedImage,
    GenerationCanceled,
    GenerationRequest,
    JobKind,
    ModelRef,
    StepCallback,
)
from studiolo.engines.remote.base import (
    CircuitBreaker,
    ProviderHttp,
    RemoteEngine,
    decode_b64_image,
    decode_image,
    invalid_reply,
    png_bytes,
    provider_error,
)
from studiolo.settings import Settings

DEFAULT_POLL_SECONDS = 0.5
MAX_POLL_SECONDS = 2.0
DEFAULT_MAX_SECONDS = 900.0

# tqdm's " 45%|████▌     | 9/20 [...]" (diffusers' progress bars), else "step 9/20", else "45%".
_TQDM = re.compile(r"(\d{1,3})%\|[^|\n]*\|\s*(\d+)/(\d+)")
_FRACTION = re.compile(r"(?<![\d/])(\d+)\s*/\s*(\d+)(?![\d/])")
_PERCENT = re.compile(r"(?<!\d)(\d{1,3}(?:\.\d+)?)\s*%")


def option_float(options: Mapping[str, object], key: str, default: float) -> float:
    """A numeric model option (the CLI may have stored it as text), or ``default``."""
    value = options.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return default
    return default


def option_kinds(model: ModelRef, default: tuple[JobKind, ...] = ("txt2img",)) -> set[str]:
    """The job kinds a model row says its provider-side model takes (``kinds`` option: "txt2img,img2img")."""
    value = model.options.get("kinds")
    if isinstance(value, str):
        return {k.strip() for k in value.split(",") if k.strip()}
    if isinstance(value, list):
        return {str(k) for k in value}
    return set(default)


def tailor(inputs: dict[str, object], options: Mapping[str, object]) -> dict[str, object]:
    """``inputs`` fitted to one provider-side model: the ``omit`` option ("guidance_scale,num_inference_steps")
    drops what it refuses, ``input.NAME`` options (e.g. ``input.aspect_ratio=1:1``) add what it needs."""
    omit = options.get("omit")
    dropped = {k.strip() for k in omit.split(",")} if isinstance(omit, str) else set()
    if isinstance(omit, list):
        dropped = {str(k) for k in omit}
    out = {k: v for k, v in inputs.items() if k not in dropped and v is not None}
    out.update({k[len("input.") :]: v for k, v in options.items() if k.startswith("input.") and len(k) > len("input.")})
    return out


def same_origin(url: str, base: str) -> bool:
    """True when ``url`` is on the scheme, host and port of ``base`` (where sending the provider's key is fine)."""
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.netloc.lower()) == (b.scheme, b.netloc.lower()) and bool(a.netloc)


def parse_progress(text: str) -> tuple[int, int] | None:
    """The last progress a model's logs show, as (step, total): a tqdm bar, "9/20" or "45%" (total 100)."""
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    for line in reversed(lines[-50:]):
        found = _TQDM.findall(line)
        if found:
            step, total = int(found[-1][1]), int(found[-1][2])
            if 0 <= step <= total and total > 0:
                return step, total
        fractions = [(int(a), int(b)) for a, b in _FRACTION.findall(line) if 0 <= int(a) <= int(b) and int(b) > 0]
        if fractions:
            return fractions[-1]
        percents = [float(p) for p in _PERCENT.findall(line) if float(p) <= 100]
        if percents:
            return round(percents[-1]), 100
    return None


def data_url(image: Image.Image) -> str:
    """``image`` as a PNG data: URL (how Replicate and fal take an uploaded image inline)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


class Poll:
    """The wait between two status polls of one request (see the module doc), cancel-aware."""

    def __init__(self, model: ModelRef, provider: str, sleep: Callable[[float], None]):
        self.provider = provider
        self.sleep = sleep
        self.first = max(0.0, option_float(model.options, "poll_seconds", DEFAULT_POLL_SECONDS))
        self.ceiling = max(self.first, MAX_POLL_SECONDS)
        self.max_seconds = option_float(model.options, "max_seconds", DEFAULT_MAX_SECONDS)
        self.interval = self.first
        self.started = time.monotonic()

    @property
    def expired(self) -> bool:
        return time.monotonic() - self.started > self.max_seconds

    def wait(self, should_cancel: CancelCheck) -> None:
        """Sleep the current interval in short slices; GenerationCanceled as soon as the job is canceled."""
        end = time.monotonic() + self.interval
        while True:
            if should_cancel():
                raise GenerationCanceled()
            left = end - time.monotonic()
            if left <= 0:
                break
            self.sleep(min(left, 0.25))
        self.interval = min(self.ceiling, self.interval * 1.5 if self.interval else 0.0)


class Downloads:
    """Fetches provider-linked images with no credentials (``http`` is a ProviderHttp without auth headers)."""

    def __init__(self, http: ProviderHttp):
        self.http = http

    @classmethod
    def of(
        cls, provider: str, settings: Settings, breaker: CircuitBreaker, transport: httpx.BaseTransport | None
    ) -> Downloads:
        """Downloads for ``provider``'s engine: its timeouts, retries and breaker, but no credentials."""
        http = ProviderHttp(
            provider,
            base_url="",
            headers={},
            timeout=settings.provider_timeout_seconds,
            max_retries=settings.provider_max_retries,
            breaker=breaker,
            transport=transport,
        )
        return cls(http)

    def fetch(self, url: object, should_cancel: CancelCheck) -> Image.Image:
        provider = self.http.provider
        if not isinstance(url, str) or not url:
            raise invalid_reply(provider, "an output that is not an image URL")
        if url.startswith("data:"):
            return decode_b64_image(url, provider)
        if urlsplit(url).scheme not in ("http", "https"):
            raise invalid_reply(provider, "an image URL that is not http(s)")
        response = self.http.request("GET", url, should_cancel=should_cancel)
        return decode_image(response.content, provider)

    def close(self) -> None:
        self.http.close()


class QueueEngine(RemoteEngine):
    """A provider whose requests are queued and polled (Replicate, fal): keyless downloads, kinds per row, and the
    job's loop: one request per seed, all submitted first (they run side by side), then each polled to its end and
    read in order; a cancel, a failure or a timeout cancels every unfinished one at the provider.

    A provider fills in the hooks, each about one request (``handle``: the provider's reply, a dict kept up to
    date): ``_submit``, ``_ended`` (already over, no poll needed), ``_status`` (one poll), ``_result``,
    ``_unfinished`` and ``_cancel``."""

    # What the provider calls one request, for messages ("prediction").
    unit = "request"

    def _generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        handles: list[dict[str, Any]] = []
        try:
            for seed in request.seeds:
                handles.append(self._submit(request, seed, should_cancel))
            images = []
            for k, (seed, handle) in enumerate(zip(request.seeds, handles, strict=True)):
                self._poll(request, handle, k + 1, on_step, should_cancel)
                image, cost = self._result(request, handle, should_cancel)
                images.append(GeneratedImage(image=image, seed=seed, cost=cost))
            return images
        except (GenerationCanceled, EngineError):
            for handle in handles:
                if self._unfinished(handle):
                    self._cancel(request, handle)
            raise

    def _poll(
        self,
        request: GenerationRequest,
        handle: dict[str, Any],
        image: int,
        on_step: StepCallback,
        should_cancel: CancelCheck,
    ) -> None:
        """Poll ``handle`` until it ends (see the module doc for the schedule), reporting the progress its logs
        show; ``provider_timeout`` past the ``max_seconds`` option."""
        poll = Poll(request.model, self.name, self.http.sleep)
        shown: tuple[int, int] | None = None
        done = self._ended(handle)
        while not done:
            if poll.expired:
                raise provider_error(
                    "provider_timeout", f"{self.name}'s {self.unit} ran over {poll.max_seconds:.0f} s."
                )
            poll.wait(should_cancel)
            done, logs = self._status(request, handle, should_cancel)
            progress = parse_progress(logs)
            if progress is not None and progress != shown:
                shown = progress
                on_step(progress[0], progress[1], image=image if request.n > 1 else 0)

    @abstractmethod
    def _submit(self, request: GenerationRequest, seed: int, should_cancel: CancelCheck) -> dict[str, Any]:
        """Queue the request for one image of ``seed``; the provider's reply."""

    def _ended(self, handle: dict[str, Any]) -> bool:
        """True when the submission's reply already says the request is over (nothing to poll)."""
        return False

    @abstractmethod
    def _status(
        self, request: GenerationRequest, handle: dict[str, Any], should_cancel: CancelCheck
    ) -> tuple[bool, str]:
        """One status poll: (over, the logs so far)."""

    @abstractmethod
    def _result(
        self, request: GenerationRequest, handle: dict[str, Any], should_cancel: CancelCheck
    ) -> tuple[Image.Image, float | None]:
        """The image of a request that is over, and its cost (None: unknown); the EngineError of a failure."""

    @abstractmethod
    def _unfinished(self, handle: dict[str, Any]) -> bool:
        """True when the request may still run (and bill) at the provider: canceled when the job ends early."""

    @abstractmethod
    def _cancel(self, request: GenerationRequest, handle: dict[str, Any]) -> None:
        """Ask the provider to stop the request (best effort: the job ends either way)."""

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None):
        super().__init__(settings, transport=transport)
        self.downloads = Downloads.of(self.name, settings, self.breaker(settings), transport)

    def capabilities(self, model: ModelRef) -> Capabilities:
        kinds = option_kinds(model)
        return Capabilities(txt2img="txt2img" in kinds, img2img="img2img" in kinds, inpaint="inpaint" in kinds)

    def close(self) -> None:
        super().close()
        self.downloads.close()
