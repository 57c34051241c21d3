"""Payments through Stripe: the gateway port, its adapter on the official SDK, and Checkout / Customer Portal.

The port (``PaymentGateway``) is what the rest of billing needs from a payment provider: start a hosted checkout,
open the customer's self-service portal, and read a subscription (or a payment's receipt) back. ``StripeGateway``
implements it with ``stripe.StripeClient``; ``STUDIOLO_STRIPE_API_BASE`` points it elsewhere (tests run a local
server speaking Stripe's API, tests/stripe_server.py). Whatever Stripe answers with an error, or a network failure,
becomes ``PaymentProviderError`` (502 payment_provider_error): never a 500 and never a half-made change on our side,
since nothing is written before Stripe has answered.

``StripeCheckout`` is the service behind ``POST /billing/checkout`` and ``POST /billing/portal``. Nothing is
granted here: plans and credits change only when Stripe's signed webhook says the payment went through
(stripe_webhooks.py), so a user who closes the checkout page has bought nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import stripe
from sqlalchemy import select
from stripe._base_address import BaseAddresses

from studiolo.db.base import new_id
from studiolo.db.session import Database
from studiolo.domain.accounts.models import User
from studiolo.domain.billing.models import BillingAccount
from studiolo.domain.billing.plans import CreditPack
from studiolo.domain.billing.schemas import PlanView
from studiolo.domain.billing.service import BillingService
from studiolo.errors import Conflict, InvalidInput, PaymentProviderError
from studiolo.settings import Settings

log = logging.getLogger(__name__)

# A subscription in one of these states is the user's current one: a second checkout would bill them twice.
LIVE_STATUSES = frozenset({"active", "trialing", "past_due"})


@dataclass(frozen=True)
class CheckoutSpec:
    """One hosted checkout: a monthly subscription to a plan, or a one-off credit pack."""

    mode: str  # "subscription" | "payment"
    user_id: str
    name: str
    amount_cents: int
    currency: str
    success_url: str
    cancel_url: str
    price_id: str | None = None  # an existing Stripe price; else the price is given inline (price_data)
    customer_id: str | None = None
    customer_email: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class PaymentGateway(Protocol):
    def create_checkout_session(self, spec: CheckoutSpec, *, idempotency_key: str) -> str:
        """Start a hosted checkout; returns the page to send the browser to."""
        ...

    def create_portal_session(self, customer_id: str, *, return_url: str) -> str:
        """Open the customer's self-service portal (cancel, switch plan, change card); returns its URL."""
        ...

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        """The subscription as the provider has it now (webhook payloads can be stale or out of order)."""
        ...

    def receipt_url(self, payment_intent_id: str) -> str | None:
        """The receipt page of a one-off payment, if the provider has one."""
        ...


class StripeGateway:
    """``PaymentGateway`` on the official SDK. Each create call carries an idempotency key, so the SDK's own retries
    after a network failure cannot open a second session."""

    def __init__(self, settings: Settings):
        base: BaseAddresses = {"api": settings.stripe_api_base} if settings.stripe_api_base else {}
        self.client = stripe.StripeClient(settings.stripe_secret_key, base_addresses=base, max_network_retries=2)

    def _call(self, what: str, call: Any) -> Any:
        try:
            return call()
        except stripe.StripeError as exc:
            # Stripe's own message for the user when it has one (a declined card); never the key or request details.
            log.warning("stripe %s failed: %s (status %s)", what, type(exc).__name__, exc.http_status)
            message = exc.user_message or "The payment provider could not complete the request; try again later."
            raise PaymentProviderError(
                message, details={"provider": "stripe", "operation": what, "provider_status": exc.http_status}
            ) from exc

    def create_checkout_session(self, spec: CheckoutSpec, *, idempotency_key: str) -> str:
        item: dict[str, Any] = {"quantity": 1}
        if spec.price_id:
            item["price"] = spec.price_id
        else:
            price_data: dict[str, Any] = {
                "currency": spec.currency,
                "unit_amount": spec.amount_cents,
                "product_data": {"name": spec.name},
            }
            if spec.mode == "subscription":
                price_data["recurring"] = {"interval": "month"}
            item["price_data"] = price_data
        params: dict[str, Any] = {
            "mode": spec.mode,
            "line_items": [item],
            "success_url": spec.success_url,
            "cancel_url": spec.cancel_url,
            "client_reference_id": spec.user_id,
            "metadata": spec.metadata,
        }
        if spec.mode == "subscription":
            # The subscription carries who and what too: its invoices and updates then name the user and plan even
            # when they arrive before checkout.session.completed.
            params["subscription_data"] = {"metadata": spec.metadata}
        if spec.customer_id:
            params["customer"] = spec.customer_id
        elif spec.customer_email:
            params["customer_email"] = spec.customer_email
        session = self._call(
            "checkout",
            lambda: self.client.v1.checkout.sessions.create(params, {"idempotency_key": idempotency_key}),  # type: ignore[arg-type]
        )
        return str(session.url)

    def create_portal_session(self, customer_id: str, *, return_url: str) -> str:
        portal = self._call(
            "portal",
            lambda: self.client.v1.billing_portal.sessions.create(
                {"customer": customer_id, "return_url": return_url}, {"idempotency_key": new_id()}
            ),
        )
        return str(portal.url)

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        sub = self._call("retrieve_subscription", lambda: self.client.v1.subscriptions.retrieve(subscription_id))
        result: dict[str, Any] = sub.to_dict()
        return result

    def receipt_url(self, payment_intent_id: str) -> str | None:
        try:
            intent = self._call(
                "retrieve_payment_intent",
                lambda: self.client.v1.payment_intents.retrieve(payment_intent_id, {"expand": ["latest_charge"]}),
            ).to_dict()
        except PaymentProviderError:
            return None  # a missing receipt link is not worth failing the payment's webhook over
        charge = intent.get("latest_charge")
        return charge.get("receipt_url") if isinstance(charge, dict) else None


class StripeCheckout:
    """``POST /billing/checkout`` and ``POST /billing/portal``: the checks, then one call to the gateway."""

    def __init__(self, db: Database, settings: Settings, billing: BillingService, gateway: PaymentGateway):
        self.db = db
        self.settings = settings
        self.billing = billing
        self.gateway = gateway

    def _require_stripe(self) -> None:
        if self.settings.billing != "stripe":
            raise Conflict(
                "Payments are not enabled on this server (STUDIOLO_BILLING is not 'stripe').",
                code="billing_not_stripe",
                details={"mode": self.settings.billing},
            )

    def _account(self, user_id: str) -> tuple[BillingAccount | None, str]:
        with self.db.session() as session:
            email = session.scalar(select(User.email).where(User.id == user_id)) or ""
            account = session.get(BillingAccount, user_id)
            if account is not None:
                session.expunge(account)
            return account, email

    def checkout(self, user_id: str, *, plan: str | None, credit_pack: str | None, base_url: str) -> str:
        """A Stripe Checkout page for a plan (a monthly subscription) or a credit pack (a one-off payment)."""
        self._require_stripe()
        if (plan is None) == (credit_pack is None):
            raise InvalidInput("Give either 'plan' or 'credit_pack'.", code="invalid_input", details={"field": "plan"})
        account, email = self._account(user_id)
        base = (self.settings.public_url or base_url).rstrip("/")
        customer_id = account.stripe_customer_id if account else None
        common: dict[str, Any] = {
            "user_id": user_id,
            "success_url": f"{base}/billing?checkout=success&session_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": f"{base}/pricing?checkout=canceled",
            "customer_id": customer_id,
            "customer_email": None if customer_id else (email or None),
        }
        item: PlanView | CreditPack
        if plan is not None:
            item = self._plan_to_sell(account, plan)
            mode, metadata = "subscription", {"user_id": user_id, "plan": plan}
        else:
            assert credit_pack is not None
            item = self.billing.credit_pack(credit_pack)  # 404 credit_pack_not_found
            mode, metadata = "payment", {"user_id": user_id, "credit_pack": item.slug, "credits": str(item.credits)}
        spec = CheckoutSpec(
            mode=mode,
            name=f"Studiolo {item.name or item.slug}",
            amount_cents=item.price_cents,
            currency=item.currency,
            price_id=item.stripe_price_id,
            metadata=metadata,
            **common,
        )
        # A fresh key per request: it guards against the SDK's retries of this one call, not against a user who
        # deliberately starts a second checkout (that one opens a second page; only a completed one is charged).
        return self.gateway.create_checkout_session(spec, idempotency_key=f"studiolo-checkout-{new_id()}")

    def _plan_to_sell(self, account: BillingAccount | None, plan: str) -> PlanView:
        view = self.billing.get_plan(plan)  # 404 plan_not_found
        if view.retired:
            raise Conflict(f"The plan '{plan}' is no longer offered.", code="plan_retired", details={"plan": plan})
        if view.price_cents == 0 and not view.stripe_price_id:
            raise InvalidInput(f"The plan '{plan}' is free.", code="plan_is_free", details={"plan": plan})
        current = account.plan_slug if account else self.settings.billing_default_plan
        if current == plan:
            raise Conflict(f"You are on the plan '{plan}' already.", code="already_on_plan", details={"plan": plan})
        if account is not None and account.subscription_status in LIVE_STATUSES:
            raise Conflict(
                "You have a subscription already: change its plan from the customer portal (Manage subscription).",
                code="subscription_exists",
                details={"plan": account.plan_slug, "status": account.subscription_status},
            )
        return view

    def portal(self, user_id: str, *, base_url: str) -> str:
        """The Stripe Customer Portal for the user's customer record (409 no_customer before any payment)."""
        self._require_stripe()
        account, _ = self._account(user_id)
        if account is None or not account.stripe_customer_id:
            raise Conflict(
                "There is no subscription or payment to manage yet: buy a plan or credits first.", code="no_customer"
            )
        base = (self.settings.public_url or base_url).rstrip("/")
        return self.gateway.create_portal_session(account.stripe_customer_id, return_url=f"{base}/billing")
