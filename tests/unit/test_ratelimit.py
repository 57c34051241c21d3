"""RateLimiter.hit with a cost (a batch of submissions), on the in-memory counters of one process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from studiolo.domain.accounts.ratelimit import RateLimiter
from studiolo.errors import InvalidInput, RateLimited
from studiolo.settings import Settings


def limiter(tmp_path: Path, **overrides: Any) -> RateLimiter:
    return RateLimiter(Settings(env="test", data_dir=tmp_path, **overrides))


def test_a_cost_uses_up_that_many_requests_and_a_refusal_none(tmp_path: Path) -> None:
    rl = limiter(tmp_path, rate_limit_generate="5/minute")
    rl.hit("generate", "user:a", "ip:1", cost=3)
    with pytest.raises(RateLimited) as refused:
        rl.hit("generate", "user:a", "ip:1", cost=3)  # two are left
    assert refused.value.retry_after >= 1
    rl.hit("generate", "user:a", "ip:1", cost=2)  # the refusal counted nothing
    with pytest.raises(RateLimited):
        rl.hit("generate", "user:a")
    with pytest.raises(RateLimited):
        rl.hit("generate", "user:b", "ip:1")  # one key over its limit refuses the whole request
    rl.hit("generate", "user:b", "ip:2", cost=5)  # other keys have their own budgets


def test_a_cost_over_the_smallest_limit_can_never_pass(tmp_path: Path) -> None:
    rl = limiter(tmp_path, rate_limit_generate="100/hour;4/minute")
    with pytest.raises(InvalidInput) as refused:
        rl.hit("generate", "user:a", cost=5)
    assert (refused.value.code, refused.value.status_code, refused.value.details) == (
        "batch_exceeds_rate_limit",
        422,
        {"limit": 4},
    )
    rl.hit("generate", "user:a", cost=4)  # nothing was counted


def test_nothing_is_limited_when_limits_are_off(tmp_path: Path) -> None:
    rl = limiter(tmp_path, rate_limit_generate="1/minute", rate_limits_enabled=False)
    for _ in range(3):
        rl.hit("generate", "user:a", cost=50)
