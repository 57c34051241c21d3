"""Studiolo in Stripe mode, wired to a running fake Stripe (tests/stripe_server.py): the SDK talks to the fake over
real HTTP, and the fake's webhooks reach the app through its TestClient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

from studiolo.services import Services
from tests.helpers import app_with
from tests.stripe_server import StripeServer, deliver_with

SECRET = "whsec_test"


@dataclass
class Env:
    svc: Services
    client: TestClient
    stripe: StripeServer


@contextmanager
def stripe_env(settings_factory: Callable[..., Any]) -> Iterator[Env]:
    with StripeServer(webhook_url="http://testserver/api/v1/billing/stripe/webhook", webhook_secret=SECRET) as server:
        settings = {"stripe_secret_key": "sk_test_x", "stripe_webhook_secret": SECRET, "stripe_api_base": server.url}
        with app_with(settings_factory, billing="stripe", **settings) as (svc, client):
            server.deliver = deliver_with(client)
            yield Env(svc, client, server)
