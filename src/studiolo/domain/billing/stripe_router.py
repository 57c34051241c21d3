"""HTTP routes for Stripe payments: /billing/checkout, /billing/portal and Stripe's webhook (docs/billing-stripe.md).

The webhook route has no auth dependency, so no credential and no CSRF check apply (deps.py: CSRF guards
cookie-authenticated requests only); the Stripe-Signature header is its authentication. It reads the raw body:
the signature covers the bytes exactly as sent.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from studiolo.deps import OwnerId, ServicesDep
from studiolo.domain.billing.schemas import CheckoutRequest, RedirectView
from studiolo.domain.billing.stripe_gateway import StripeCheckout, StripeGateway
from studiolo.domain.billing.stripe_webhooks import StripeWebhooks, WebhookAck
from studiolo.services import Services

router = APIRouter(prefix="/billing", tags=["billing"])


class StripeServices:
    """Checkout and webhooks on one gateway (one SDK client and its connection pool), built on first use."""

    def __init__(self, services: Services):
        gateway = StripeGateway(services.settings)
        self.checkout = StripeCheckout(services.db, services.settings, services.billing, gateway)
        self.webhooks = StripeWebhooks(services.db, services.settings, services.billing, services.outbox, gateway)


async def stripe_services(request: Request, services: ServicesDep) -> StripeServices:
    built: StripeServices | None = getattr(request.app.state, "stripe_services", None)
    if built is None:
        built = StripeServices(services)
        request.app.state.stripe_services = built
    return built


StripeDep = Annotated[StripeServices, Depends(stripe_services)]


@router.post("/checkout", response_model=RedirectView)
def checkout(body: CheckoutRequest, owner_id: OwnerId, stripe: StripeDep, request: Request) -> RedirectView:
    """A Stripe Checkout page for a plan (monthly subscription) or a credit pack; the plan or credits arrive with
    Stripe's webhook once paid."""
    url = stripe.checkout.checkout(
        owner_id, plan=body.plan, credit_pack=body.credit_pack, base_url=str(request.base_url)
    )
    return RedirectView(url=url)


@router.post("/portal", response_model=RedirectView)
def portal(owner_id: OwnerId, stripe: StripeDep, request: Request) -> RedirectView:
    """The Stripe Customer Portal (cancel, switch plan, update the card, invoices); 409 no_customer before any
    payment."""
    return RedirectView(url=stripe.checkout.portal(owner_id, base_url=str(request.base_url)))


@router.post("/stripe/webhook", response_model=WebhookAck)
async def stripe_webhook(request: Request, stripe: StripeDep) -> WebhookAck:
    """Stripe's events (signed): each applied once; 400 invalid_signature when unsigned, mis-signed or stale."""
    payload = await request.body()
    signature = request.headers.get("stripe-signature")
    return await run_in_threadpool(stripe.webhooks.handle, payload, signature, base_url=str(request.base_url))
