"""One POST to a vision provider with retries: 429, 5xx, timeouts and refused connections are tried again
``retries`` times with exponential backoff (a Retry-After header is honoured, capped), then 503
describer_unavailable. Other 4xx answers are not retried (a wrong key or model does not heal)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx

from studiolo.domain.understanding.ports import unavailable

log = logging.getLogger(__name__)
_RETRY_AFTER_MAX: Final = 30.0


@dataclass
class Answer:
    status: int
    body: Any  # the parsed JSON, or None when the body is not JSON
    text: str
    attempts: int


def obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else {} (a provider's answer is read defensively, field by field)."""
    return value if isinstance(value, dict) else {}


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(_RETRY_AFTER_MAX, max(0.0, float(response.headers.get("retry-after", ""))))
    except ValueError:
        return None


def post_json(
    url: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str],
    timeout: float,
    retries: int,
    backoff: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Answer:
    """POST ``body``; the first answer that is not 429/5xx (any status), or 503 describer_unavailable."""
    problem = ""
    for attempt in range(1, retries + 2):
        wait = backoff * 2 ** (attempt - 1)
        try:
            response = httpx.post(url, json=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            problem = f"no answer within {timeout:g} s"
        except httpx.HTTPError as exc:
            problem = f"cannot reach the provider ({type(exc).__name__})"
        else:
            if response.status_code != 429 and response.status_code < 500:
                try:
                    parsed = response.json()
                except ValueError:
                    parsed = None
                return Answer(response.status_code, parsed, response.text, attempt)
            problem = f"HTTP {response.status_code}" + (" (rate limited)" if response.status_code == 429 else "")
            wait = _retry_after(response) or wait
        if attempt <= retries:
            log.warning("Describer: %s (attempt %d of %d); retrying in %.2f s.", problem, attempt, retries + 1, wait)
            sleep(wait)
    raise unavailable(problem, retries + 1)


class ProviderDescriber:
    """What both vision providers' describers hold: where the provider is, its key and model, and how long and how
    often to try (``post_with_retries``)."""

    name = ""
    default_model = ""

    def __init__(
        self, base_url: str, api_key: str, model: str, *, timeout: float, retries: int, backoff: float = 1.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model or self.default_model
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
