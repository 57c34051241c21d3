"""Stripe's webhooks applied to billing: each signed event exactly once, out of order without regressing.

``POST /billing/stripe/webhook`` hands the raw body and the ``Stripe-Signature`` header here. The signature is checked
with the SDK's own ``stripe.Webhook.construct_event`` (HMAC-SHA256 of ``"{t}.{body}"`` with the endpoint secret,
timestamp within ``STUDIOLO_STRIPE_WEBHOOK_TOLERANCE_SECONDS``); anything else is 400 invalid_signature and changes
nothing.

Exactly once: the event id goes into ``stripe_events`` in the same transaction as the change it makes, so a replay
(Stripe delivers at least once, and retries) finds it and is a 200 no-op; two deliveries racing each other meet on
the primary key and the loser answers 200 too. Order: Stripe does not promise any. Subscription state is applied
only from an event at least as new as the last one applied (``BillingAccount.subscription_event_at``), and
``checkout.session.completed`` reads the subscription back from Stripe's API rather than trusting the snapshot.
Invoices move the plan's period only forwards (their period end against the stored one). docs/billing-stripe.md
has the per-event behaviour.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import stripe
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts.mail import Mail, MailOutbox
from studiolo.domain.accounts.models import User
from studiolo.domain.billing.ledger import lock_account
from studiolo.domain.billing.models import BillingAccount, Payment, Plan, StripeEvent
from studiolo.domain.billing.service import BillingService
from studiolo.domain.billing.stripe_gateway import LIVE_STATUSES, PaymentGateway
from studiolo.errors import Conflict, StudioloError
from studiolo.settings import Settings

log = logging.getLogger(__name__)

# Stripe gave up on the subscription (after its own retries and grace period) or it ended: back to the default plan.
# past_due keeps the plan: Stripe is still retrying the card (the grace period).
ENDED_STATUSES = frozenset({"canceled", "unpaid", "incomplete_expired", "paused"})

Outcome = Literal["applied", "duplicate", "ignored"]


class WebhookAck(BaseModel):
    """The answer Stripe gets (any 2xx is success to it; the body helps whoever reads the delivery log)."""

    received: bool = True
    event_id: str
    type: str
    outcome: Outcome


@dataclass
class _Event:
    id: str
    type: str
    obj: dict[str, Any]
    created: datetime
    now: datetime
    base_url: str
    fetched: dict[str, Any] = field(default_factory=dict)  # what was read from Stripe's API before the transaction
    mails: list[Mail] = field(default_factory=list)


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _subscription_period(sub: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """(start, end) of the current period: on the first item since API 2025-03-31, on the subscription before."""
    items = (sub.get("items") or {}).get("data") or [{}]
    start = items[0].get("current_period_start") or sub.get("current_period_start")
    end = items[0].get("current_period_end") or sub.get("current_period_end")
    return _ts(start), _ts(end)


def _invoice_subscription(inv: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The invoice's subscription id and that subscription's metadata (``parent`` since API 2025-03-31)."""
    details = (inv.get("parent") or {}).get("subscription_details") or {}
    sub = details.get("subscription") or inv.get("subscription")
    metadata = details.get("metadata") or inv.get("subscription_details", {}).get("metadata") or {}
    return (sub if isinstance(sub, str) else (sub or {}).get("id")), metadata


def _invoice_line(inv: dict[str, Any]) -> dict[str, Any]:
    lines = (inv.get("lines") or {}).get("data") or [{}]
    first: dict[str, Any] = lines[0]
    return first


def _line_price(line: dict[str, Any]) -> str | None:
    price = line.get("price") or ((line.get("pricing") or {}).get("price_details") or {}).get("price")
    return price if isinstance(price, str) or price is None else price.get("id")


class StripeWebhooks:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        billing: BillingService,
        outbox: MailOutbox,
        gateway: PaymentGateway,
    ):
        self.db = db
        self.settings = settings
        self.billing = billing
        self.outbox = outbox
        self.gateway = gateway
        self._handlers: dict[str, Callable[[Session, _Event], Outcome]] = {
            "checkout.session.completed": self._checkout_completed,
            # A delayed payment method (a bank debit) completes the session unpaid; this follows once it is paid.
            "checkout.session.async_payment_succeeded": self._checkout_completed,
            "invoice.paid": self._invoice_paid,
            "invoice.payment_failed": self._invoice_failed,
            "customer.subscription.created": self._subscription_updated,
            "customer.subscription.updated": self._subscription_updated,
            "customer.subscription.deleted": self._subscription_deleted,
            "charge.refunded": self._charge_refunded,
        }

    def verify(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """The event in ``payload`` if Stripe signed it with our secret recently enough; else 400 invalid_signature."""
        try:
            stripe.Webhook.construct_event(
                payload,
                signature or "",
                self.settings.stripe_webhook_secret,
                self.settings.stripe_webhook_tolerance_seconds,
            )
            event: dict[str, Any] = json.loads(payload)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            # ValueError: not JSON, or not UTF-8. The reason stays in our log; the caller learns only "invalid".
            log.warning("rejected a Stripe webhook: %s", exc)
            raise StudioloError(
                "The Stripe-Signature header is missing, wrong or too old.", code="invalid_signature"
            ) from exc
        if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event.get("type"):
            raise StudioloError("Not a Stripe event.", code="invalid_signature")
        return event

    def handle(self, payload: bytes, signature: str | None, *, base_url: str) -> WebhookAck:
        event = self.verify(payload, signature)
        event_id, event_type = str(event["id"]), str(event["type"])
        handler = self._handlers.get(event_type)
        if handler is None:
            return WebhookAck(event_id=event_id, type=event_type, outcome="ignored")
        if self._seen(event_id):
            return WebhookAck(event_id=event_id, type=event_type, outcome="duplicate")
        ctx = _Event(
            id=event_id,
            type=event_type,
            obj=(event.get("data") or {}).get("object") or {},
            created=_ts(event.get("created")) or utcnow(),
            now=utcnow(),
            base_url=(self.settings.public_url or base_url).rstrip("/"),
        )
        # Network calls before the transaction: no account row stays locked while Stripe answers. A failure is a
        # 502, and Stripe delivers the event again later.
        self._fetch(ctx)
        try:
            with self.db.session() as session:
                if session.get(StripeEvent, event_id) is not None:
                    return WebhookAck(event_id=event_id, type=event_type, outcome="duplicate")
                session.add(StripeEvent(id=event_id, type=event_type, created_at=ctx.created, processed_at=ctx.now))
                session.flush()  # a concurrent delivery of the same event waits here, then fails on the key
                outcome = handler(session, ctx)
        except IntegrityError as exc:
            if self._seen(event_id):
                return WebhookAck(event_id=event_id, type=event_type, outcome="duplicate")
            # Another event about the same object (an invoice paid and failed at once) wrote its row first: nothing
            # of this one was kept, and Stripe's next delivery applies it on top.
            raise Conflict("A concurrent event changed the same record; deliver again.", code="retry_later") from exc
        for mail in ctx.mails:  # only once the change is committed
            self.outbox.send(mail)
        log.info("stripe event %s (%s): %s", event_id, event_type, outcome)
        return WebhookAck(event_id=event_id, type=event_type, outcome=outcome)

    def _seen(self, event_id: str) -> bool:
        with self.db.session() as session:
            return session.get(StripeEvent, event_id) is not None

    def _fetch(self, ctx: _Event) -> None:
        obj = ctx.obj
        if not ctx.type.startswith("checkout.session."):
            return
        if obj.get("mode") == "subscription" and obj.get("subscription"):
            sub_id = obj["subscription"] if isinstance(obj["subscription"], str) else obj["subscription"]["id"]
            ctx.fetched["subscription"] = self.gateway.retrieve_subscription(sub_id)
        elif obj.get("mode") == "payment" and isinstance(obj.get("payment_intent"), str):
            ctx.fetched["receipt_url"] = self.gateway.receipt_url(obj["payment_intent"])

    # -- who and what --------------------------------------------------------------------------------------------
    def _user(self, session: Session, customer: Any, *candidates: Any) -> str | None:
        """Our user: the id we put on the checkout (client_reference_id, metadata) or the linked Stripe customer."""
        for candidate in candidates:
            if isinstance(candidate, str) and candidate and session.get(User, candidate) is not None:
                return candidate
        if isinstance(customer, str) and customer:
            return session.scalar(select(BillingAccount.user_id).where(BillingAccount.stripe_customer_id == customer))
        return None

    def _account(self, session: Session, user_id: str, customer: Any, now: datetime) -> BillingAccount:
        account = lock_account(session, user_id, self.settings.billing_default_plan, now)
        if isinstance(customer, str) and customer and account.stripe_customer_id is None:
            taken = session.scalar(select(BillingAccount.user_id).where(BillingAccount.stripe_customer_id == customer))
            if taken is None:
                account.stripe_customer_id = customer
            else:
                log.warning("stripe customer %s is linked to another user; not linking it to %s", customer, user_id)
        return account

    def _plan_for(self, session: Session, price_id: str | None, metadata: dict[str, Any]) -> str | None:
        """The plan a Stripe price stands for (a plan's stripe_price_id), else the plan our checkout named."""
        if price_id:
            slug = session.scalar(select(Plan.slug).where(Plan.stripe_price_id == price_id))
            if slug:
                return slug
        named = metadata.get("plan")
        return named if isinstance(named, str) and session.get(Plan, named) is not None else None

    def _plan_name(self, session: Session, slug: str) -> str:
        plan = session.get(Plan, slug)
        return plan.name if plan is not None else slug

    def _mail(self, ctx: _Event, session: Session, user_id: str, kind: str, subject: str, text: str) -> None:
        email = session.scalar(select(User.email).where(User.id == user_id))
        if email:
            ctx.mails.append(Mail(to=email, kind=kind, subject=subject, text=text))

    def _payment(self, session: Session, object_id: str, **values: Any) -> Payment:
        """The payment row for a Stripe object (an invoice, a payment intent), made or updated."""
        payment = session.scalar(select(Payment).where(Payment.stripe_object_id == object_id))
        if payment is None:
            payment = Payment(stripe_object_id=object_id, **values)
            session.add(payment)
        else:
            for name, value in values.items():
                setattr(payment, name, value)
        session.flush()
        return payment

    # -- subscriptions ------------------------------------------------------------------------------------------
    def _apply_subscription(
        self, session: Session, ctx: _Event, account: BillingAccount, sub: dict[str, Any], *, current: bool
    ) -> Outcome:
        """Bring the account in line with ``sub``. ``current``: read from the API just now, so newer than any event
        (else a webhook snapshot, applied only if at least as new as the last one applied)."""
        last = account.subscription_event_at
        if not current and last is not None and ctx.created < last:
            return "ignored"  # older news than what the account already reflects
        status = str(sub.get("status") or "")
        if account.stripe_subscription_id not in (None, sub.get("id")) and status not in LIVE_STATUSES:
            return "ignored"  # the end of an older subscription; the user has a newer one
        start, end = _subscription_period(sub)
        items = (sub.get("items") or {}).get("data") or [{}]
        price = items[0].get("price") or {}
        price_id = price if isinstance(price, str) else price.get("id")
        if status in ("active", "trialing"):
            slug = self._plan_for(session, price_id, sub.get("metadata") or {})
            if slug is not None:
                self.billing.set_plan(session, account.user_id, slug, now=ctx.now, anchor=start, allow_retired=True)
        elif status in ENDED_STATUSES:
            self.billing.set_plan(session, account.user_id, self.settings.billing_default_plan, now=ctx.now)
        account.stripe_subscription_id = str(sub.get("id"))
        account.subscription_status = status
        account.cancel_at_period_end = bool(sub.get("cancel_at_period_end"))
        account.subscription_period_end = end
        account.subscription_event_at = max(ctx.created, last) if last else ctx.created
        return "applied"

    def _checkout_completed(self, session: Session, ctx: _Event) -> Outcome:
        obj = ctx.obj
        metadata = obj.get("metadata") or {}
        user_id = self._user(session, obj.get("customer"), obj.get("client_reference_id"), metadata.get("user_id"))
        if user_id is None or obj.get("payment_status") not in ("paid", "no_payment_required"):
            return "ignored"  # not ours, or an asynchronous payment still pending (its own event follows)
        account = self._account(session, user_id, obj.get("customer"), ctx.now)
        if obj.get("mode") == "subscription":
            sub = ctx.fetched.get("subscription")
            if sub is None:
                return "ignored"
            self._apply_subscription(session, ctx, account, sub, current=True)
            plan_name = self._plan_name(session, account.plan_slug)
            self._mail(
                ctx,
                session,
                user_id,
                "subscription_started",
                f"Your Studiolo {plan_name} plan is active",
                f"Thank you: your {plan_name} subscription has started.\n\n"
                f"Plan, usage, invoices and receipts: {ctx.base_url}/billing",
            )
            return "applied"
        credits = int(metadata.get("credits") or 0)
        if obj.get("mode") != "payment" or credits <= 0:
            return "ignored"
        amount = int(obj.get("amount_total") or 0)
        payment = self._payment(
            session,
            str(obj.get("payment_intent") or obj["id"]),
            user_id=user_id,
            kind="credits",
            amount_cents=amount,
            currency=str(obj.get("currency") or "usd"),
            status="paid",
            description=f"{credits:,} credits",
            receipt_url=ctx.fetched.get("receipt_url"),
            credits=credits,
            details={"checkout_session": obj["id"], "credit_pack": metadata.get("credit_pack")},
        )
        added = self.billing.add_credits(
            session,
            user_id,
            credits,
            kind="purchase",
            key=f"purchase:{obj['id']}",
            reason=f"Bought {credits:,} credits.",
            payment_id=payment.id,
            now=ctx.now,
        )
        if added:
            self._mail(
                ctx,
                session,
                user_id,
                "credits_purchased",
                "Your Studiolo credits are ready",
                f"Thank you: {credits:,} credits were added to your balance.\n\n"
                f"Balance, receipts and history: {ctx.base_url}/billing",
            )
        return "applied"

    def _subscription_account(self, session: Session, ctx: _Event) -> BillingAccount | None:
        sub = ctx.obj
        user_id = self._user(session, sub.get("customer"), (sub.get("metadata") or {}).get("user_id"))
        return None if user_id is None else self._account(session, user_id, sub.get("customer"), ctx.now)

    def _subscription_updated(self, session: Session, ctx: _Event) -> Outcome:
        account = self._subscription_account(session, ctx)
        return "ignored" if account is None else self._apply_subscription(session, ctx, account, ctx.obj, current=False)

    def _subscription_deleted(self, session: Session, ctx: _Event) -> Outcome:
        account = self._subscription_account(session, ctx)
        if account is None or account.stripe_subscription_id not in (None, ctx.obj.get("id")):
            return "ignored"  # not ours, or an older subscription ended and the current one stays
        self.billing.set_plan(session, account.user_id, self.settings.billing_default_plan, now=ctx.now)
        account.stripe_subscription_id = str(ctx.obj.get("id"))
        account.subscription_status = "canceled"
        account.cancel_at_period_end = False
        last = account.subscription_event_at
        account.subscription_event_at = max(ctx.created, last) if last else ctx.created
        return "applied"

    # -- invoices and charges -----------------------------------------------------------------------------------
    def _invoice_user(self, session: Session, inv: dict[str, Any]) -> tuple[str | None, str | None, dict[str, Any]]:
        sub_id, metadata = _invoice_subscription(inv)
        user_id = self._user(session, inv.get("customer"), metadata.get("user_id"))
        return user_id, sub_id, metadata

    def _invoice_paid(self, session: Session, ctx: _Event) -> Outcome:
        inv = ctx.obj
        user_id, sub_id, metadata = self._invoice_user(session, inv)
        if user_id is None:
            return "ignored"
        account = self._account(session, user_id, inv.get("customer"), ctx.now)
        line = _invoice_line(inv)
        period = line.get("period") or {}
        start, end = _ts(period.get("start")), _ts(period.get("end"))
        slug = self._plan_for(session, _line_price(line), metadata)
        same_sub = account.stripe_subscription_id in (None, sub_id)
        ended = account.stripe_subscription_id == sub_id and account.subscription_status == "canceled"
        newer = account.subscription_period_end is None or (end is not None and end >= account.subscription_period_end)
        if sub_id and same_sub and not ended and newer:
            if slug is not None:
                # A paid period: the plan's month starts with it (a fresh quota and credit grant, once per period).
                self.billing.set_plan(session, user_id, slug, now=ctx.now, anchor=start, allow_retired=True)
            account.stripe_subscription_id = sub_id
            account.subscription_status = "active"
            account.subscription_period_end = end
        plan_name = self._plan_name(session, slug) if slug else "Studiolo"
        period_text = f", {start:%Y-%m-%d} to {end:%Y-%m-%d}" if start and end else ""
        self._invoice_payment(session, inv, user_id, sub_id, slug, "paid", f"{plan_name} plan{period_text}")
        return "applied"

    def _invoice_payment(
        self,
        session: Session,
        inv: dict[str, Any],
        user_id: str,
        sub_id: str | None,
        slug: str | None,
        status: str,
        description: str,
    ) -> None:
        """The payment history row of an invoice (one per invoice: a failed one becomes paid when a retry works)."""
        self._payment(
            session,
            str(inv["id"]),
            user_id=user_id,
            kind="subscription",
            amount_cents=int(inv.get("amount_paid" if status == "paid" else "amount_due") or 0),
            currency=str(inv.get("currency") or "usd"),
            status=status,
            description=description,
            receipt_url=inv.get("hosted_invoice_url"),
            plan_slug=slug,
            details={"subscription": sub_id, "billing_reason": inv.get("billing_reason")},
        )

    def _invoice_failed(self, session: Session, ctx: _Event) -> Outcome:
        inv = ctx.obj
        user_id, sub_id, metadata = self._invoice_user(session, inv)
        if user_id is None:
            return "ignored"
        account = self._account(session, user_id, inv.get("customer"), ctx.now)
        if sub_id and account.stripe_subscription_id in (None, sub_id) and account.subscription_status != "canceled":
            # Stripe retries the card for a while (its grace period): the plan stays until it reports unpaid/canceled.
            account.stripe_subscription_id = sub_id
            account.subscription_status = "past_due"
        existing = session.scalar(select(Payment.status).where(Payment.stripe_object_id == str(inv["id"])))
        if existing != "paid":  # a retry that succeeded first wins
            slug = self._plan_for(session, _line_price(_invoice_line(inv)), metadata)
            self._invoice_payment(session, inv, user_id, sub_id, slug, "failed", "Renewal payment failed")
        self._mail(
            ctx,
            session,
            user_id,
            "payment_failed",
            "Your Studiolo payment failed",
            "We could not charge your card for your Studiolo subscription. Stripe will try again over the next days; "
            "your plan stays until then.\n\n"
            f"Update your card with 'Manage subscription' on {ctx.base_url}/billing",
        )
        return "applied"

    def _charge_refunded(self, session: Session, ctx: _Event) -> Outcome:
        charge = ctx.obj
        ids = [i for i in (charge.get("payment_intent"), charge.get("id")) if isinstance(i, str) and i]
        payment = session.scalar(select(Payment).where(Payment.stripe_object_id.in_(ids))) if ids else None
        if payment is None:
            return "ignored"  # a charge we did not record (e.g. a subscription invoice's, paid through an invoice)
        refunded = int(charge.get("amount_refunded") or 0)
        full = bool(charge.get("refunded")) or refunded >= payment.amount_cents
        payment.refunded_cents = refunded
        payment.status = "refunded" if full else "partially_refunded"
        if charge.get("receipt_url") and not payment.receipt_url:
            payment.receipt_url = charge["receipt_url"]
        if payment.kind == "credits" and payment.credits > 0 and payment.amount_cents > 0:
            # Credits back in proportion to the money back; those already spent are not chased (clamped at 0).
            target = payment.credits if full else payment.credits * refunded // payment.amount_cents
            already = int((payment.details or {}).get("credits_refunded", 0))
            if target > already:
                self.billing.add_credits(
                    session,
                    payment.user_id,
                    -(target - already),
                    kind="refund",
                    key=f"refund:{charge.get('id')}:{refunded}",
                    reason=f"Payment refunded: {target - already:,} credits taken back.",
                    payment_id=payment.id,
                    now=ctx.now,
                )
                payment.details = {**(payment.details or {}), "credits_refunded": target}
        return "applied"
