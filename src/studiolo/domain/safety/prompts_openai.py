"""The hosted prompt check: an OpenAI-compatible ``POST {base}/moderations`` (OpenAI's omni-moderation, or a local
server speaking the same protocol), one of PromptModerator's checks (prompts.py).

When the endpoint fails (timeout, connection refused, 429, 5xx, a reply that is not a moderation result) the
request is let through with a logged warning and a counted failure by default: the local checks still ran, and an
outage of someone else's service should not stop every generation here. STUDIOLO_MODERATION_API_FAIL_CLOSED=true
refuses instead, with 503 moderation_unavailable. No retry: a submit waits for this call, and the user can simply
submit again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from prometheus_client import Counter
from prometheus_client.registry import Collector

from studiolo.domain.safety.prompts import Memo
from studiolo.errors import ServiceUnavailable

log = logging.getLogger(__name__)


class ModerationFailed(Exception):
    """The endpoint gave no verdict; ``reason`` is a short label (timeout, unreachable, http_429, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def flagged_category(result: Mapping[str, Any]) -> str | None:
    """The category a moderation result flags (the highest-scoring of those set), None when not flagged."""
    flagged = result.get("flagged")
    categories = result.get("categories")
    if not isinstance(flagged, bool) or not isinstance(categories, dict):
        raise ModerationFailed("invalid_reply", "a result without flagged and categories")
    if not flagged:
        return None
    scores = result.get("category_scores")
    scores = scores if isinstance(scores, dict) else {}
    on = [name for name, value in categories.items() if value is True and isinstance(name, str)]
    if not on:
        return "flagged"

    def score(name: str) -> float:
        value = scores.get(name)
        return float(value) if isinstance(value, int | float) else 0.0

    return max(on, key=score)


class OpenAIModeration:
    """``POST {base}/moderations {"model", "input"}`` -> ``results[0].flagged / categories``."""

    name = "api"
    negative = False  # see prompts.py: negative prompts list what to avoid, the category check would flag them

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        model: str = "omni-moderation-latest",
        timeout: float = 5.0,
        fail_closed: bool = False,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/moderations"
        self.api_key = api_key
        self.model = model
        self.timeout = timeout
        self.fail_closed = fail_closed
        self._memo = Memo()
        self._client = httpx.Client(timeout=timeout)  # kept: a submit should not pay a new TLS handshake
        self.failures = Counter(
            "studiolo_moderation_api_failures",
            "Hosted prompt checks that gave no verdict (the prompt was let through unless fail-closed).",
            ["reason"],
            registry=None,
        )

    def collectors(self) -> tuple[Collector, ...]:
        return (self.failures,)

    def classify(self, text: str) -> str | None:
        """The endpoint's verdict on one text: the flagged category or None; ModerationFailed when there is none."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = self._client.post(self.url, json={"model": self.model, "input": text}, headers=headers)
        except httpx.TimeoutException as exc:
            raise ModerationFailed("timeout", f"no answer within {self.timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise ModerationFailed("unreachable", repr(exc)) from exc
        if response.status_code != 200:
            status = response.status_code
            reason = "http_429" if status == 429 else f"http_{status // 100}xx"
            raise ModerationFailed(reason, f"{status} {response.text[:200]}")
        try:
            results = response.json()["results"]
            result = results[0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ModerationFailed("invalid_reply", response.text[:200]) from None
        if not isinstance(result, dict):
            raise ModerationFailed("invalid_reply", "results[0] is not an object")
        return flagged_category(result)

    def check(self, texts: Sequence[str]) -> list[str | None]:
        verdicts: list[str | None] = []
        for text in texts:
            known, verdict = self._memo.get(text)
            if not known:
                try:
                    verdict = self.classify(text)
                except ModerationFailed as exc:
                    self.failures.labels(exc.reason).inc()
                    if self.fail_closed:
                        raise ServiceUnavailable(
                            "The moderation service could not check this prompt just now; try again shortly.",
                            code="moderation_unavailable",
                            details={"reason": exc.reason},
                        ) from exc
                    log.warning("moderation: the hosted check failed (%s); the prompt was let through", exc)
                    verdicts.append(None)
                    continue  # not remembered: the next request asks again
                self._memo.put(text, verdict)
            verdicts.append(verdict)
        return verdicts
