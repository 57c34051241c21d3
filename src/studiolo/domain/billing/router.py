"""HTTP routes for billing (docs/billing.md): a user's plan, usage, credits, quotes, ledger and payments under
/billing, and under /admin the plan catalogue, each user's plan and credits, and revenue and usage per day.

Thin handlers: one BillingService call each. With billing off (STUDIOLO_BILLING=off) every route still answers,
its bodies saying ``"mode": "off"``; Stripe's routes (checkout, portal, webhook) are in stripe_router.py.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from studiolo.deps import AdminPrincipal, OriginDep, OwnerId, ServicesDep, current_owner_id
from studiolo.domain.billing.plans import PlanPatch, PlanSpec
from studiolo.domain.billing.schemas import (
    AdminBillingAnalytics,
    BillingSummary,
    CreditGrant,
    LedgerEntry,
    LedgerPage,
    PaymentPage,
    PlanAssignment,
    PlanList,
    PlanView,
    Quote,
    QuoteRequest,
    UsageView,
)
from studiolo.domain.generation.rules import params_error
from studiolo.errors import InvalidInput
from studiolo.services import Services

# Every route needs a signed-in caller whose credential has the scope the method needs (as generation/router.py).
router = APIRouter(prefix="/billing", tags=["billing"], dependencies=[Depends(current_owner_id)])
admin_router = APIRouter(prefix="/admin", tags=["admin", "billing"])

Limit = Annotated[int, Query(ge=1, le=100, description="Rows per page")]
Cursor = Annotated[
    str | None, Query(max_length=64, description="The `next_cursor` of the previous page; omit for the first")
]
# A slug the catalogue could hold; anything else cannot name a plan (404 plan_not_found, as an unknown one).
Slug = Annotated[str, Path(max_length=40, description="The plan's slug, e.g. `basic`")]
UserId = Annotated[str, Path(max_length=64, description="The user's id")]
Days = Annotated[int, Query(ge=1, le=365, description="How many UTC days, today included")]


# --- a user's own billing ---------------------------------------------------------------------------------------
@router.get("/plans", response_model=PlanList, summary="The plans and credit packs on offer")
def list_plans(services: ServicesDep) -> PlanList:
    """The catalogue as the pricing page shows it: every plan that is not retired, the credit packs, the per-model
    credit factors and the default plan. The same for every signed-in user (nobody's own data)."""
    return services.billing.list_plans()


@router.get("", response_model=BillingSummary, summary="Your plan, credit balance, usage and subscription")
def billing_summary(services: ServicesDep, owner: OwnerId) -> BillingSummary:
    """What the Billing page shows at the top: the plan, spendable and held credits, the part of the balance that
    expires at the period's end, this period's dates, both usage windows and the Stripe subscription, if any."""
    return services.billing.summary(owner)


@router.get("/usage", response_model=UsageView, summary="Your images this month and today, against your plan")
def billing_usage(services: ServicesDep, owner: OwnerId) -> UsageView:
    """Images made and held by queued or running jobs, per window: the month on your billing anchor and the UTC
    day, each with its limit (null: unlimited) and when it resets."""
    return services.billing.usage(owner)


# The route parses its own body, with the configured limits (as POST /generations does), so its rules answer with
# their own codes (invalid_size, too_many_images, ...); the schema is given here, inlined (it has no nested models).
_QUOTE_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": QuoteRequest.model_json_schema()}}}
}


@router.post(
    "/quote",
    response_model=Quote,
    openapi_extra=_QUOTE_BODY,
    summary="What a generation would cost, and whether it would be accepted",
)
async def quote(request: Request, services: ServicesDep, owner: OwnerId) -> Quote:
    """The body is a generation request (as POST /generations takes it) plus its ``kind`` (txt2img, img2img or
    inpaint; no images are sent). Answers the credits the job would hold, by the same rules as the submission,
    without holding anything: a refusal the submission would meet (402 ``quota_exceeded`` /
    ``insufficient_credits``, 403 ``plan_forbids``) is in ``refusal``, with a 200. A request no job could be made of
    (a bad size, an unknown model) is refused with the status and code POST /generations answers it with."""
    try:
        body = QuoteRequest.model_validate_json(
            await request.body() or b"null", context=services.generation.validation_context
        )
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            errors = [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]
            raise InvalidInput("The body is not valid JSON.", details={"errors": errors}) from exc
        raise params_error(exc) from exc
    return await run_in_threadpool(_quote, services, owner, body)


def _quote(services: Services, owner: str, body: QuoteRequest) -> Quote:
    params, model_id, _ = services.generation.prepare(owner, body, body.kind)
    return services.billing.quote(owner, body.kind, params, model_id)


@router.get("/ledger", response_model=LedgerPage, summary="Your credit transactions, newest first")
def ledger(services: ServicesDep, owner: OwnerId, limit: Limit = 50, cursor: Cursor = None) -> LedgerPage:
    """The append-only ledger: grants, purchases, each job's reserve, capture and release, refunds, adjustments
    and expiries, each with its change to the spendable (``amount``) and held (``held``) credits."""
    return services.billing.ledger(owner, limit=limit, cursor=cursor)


@router.get("/payments", response_model=PaymentPage, summary="Your payments, newest first")
def payments(services: ServicesDep, owner: OwnerId, limit: Limit = 50, cursor: Cursor = None) -> PaymentPage:
    """Subscription invoices and credit packs paid through Stripe: amount, status, refunds and receipt link."""
    return services.billing.payments(owner, limit=limit, cursor=cursor)


# --- the plan catalogue (administrators) --------------------------------------------------------------------------
@admin_router.get("/billing/plans", response_model=PlanList, summary="Every plan, retired ones included")
def admin_list_plans(services: ServicesDep, admin: AdminPrincipal) -> PlanList:
    """The whole catalogue, each plan with ``retired``; with the credit packs and model factors."""
    return services.billing.list_plans(include_retired=True)


@admin_router.post("/billing/plans", response_model=PlanView, status_code=201, summary="Add a plan")
def admin_create_plan(body: PlanSpec, services: ServicesDep, admin: AdminPrincipal, origin: OriginDep) -> PlanView:
    """A new plan of the catalogue (409 ``plan_exists`` if the slug is taken). Limits left null are unlimited."""
    return services.billing.create_plan(body, actor_id=admin.user_id, origin=origin)


@admin_router.get("/billing/plans/{slug}", response_model=PlanView, summary="One plan")
def admin_get_plan(slug: Slug, services: ServicesDep, admin: AdminPrincipal) -> PlanView:
    """A plan, retired or not (404 ``plan_not_found``)."""
    return services.billing.get_plan(slug)


@admin_router.patch("/billing/plans/{slug}", response_model=PlanView, summary="Change a plan")
def admin_update_plan(
    slug: Slug, body: PlanPatch, services: ServicesDep, admin: AdminPrincipal, origin: OriginDep
) -> PlanView:
    """Only the fields given change (null for a limit: unlimited). The plan's users meet the new limits at their
    next submission; jobs already queued keep what they were accepted with."""
    return services.billing.update_plan(slug, body, actor_id=admin.user_id, origin=origin)


@admin_router.delete("/billing/plans/{slug}", status_code=204, summary="Delete a plan nobody is on")
def admin_delete_plan(slug: Slug, services: ServicesDep, admin: AdminPrincipal, origin: OriginDep) -> Response:
    """409 ``plan_in_use`` while a user is on it (retire it instead, or move them first); 409 ``default_plan``
    for the default plan."""
    services.billing.delete_plan(slug, actor_id=admin.user_id, origin=origin)
    return Response(status_code=204)


@admin_router.post("/billing/plans/{slug}/retire", response_model=PlanView, summary="Stop offering a plan")
def admin_retire_plan(slug: Slug, services: ServicesDep, admin: AdminPrincipal, origin: OriginDep) -> PlanView:
    """A retired plan is no longer listed or assignable; the users on it keep it, as it is (409 ``default_plan``
    for the default plan)."""
    return services.billing.retire_plan(slug, retired=True, actor_id=admin.user_id, origin=origin)


@admin_router.post("/billing/plans/{slug}/restore", response_model=PlanView, summary="Offer a retired plan again")
def admin_restore_plan(slug: Slug, services: ServicesDep, admin: AdminPrincipal, origin: OriginDep) -> PlanView:
    """The plan is listed and assignable again. Audited."""
    return services.billing.retire_plan(slug, retired=False, actor_id=admin.user_id, origin=origin)


@admin_router.get("/billing/analytics", response_model=AdminBillingAnalytics, summary="Revenue and usage per UTC day")
def admin_billing_analytics(services: ServicesDep, admin: AdminPrincipal, days: Days = 30) -> AdminBillingAnalytics:
    """Per UTC day: revenue kept (payments taken less refunds), payments, refunds, images made and credits
    captured; with the total revenue, the paying users of the window and the users on each plan."""
    return services.billing.analytics(days)


# --- a user's plan and credits (administrators) -------------------------------------------------------------------
@admin_router.put("/users/{user_id}/plan", response_model=BillingSummary, summary="Put a user on a plan")
def admin_assign_plan(
    user_id: UserId, body: PlanAssignment, services: ServicesDep, admin: AdminPrincipal, origin: OriginDep
) -> BillingSummary:
    """Audited, with the reason. A new plan starts a new monthly period: the old plan's unspent credits expire and
    the new plan's grant is added. 409 ``plan_retired`` for a retired plan, 404 ``plan_not_found``."""
    return services.billing.assign_plan(user_id, body.plan, actor_id=admin.user_id, origin=origin, reason=body.reason)


@admin_router.post(
    "/users/{user_id}/credits", response_model=LedgerEntry, status_code=201, summary="Grant or take away credits"
)
def admin_adjust_credits(
    user_id: UserId,
    body: CreditGrant,
    services: ServicesDep,
    admin: AdminPrincipal,
    origin: OriginDep,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", max_length=200, description="The same key again changes nothing"),
    ] = None,
) -> LedgerEntry:
    """Credits added (``amount`` > 0) or taken away (< 0) with a reason, audited; they never expire. Taking away
    more than the spendable balance is 409 ``insufficient_balance``; 0 is 422 ``invalid_amount``."""
    return services.billing.adjust_credits(
        user_id,
        body.amount,
        kind=body.kind,
        reason=body.reason,
        actor_id=admin.user_id,
        origin=origin,
        idempotency_key=idempotency_key,
    )


@admin_router.get("/users/{user_id}/billing", response_model=BillingSummary, summary="A user's billing summary")
def admin_user_billing(user_id: UserId, services: ServicesDep, admin: AdminPrincipal) -> BillingSummary:
    """What the user's own GET /billing shows (404 ``user_not_found``)."""
    services.admin.get_user(user_id)  # 404 user_not_found, before an account is made for nobody
    return services.billing.summary(user_id)


@admin_router.get("/users/{user_id}/ledger", response_model=LedgerPage, summary="A user's credit transactions")
def admin_user_ledger(
    user_id: UserId, services: ServicesDep, admin: AdminPrincipal, limit: Limit = 50, cursor: Cursor = None
) -> LedgerPage:
    """The user's credit transactions, newest first, as their own GET /billing/ledger (404 ``user_not_found``)."""
    services.admin.get_user(user_id)  # 404 user_not_found, as the other routes of a user
    return services.billing.ledger(user_id, limit=limit, cursor=cursor)
