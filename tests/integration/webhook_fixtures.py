"""Fixtures shared by the webhook test modules: a receiver, services that may call loopback, a fake clock."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from studiolo.db.base import utcnow
from studiolo.domain.webhooks.deliverer import Deliverer
from studiolo.services import Services
from tests.webhook_receiver import Receiver


class FakeClock:
    """Starts at the real time (receivers reject timestamps more than 5 minutes off) and moves when told."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def hook(receiver: Receiver) -> Iterator[Receiver]:
    """The module's receiver, emptied for this test."""
    receiver.reset()
    receiver.secrets.clear()
    yield receiver
    receiver.reset()


@pytest.fixture
def settings(settings_factory: Any) -> Any:
    return settings_factory(webhooks_allow_private=True)


@pytest.fixture
def clock(services: Services) -> FakeClock:
    c = FakeClock()
    services.webhooks.clock = c
    return c


@pytest.fixture
def deliverer(services: Services, clock: FakeClock) -> Iterator[Deliverer]:
    d = services.build_deliverer(clock=clock, rng=random.Random(7))
    yield d
    d.stop()
