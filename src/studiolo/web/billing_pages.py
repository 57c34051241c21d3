"""The billing pages: /pricing (the plan catalogue), /billing (a user's plan, usage, credits, ledger and payments),
and the administrators' side: /admin/plans (the catalogue's editor) and /admin/users/{id} (a user's plan, credits
and ledger). Rendered from BillingService like the API's answers; the buttons (checkout, portal, assign, grant,
plan edits) call the JSON routes from static/js/billing.js and admin-billing.js.

With billing off (STUDIOLO_BILLING=off) the pages say so and link nowhere: the nav hides them (base.html).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from studiolo.deps import ServicesDep
from studiolo.domain.billing.plans import FEATURES
from studiolo.domain.billing.schemas import PlanView
from studiolo.web.pages import AdminViewer, MaybeViewer, ViewerDep, call, render

router = APIRouter(include_in_schema=False)

# A page of the ledger (and of payments) as the page first shows it; "Show older" asks the API for the next one.
LEDGER_PAGE = 20
FEATURE_NAMES = {
    "txt2img": "Text to image",
    "img2img": "Image to image",
    "inpaint": "Inpaint",
    "upscale": "Upscale",
    "film": "Film studio",
}
LEDGER_KINDS = {
    "grant": "Monthly grant",
    "purchase": "Purchase",
    "reserve": "Reserved",
    "capture": "Charged",
    "release": "Released",
    "refund": "Refund",
    "adjustment": "Adjustment",
    "expiry": "Expired",
}


def money(cents: int, currency: str = "usd") -> str:
    """$9.99, €5.00, £2.50, $0; other currencies as "12.00 CHF"."""
    symbol = {"usd": "$", "eur": "€", "gbp": "£"}.get(currency.lower())
    amount = f"{cents / 100:,.2f}" if cents else "0"
    return f"{symbol}{amount}" if symbol else f"{amount} {currency.upper()}"


TIMES = "\u00d7"  # the multiplication sign, as the generator's size list writes sizes


def size_limit(pixels: int | None) -> str:
    """A pixel budget as people read it: "1.0 MP (1024 x 1024)", with the multiplication sign."""
    if pixels is None:
        return "Any size"
    side = int(pixels**0.5)
    mp = pixels / 1_000_000
    return f"{mp:.1f} MP ({side}{TIMES}{side})" if mp < 10 else f"{mp:.0f} MP"


def limit(value: int | None, unit: str = "") -> str:
    return "Unlimited" if value is None else f"{value:,}{unit}"


def priority_name(value: int) -> str:
    return {0: "Standard", 1: "Priority"}.get(value, "Top priority")


def plan_facts(plan: PlanView) -> list[tuple[str, str]]:
    """What a plan gives, in the order the pricing cards and the admin table list it."""
    features = [FEATURE_NAMES.get(f, f) for f in FEATURES if f in plan.features]
    return [
        ("Images per month", limit(plan.monthly_images)),
        ("Images per day", limit(plan.daily_images)),
        ("Credits per month", f"{plan.monthly_credits:,}"),
        ("Largest image", size_limit(plan.max_pixels)),
        ("Images per job", limit(plan.max_images_per_job)),
        ("Steps per image", "Any" if plan.max_steps is None else f"up to {plan.max_steps}"),
        ("Queue", priority_name(plan.queue_priority)),
        ("Jobs running at once", limit(plan.max_running_jobs)),
        ("Watermark", "Yes" if plan.watermark else "None"),
        ("Includes", ", ".join(features) or "—"),
    ]


def plan_form_values(plan: PlanView) -> dict[str, Any]:
    """A plan's fields as the admin form edits them (price in currency units, not cents)."""
    return {**plan.model_dump(exclude={"retired"}), "price": plan.price_cents / 100}


def _globals(request: Request) -> dict[str, Any]:
    return {
        "money": money,
        "plan_facts": plan_facts,
        "ledger_kinds": LEDGER_KINDS,
        "billing_mode": request.app.state.services.billing.mode,
    }


@router.get("/pricing")
async def pricing_page(request: Request, viewer: MaybeViewer, services: ServicesDep) -> Response:
    """Open to everyone (a visitor deciding whether to sign up reads it too); signed in, the plan you are on."""
    billing = services.billing
    if not billing.enabled:
        return render(request, "pricing.html", viewer, **_globals(request), plans=None)
    catalogue = await call(billing.list_plans)
    current = (await call(billing.summary, viewer.user_id)).plan.slug if viewer is not None else None
    return render(request, "pricing.html", viewer, **_globals(request), plans=catalogue, current=current)


@router.get("/billing")
async def billing_page(
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    checkout: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    billing = services.billing
    if not billing.enabled:
        return render(request, "billing.html", viewer, **_globals(request), summary=None)
    summary = await call(billing.summary, viewer.user_id)
    ledger = await call(billing.ledger, viewer.user_id, limit=LEDGER_PAGE)
    payments = await call(billing.payments, viewer.user_id, limit=LEDGER_PAGE)
    packs = (await call(billing.list_plans)).credit_packs
    return render(
        request,
        "billing.html",
        viewer,
        **_globals(request),
        summary=summary,
        ledger=ledger,
        payments=payments,
        packs=packs,
        checkout=checkout,
    )


@router.get("/admin/plans")
async def admin_plans_page(request: Request, viewer: AdminViewer, services: ServicesDep) -> Response:
    billing = services.billing
    catalogue = await call(billing.list_plans, include_retired=True) if billing.enabled else None
    return render(
        request,
        "admin_plans.html",
        viewer,
        **_globals(request),
        catalogue=catalogue,
        features=[(f, FEATURE_NAMES.get(f, f)) for f in FEATURES],
        form_values={p.slug: plan_form_values(p) for p in catalogue.plans} if catalogue else {},
    )


@router.get("/admin/users/{user_id}")
async def admin_user_page(
    request: Request,
    viewer: AdminViewer,
    services: ServicesDep,
    user_id: Annotated[str, Path(max_length=64)],
) -> Response:
    user = await call(services.admin.get_user, user_id)  # 404 page for an unknown id
    billing = services.billing
    summary = await call(billing.summary, user_id) if billing.enabled else None
    ledger = await call(billing.ledger, user_id, limit=LEDGER_PAGE) if billing.enabled else None
    plans = (await call(billing.list_plans, include_retired=True)).plans if billing.enabled else []
    return render(
        request,
        "admin_user.html",
        viewer,
        **_globals(request),
        user=user,
        summary=summary,
        ledger=ledger,
        plans=plans,
    )
