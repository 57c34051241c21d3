"""Stripe's webhooks on both databases (issue 15): signed with the real scheme, verified with the real SDK, each
event applied exactly once, out-of-order events never regressing, failed renewals and refunds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe as stripe_sdk
from sqlalchemy import func, select

from studiolo.domain.accounts.mail import ConsoleMailer
from studiolo.domain.billing.models import BillingAccount, StripeEvent
from studiolo.services import Services
from tests.helpers import create_user, in_threads, writes_meet
from tests.integration.stripe_env import SECRET, Env, stripe_env
from tests.stripe_server import StripeServer


@pytest.fixture
def env(settings_factory: Callable[..., Any]) -> Iterator[Env]:
    with stripe_env(settings_factory) as made:
        yield made


def subscribe(env: Env, email: str = "payer@example.com", plan: str = "basic") -> tuple[str, str]:
    """A user who bought ``plan`` through Checkout (the fake server's Pay path); returns (user id, subscription id)."""
    user_id = create_user(env.svc, email)
    price = {"basic": 999, "pro": 1999}[plan]
    session = env.stripe.sessions[_session(env, user_id, "subscription", price, {"user_id": user_id, "plan": plan})]
    env.stripe.complete_checkout(session["id"])
    assert [d.status for d in env.stripe.deliveries[-2:]] == [200, 200]
    return user_id, str(session["subscription"])


def _session(env: Env, user_id: str, mode: str, amount: int, metadata: dict[str, str]) -> str:
    """A checkout session made through the real SDK against the fake server (what StripeCheckout does)."""
    client = stripe_sdk.StripeClient("sk_test_x", base_addresses={"api": env.stripe.api_base})
    price_data: dict[str, Any] = {"currency": "usd", "unit_amount": amount, "product_data": {"name": "x"}}
    if mode == "subscription":
        price_data["recurring"] = {"interval": "month"}
    params: dict[str, Any] = {
        "mode": mode,
        "line_items": [{"quantity": 1, "price_data": price_data}],
        "success_url": "http://testserver/billing?checkout=success&session_id={CHECKOUT_SESSION_ID}",
        "client_reference_id": user_id,
        "metadata": metadata,
    }
    if mode == "subscription":
        params["subscription_data"] = {"metadata": metadata}
    return str(client.v1.checkout.sessions.create(params).id)  # type: ignore[arg-type]


def pack(user_id: str) -> dict[str, str]:
    return {"user_id": user_id, "credit_pack": "credits-500", "credits": "500"}


def account(svc: Services, user_id: str) -> BillingAccount:
    with svc.db.session() as session:
        row = session.get_one(BillingAccount, user_id)
        session.expunge(row)
        return row


def mails(svc: Services) -> list[Any]:
    svc.outbox.flush()
    mailer = svc.outbox.mailer
    assert isinstance(mailer, ConsoleMailer)
    return list(mailer.sent)


def test_a_signed_subscription_checkout_moves_the_user_to_the_plan(env: Env) -> None:
    user_id, sub_id = subscribe(env)
    summary = env.svc.billing.summary(user_id)
    assert summary.plan.slug == "basic" and summary.subscription.status == "active"
    assert summary.subscription.manageable and summary.balance == 1000  # basic's monthly grant
    acct = account(env.svc, user_id)
    assert acct.stripe_subscription_id == sub_id and acct.stripe_customer_id is not None
    assert acct.subscription_period_end is not None
    payments = env.svc.billing.payments(user_id).items
    assert [(p.kind, p.status, p.amount_cents, p.plan_slug) for p in payments] == [
        ("subscription", "paid", 999, "basic")
    ]
    assert payments[0].receipt_url and payments[0].receipt_url.startswith(env.stripe.url)
    assert any(m.kind == "subscription_started" and m.to == "payer@example.com" for m in mails(env.svc))


def test_bad_missing_and_stale_signatures_are_400_and_change_nothing(env: Env) -> None:
    user_id = create_user(env.svc, "x@example.com")
    price = env.stripe.price_of(_basic_item())
    sub = env.stripe.create_subscription("cus_x", price, 1, {"user_id": user_id, "plan": "basic"})
    event = env.stripe.event("customer.subscription.updated", sub)
    for attempt in (
        {"secret": "whsec_wrong"},
        {"signature_header": ""},
        {"signature_header": "t=1,v1=00"},
        {"timestamp": int(time.time()) - 3600},  # beyond the 300 s tolerance
    ):
        delivery = env.stripe.send(event, **attempt)  # type: ignore[arg-type]
        assert delivery.status == 400, attempt
        assert json.loads(delivery.body)["error"]["code"] == "invalid_signature"
    tampered = json.dumps(event).encode()
    header = env.stripe.sign(tampered)
    assert env.stripe.send(tampered.replace(b'"active"', b'"canceled"'), signature_header=header).status == 400
    with env.svc.db.session() as session:
        assert session.scalar(select(func.count()).select_from(StripeEvent)) == 0
    assert env.svc.billing.summary(user_id).plan.slug == "free"
    # The same event, signed properly, goes through.
    assert env.stripe.send(event).status == 200
    assert env.svc.billing.summary(user_id).plan.slug == "basic"


def test_a_replayed_event_is_applied_once(env: Env) -> None:
    user_id = create_user(env.svc, "buyer@example.com")
    session_id = _session(env, user_id, "payment", 500, pack(user_id))
    env.stripe.complete_checkout(session_id)
    first = env.stripe.deliveries[-1]
    assert json.loads(first.body)["outcome"] == "applied"
    balance = env.svc.billing.summary(user_id).balance
    for _ in range(3):  # Stripe retries, re-signed with a fresh timestamp each time
        again = env.stripe.send(first.event)
        assert again.status == 200 and json.loads(again.body)["outcome"] == "duplicate"
    assert env.svc.billing.summary(user_id).balance == balance
    assert len(env.svc.billing.payments(user_id).items) == 1
    assert [m.kind for m in mails(env.svc)].count("credits_purchased") == 1


def test_an_older_subscription_update_arriving_late_does_not_regress(env: Env) -> None:
    user_id, sub_id = subscribe(env)
    env.stripe.add_price("price_pro", 1999)
    with env.svc.db.session() as session:
        from studiolo.domain.billing.models import Plan

        session.get_one(Plan, "pro").stripe_price_id = "price_pro"
    older = env.stripe.update_subscription(sub_id, send=False, status="past_due")
    newer = env.stripe.update_subscription(sub_id, send=False, status="active", price="price_pro")
    now = int(time.time())
    assert env.stripe.emit("customer.subscription.updated", newer, created=now + 5).status == 200
    assert env.svc.billing.summary(user_id).plan.slug == "pro"
    late = env.stripe.emit("customer.subscription.updated", older, created=now + 1)
    assert late.status == 200 and json.loads(late.body)["outcome"] == "ignored"
    acct = account(env.svc, user_id)
    assert (acct.plan_slug, acct.subscription_status) == ("pro", "active")


def test_unknown_event_types_are_acknowledged_and_ignored(env: Env) -> None:
    delivery = env.stripe.emit("customer.tax_id.created", {"id": "txi_1", "object": "tax_id"})
    assert delivery.status == 200 and json.loads(delivery.body)["outcome"] == "ignored"


def test_invoices_make_the_payment_history_and_renewals_start_a_new_month(env: Env) -> None:
    user_id, sub_id = subscribe(env)
    anchor = account(env.svc, user_id).anchor_at
    invoice = env.stripe.renew(sub_id)
    acct = account(env.svc, user_id)
    assert acct.anchor_at > anchor and acct.subscription_status == "active"
    history = env.svc.billing.payments(user_id).items
    assert len(history) == 2 and {p.status for p in history} == {"paid"}
    assert history[0].receipt_url == invoice["hosted_invoice_url"]
    # The older invoice arriving again (a new event id) does not move the month back.
    first_invoice = next(i for i in env.stripe.invoices.values() if i["billing_reason"] == "subscription_create")
    assert env.stripe.emit("invoice.paid", first_invoice).status == 200
    assert account(env.svc, user_id).anchor_at == acct.anchor_at


def test_a_failed_renewal_keeps_the_plan_until_stripe_gives_up(env: Env) -> None:
    user_id, sub_id = subscribe(env)
    env.stripe.fail_renewal(sub_id)
    acct = account(env.svc, user_id)
    assert (acct.plan_slug, acct.subscription_status) == ("basic", "past_due")  # the grace period
    failed = [p for p in env.svc.billing.payments(user_id).items if p.status == "failed"]
    assert len(failed) == 1 and failed[0].amount_cents == 999
    notice = [m for m in mails(env.svc) if m.kind == "payment_failed"]
    assert len(notice) == 1 and "/billing" in notice[0].text
    env.stripe.cancel_subscription(sub_id)  # Stripe's retries ran out
    acct = account(env.svc, user_id)
    assert (acct.plan_slug, acct.subscription_status) == ("free", "canceled")


def test_unpaid_after_the_retries_downgrades(env: Env) -> None:
    user_id, sub_id = subscribe(env)
    env.stripe.fail_renewal(sub_id)
    env.stripe.update_subscription(sub_id, status="unpaid")
    acct = account(env.svc, user_id)
    assert (acct.plan_slug, acct.subscription_status) == ("free", "unpaid")


def test_a_refund_takes_the_credits_back_never_below_zero(env: Env) -> None:
    user_id = create_user(env.svc, "refund@example.com")
    session_id = _session(env, user_id, "payment", 500, pack(user_id))
    env.stripe.complete_checkout(session_id)
    start = env.svc.billing.summary(user_id).balance  # free grant + 500
    charge = env.stripe.charge_for(env.stripe.sessions[session_id]["payment_intent"])
    payment = env.svc.billing.payments(user_id).items[0]
    assert payment.kind == "credits" and payment.credits == 500 and payment.receipt_url == charge["receipt_url"]
    env.stripe.refund(charge["id"], amount=100)  # a fifth of the money back: a fifth of the credits
    assert env.svc.billing.summary(user_id).balance == start - 100
    assert env.svc.billing.payments(user_id).items[0].status == "partially_refunded"
    # The user spends most of what is left, then the rest is refunded: taken back down to zero, not below.
    from studiolo.domain.accounts.audit import Origin

    spend = env.svc.billing.summary(user_id).balance - 50
    env.svc.billing.adjust_credits(user_id, -spend, reason="spent", actor_id=None, origin=Origin())
    delivery = env.stripe.refund(charge["id"])
    assert delivery["refunded"] is True
    summary = env.svc.billing.summary(user_id)
    assert summary.balance == 0
    paid = env.svc.billing.payments(user_id).items[0]
    assert (paid.status, paid.refunded_cents) == ("refunded", 500)
    assert env.stripe.send(env.stripe.deliveries[-1].event).status == 200  # a replay takes nothing more
    assert env.svc.billing.summary(user_id).balance == 0


def test_invoice_paid_before_checkout_completed_still_provisions(env: Env) -> None:
    user_id = create_user(env.svc, "early@example.com")
    session_id = _session(env, user_id, "subscription", 999, {"user_id": user_id, "plan": "basic"})
    env.stripe.deliver, real = (lambda url, body, headers: (200, "held back")), env.stripe.deliver
    env.stripe.complete_checkout(session_id)
    completed, paid = env.stripe.deliveries[-2:]
    env.stripe.deliver = real
    assert env.stripe.send(paid.event).status == 200  # Stripe does not promise an order
    assert env.svc.billing.summary(user_id).plan.slug == "basic"
    assert env.stripe.send(completed.event).status == 200
    acct = account(env.svc, user_id)
    assert (acct.plan_slug, acct.subscription_status) == ("basic", "active")
    assert env.svc.billing.summary(user_id).balance == 1000  # the grant once, not twice


def test_the_real_sdk_verifies_our_signed_payloads() -> None:
    """construct_event (the SDK's check, the one the route uses) accepts the fake server's signatures and refuses
    tampering, the wrong secret and an old timestamp."""
    server = StripeServer(webhook_secret=SECRET)  # signing needs no running server
    payload = json.dumps(server.event("invoice.paid", {"id": "in_1", "object": "invoice"})).encode()
    header = server.sign(payload)
    assert stripe_sdk.Webhook.construct_event(payload, header, SECRET, 300).type == "invoice.paid"
    with pytest.raises(stripe_sdk.SignatureVerificationError):
        stripe_sdk.Webhook.construct_event(payload + b" ", header, SECRET, 300)
    with pytest.raises(stripe_sdk.SignatureVerificationError):
        stripe_sdk.Webhook.construct_event(payload, header, "whsec_other", 300)
    with pytest.raises(stripe_sdk.SignatureVerificationError):
        stripe_sdk.Webhook.construct_event(payload, server.sign(payload, timestamp=int(time.time()) - 301), SECRET, 300)


def _basic_item() -> dict[str, Any]:
    return {"price_data": {"currency": "usd", "unit_amount": 999, "recurring": {"interval": "month"}}}


def test_two_deliveries_of_one_event_at_once_apply_it_once(env: Env) -> None:
    """Both deliveries pass the "seen?" check before either commits; the event id's key makes the second a no-op."""
    user_id = create_user(env.svc, "race@example.com")
    session_id = _session(env, user_id, "payment", 500, pack(user_id))
    env.stripe.deliver, real = (lambda url, body, headers: (200, "held back")), env.stripe.deliver
    env.stripe.complete_checkout(session_id)
    event = env.stripe.deliveries[-1].event
    env.stripe.deliver = real
    before = env.svc.billing.summary(user_id).balance
    answers: list[str] = []

    def deliver() -> None:
        delivery = env.stripe.send(event)
        assert delivery.status == 200, delivery.body
        answers.append(json.loads(delivery.body)["outcome"])

    with writes_meet(env.svc.db, "INSERT INTO stripe_events", 2):  # SQLite serialises writes: the barrier breaks
        assert in_threads(2, deliver) == [None, None]
    assert sorted(answers) == ["applied", "duplicate"]
    assert env.svc.billing.summary(user_id).balance == before + 500
    assert len(env.svc.billing.payments(user_id).items) == 1


def test_a_delayed_payment_grants_credits_only_once_paid(env: Env) -> None:
    user_id = create_user(env.svc, "sepa@example.com")
    session_id = _session(env, user_id, "payment", 500, pack(user_id))
    env.stripe.deliver, real = (lambda url, body, headers: (200, "held back")), env.stripe.deliver
    env.stripe.complete_checkout(session_id)
    env.stripe.deliver = real
    session = dict(env.stripe.deliveries[-1].event["data"]["object"])
    before = env.svc.billing.summary(user_id).balance
    pending = env.stripe.emit("checkout.session.completed", {**session, "payment_status": "unpaid"})
    assert json.loads(pending.body)["outcome"] == "ignored"
    assert env.svc.billing.summary(user_id).balance == before
    paid = env.stripe.emit("checkout.session.async_payment_succeeded", session)
    assert json.loads(paid.body)["outcome"] == "applied"
    assert env.svc.billing.summary(user_id).balance == before + 500
