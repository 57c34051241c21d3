"""Checkout and the Customer Portal through the HTTP API, the real ``stripe`` SDK and the local fake Stripe server
(real HTTP both ways), on both databases (issue 15)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from studiolo.domain.accounts.audit import Origin
from studiolo.domain.billing.models import Plan
from tests.helpers import app_with, auth_headers, create_user
from tests.integration.stripe_env import Env, stripe_env


@pytest.fixture
def env(settings_factory: Callable[..., Any]) -> Iterator[Env]:
    with stripe_env(settings_factory) as made:
        yield made


def signed_in(env: Env, email: str = "payer@example.com") -> tuple[str, dict[str, str]]:
    user_id = create_user(env.svc, email)
    return user_id, auth_headers(env.svc, user_id)


def test_upgrade_through_checkout_pay_and_the_webhook(env: Env) -> None:
    user_id, headers = signed_in(env)
    r = env.client.post("/api/v1/billing/checkout", json={"plan": "basic"}, headers=headers)
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    assert url.startswith(f"{env.stripe.url}/checkout/cs_test_")
    sent = env.stripe.requests[-1]
    form = sent["form"]
    assert sent["path"] == "/v1/checkout/sessions" and sent["idempotency_key"].startswith("studiolo-checkout-")
    assert form["mode"] == "subscription" and form["client_reference_id"] == user_id
    assert form["metadata"] == {"user_id": user_id, "plan": "basic"}
    assert form["subscription_data"]["metadata"] == {"user_id": user_id, "plan": "basic"}
    assert form["customer_email"] == "payer@example.com" and "customer" not in form
    item = form["line_items"][0]["price_data"]
    assert (item["unit_amount"], item["currency"], item["recurring"]["interval"]) == ("999", "usd", "month")
    assert form["success_url"] == "http://testserver/billing?checkout=success&session_id={CHECKOUT_SESSION_ID}"
    assert form["cancel_url"] == "http://testserver/pricing?checkout=canceled"

    page = httpx.get(url)
    assert page.status_code == 200 and "id='pay'" in page.text
    paid = httpx.post(f"{url}/pay")  # the "Pay" button: webhooks first, then the redirect
    assert paid.status_code == 303
    back = urlsplit(paid.headers["location"])
    assert back.path == "/billing" and parse_qs(back.query)["session_id"] == [url.rsplit("/", 1)[1]]
    assert [(d.event["type"], d.status) for d in env.stripe.deliveries] == [
        ("checkout.session.completed", 200),
        ("invoice.paid", 200),
    ]
    summary = env.svc.billing.summary(user_id)
    assert summary.plan.slug == "basic" and summary.subscription.status == "active"
    assert httpx.post(f"{url}/pay").status_code == 303 and len(env.stripe.deliveries) == 2  # a second click

    # The same plan again is refused; so is a second subscription (plan changes go through the portal).
    again = env.client.post("/api/v1/billing/checkout", json={"plan": "basic"}, headers=headers)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "already_on_plan")
    other = env.client.post("/api/v1/billing/checkout", json={"plan": "pro"}, headers=headers)
    assert (other.status_code, other.json()["error"]["code"]) == (409, "subscription_exists")

    portal = env.client.post("/api/v1/billing/portal", headers=headers)
    assert portal.status_code == 200 and portal.json()["url"].startswith(f"{env.stripe.url}/portal/bps_test_")
    sent = env.stripe.requests[-1]
    assert sent["form"]["customer"] == env.stripe.sessions[url.rsplit("/", 1)[1]]["customer"]
    assert sent["form"]["return_url"] == "http://testserver/billing"


def test_a_credit_pack_uses_the_linked_customer_and_a_stripe_price(env: Env) -> None:
    user_id, headers = signed_in(env)
    r = env.client.post("/api/v1/billing/checkout", json={"credit_pack": "credits-500"}, headers=headers)
    assert r.status_code == 200, r.text
    form = env.stripe.requests[-1]["form"]
    assert form["mode"] == "payment" and "subscription_data" not in form
    assert form["metadata"] == {"user_id": user_id, "credit_pack": "credits-500", "credits": "500"}
    assert "recurring" not in form["line_items"][0]["price_data"]
    before = env.svc.billing.summary(user_id).balance
    env.stripe.complete_checkout(r.json()["url"].rsplit("/", 1)[1])
    assert env.svc.billing.summary(user_id).balance == before + 500
    payment = env.svc.billing.payments(user_id).items[0]
    assert (payment.kind, payment.amount_cents, payment.credits, payment.status) == ("credits", 500, 500, "paid")
    assert payment.receipt_url and "/receipts/ch_test_" in payment.receipt_url

    # A plan with a Stripe price id is sold by that price, to the customer Stripe already knows.
    env.stripe.add_price("price_basic_monthly", 999)
    with env.svc.db.session() as session:
        session.get_one(Plan, "basic").stripe_price_id = "price_basic_monthly"
    r = env.client.post("/api/v1/billing/checkout", json={"plan": "basic"}, headers=headers)
    assert r.status_code == 200, r.text
    form = env.stripe.requests[-1]["form"]
    assert form["line_items"] == [{"quantity": "1", "price": "price_basic_monthly"}]
    assert form["customer"].startswith("cus_test_") and "customer_email" not in form


def test_checkout_refusals(env: Env, settings_factory: Callable[..., Any]) -> None:
    user_id, headers = signed_in(env)

    def code(body: dict[str, Any]) -> tuple[int, str]:
        r = env.client.post("/api/v1/billing/checkout", json=body, headers=headers)
        return r.status_code, r.json()["error"]["code"]

    assert code({"plan": "gold"}) == (404, "plan_not_found")
    assert code({"credit_pack": "credits-1"}) == (404, "credit_pack_not_found")
    assert code({"plan": "free"}) == (422, "plan_is_free")
    assert code({}) == (422, "invalid_input")
    assert code({"plan": "basic", "credit_pack": "credits-500"}) == (422, "invalid_input")
    env.svc.billing.retire_plan("pro", retired=True, actor_id=None, origin=Origin())
    assert code({"plan": "pro"}) == (409, "plan_retired")
    env.svc.billing.assign_plan(user_id, "basic", actor_id=None, origin=Origin())
    assert code({"plan": "basic"}) == (409, "already_on_plan")
    portal = env.client.post("/api/v1/billing/portal", headers=headers)
    assert (portal.status_code, portal.json()["error"]["code"]) == (409, "no_customer")
    assert env.client.post("/api/v1/billing/checkout", json={"credit_pack": "credits-500"}).status_code == 401
    assert not env.stripe.requests  # nothing reached Stripe

    with app_with(settings_factory, billing="quotas") as (svc, client):
        other = create_user(svc, "team@example.com")
        r = client.post("/api/v1/billing/checkout", json={"plan": "basic"}, headers=auth_headers(svc, other))
        assert (r.status_code, r.json()["error"]["code"]) == (409, "billing_not_stripe")
        r = client.post("/api/v1/billing/portal", headers=auth_headers(svc, other))
        assert (r.status_code, r.json()["error"]["code"]) == (409, "billing_not_stripe")


def test_a_stripe_error_is_a_502_never_a_500(env: Env) -> None:
    _, headers = signed_in(env)
    env.stripe.api_error = (402, {"type": "card_error", "message": "Your card was declined."})
    r = env.client.post("/api/v1/billing/checkout", json={"plan": "basic"}, headers=headers)
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["code"] == "payment_provider_error" and error["message"] == "Your card was declined."
    env.stripe.api_error = (500, {"type": "api_error", "message": "internal"})
    r = env.client.post("/api/v1/billing/checkout", json={"credit_pack": "credits-500"}, headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (502, "payment_provider_error")
    # A plan whose Stripe price id does not exist at Stripe: Stripe's 400 is ours a 502 too.
    env.stripe.api_error = None
    with env.svc.db.session() as session:
        session.get_one(Plan, "basic").stripe_price_id = "price_missing"
    r = env.client.post("/api/v1/billing/checkout", json={"plan": "basic"}, headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (502, "payment_provider_error")


def test_a_webhook_whose_subscription_cannot_be_read_is_retried_later(env: Env) -> None:
    """checkout.session.completed re-reads the subscription from Stripe; if Stripe fails, the answer is 502 (Stripe
    delivers again) and nothing is recorded, so the retry applies it."""
    user_id, headers = signed_in(env)
    url = env.client.post("/api/v1/billing/checkout", json={"plan": "basic"}, headers=headers).json()["url"]
    env.stripe.deliver, real = (lambda u, b, h: (200, "held back")), env.stripe.deliver
    env.stripe.complete_checkout(url.rsplit("/", 1)[1])
    completed = env.stripe.deliveries[-2]
    env.stripe.deliver = real
    env.stripe.api_error = (500, {"type": "api_error", "message": "down"})
    assert env.stripe.send(completed.event).status == 502
    assert env.svc.billing.summary(user_id).plan.slug == "free"
    env.stripe.api_error = None
    assert env.stripe.send(completed.event).status == 200
    assert env.svc.billing.summary(user_id).plan.slug == "basic"


def test_the_webhook_needs_no_credentials_or_csrf(env: Env) -> None:
    """A cookie-less, token-less POST with a good signature is accepted; a signed-in browser's cookie does not make
    an unsigned one acceptable."""
    event = env.stripe.event("customer.tax_id.created", {"id": "txi_1"})
    assert env.stripe.send(event).status == 200
    r = env.client.post("/api/v1/billing/stripe/webhook", content=b"{}", headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_signature")
