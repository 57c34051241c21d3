"""Rate limits with the ``limits`` library: in memory for one process, in Redis when STUDIOLO_REDIS_URL is set
(so several API processes share the counters). Moving windows: no burst of 2x at a window boundary."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar

from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from studiolo.errors import InvalidInput, RateLimited
from studiolo.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class RateLimiter:
    def __init__(self, settings: Settings):
        self.enabled = settings.rate_limits_enabled
        self.storage_errors = 0
        storage = storage_from_string(settings.redis_url or "memory://")
        assert isinstance(storage, Storage)  # the synchronous API (limits.aio is the async one)
        self.storage = storage
        self._limiter = MovingWindowRateLimiter(self.storage)
        self._rules: dict[str, list[RateLimitItem]] = {
            "login": parse_many(settings.rate_limit_login),
            "register": parse_many(settings.rate_limit_register),
            "code": parse_many(settings.rate_limit_code),
            "reset": parse_many(settings.rate_limit_reset),
            "generate": parse_many(settings.rate_limit_generate),
        }

    def _guard(self, action: Callable[[], T], fallback: T) -> T:
        """Run a limiter call; if the shared storage (Redis) is unreachable, fail open with a warning. Limits
        protect the service; refusing every sign-in and submission while Redis restarts would take it down."""
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - any storage failure (redis.ConnectionError, timeouts, ...)
            self.storage_errors += 1
            log.warning("rate-limit storage unavailable, not limiting this request: %s", exc)
            return fallback

    def hit(self, rule: str, *keys: str, cost: int = 1) -> None:
        """Count ``cost`` requests of ``rule`` (a batch counts as its items) against each key (e.g. ``ip:1.2.3.4``,
        ``user:…``); raise RateLimited (429 + Retry-After) if any key would go over any of the rule's limits.
        Nothing is counted when refused. A cost over the rule's smallest limit could never pass, so it is refused
        with 422 ``batch_exceeds_rate_limit`` instead of a 429 whose Retry-After would promise a retry that fails
        again (tests/unit/test_ratelimit.py)."""
        if not self.enabled:
            return
        capacity = min(item.amount for item in self._rules[rule])
        if cost > capacity:
            raise InvalidInput(
                f"At most {capacity} submissions fit in the rate limit at once; send smaller batches.",
                code="batch_exceeds_rate_limit",
                details={"limit": capacity},
            )
        refused = self._guard(lambda: self._refusal(rule, keys, cost), None)
        if refused is not None:
            raise refused

    def _refusal(self, rule: str, keys: tuple[str, ...], cost: int) -> RateLimited | None:
        items = self._rules[rule]
        for key in keys:
            for item in items:
                if not self._limiter.test(item, rule, key, cost=cost):
                    # With cost > 1 this is the earliest a retry can pass: when the oldest counted request
                    # leaves the window, which frees one slot, perhaps not enough.
                    return RateLimited(
                        "Too many requests; wait a little and try again.",
                        retry_after=self._retry_after(item, rule, key),
                    )
        for key in keys:
            for item in items:
                self._limiter.hit(item, rule, key, cost=cost)
        return None

    def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        reset = self._limiter.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset - time.time()))

    # Account lockout: counts failed logins per email (known or not, so a lock reveals nothing).
    def failures(self, limit: int, minutes: int) -> RateLimitItem:
        return parse_many(f"{limit}/{minutes} minutes")[0]

    def locked_for(self, email: str, limit: int, minutes: int) -> int:
        """Seconds the address stays locked, 0 if it is not. Applies even when limits are disabled."""
        item = self.failures(limit, minutes)

        def seconds() -> int:
            if self._limiter.test(item, "login-failure", email):
                return 0
            return self._retry_after(item, "login-failure", email)

        return self._guard(seconds, 0)

    def record_failure(self, email: str, limit: int, minutes: int) -> None:
        self._guard(lambda: self._limiter.hit(self.failures(limit, minutes), "login-failure", email), False)

    def clear_failures(self, email: str, limit: int, minutes: int) -> None:
        self._guard(lambda: self._limiter.clear(self.failures(limit, minutes), "login-failure", email), None)
