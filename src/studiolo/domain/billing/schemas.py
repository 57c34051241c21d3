"""API shapes for billing: plans, the account summary, usage windows, quotes, the ledger, payments, Stripe links."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from studiolo.domain.billing.plans import CreditPack, PlanSpec
from studiolo.domain.generation.schemas import GenerationParams

BillingMode = Literal["off", "quotas", "stripe"]


class PlanView(PlanSpec):
    """A plan of the catalogue, as listed by GET /billing/plans and the pricing page."""

    retired: bool = False


class PlanList(BaseModel):
    mode: BillingMode
    plans: list[PlanView]
    credit_packs: list[CreditPack]
    model_credits: dict[str, float]
    default_plan: str


class UsageWindow(BaseModel):
    """Images made (and held by queued or running jobs) in one quota window."""

    window: Literal["month", "day"]
    used: int
    limit: int | None  # None: unlimited
    starts_at: datetime
    resets_at: datetime


class UsageView(BaseModel):
    mode: BillingMode
    plan: str
    month: UsageWindow
    day: UsageWindow


class SubscriptionView(BaseModel):
    status: str | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    manageable: bool  # a Stripe customer exists: the portal can be opened


class BillingSummary(BaseModel):
    """GET /billing: everything the Billing page shows at the top."""

    mode: BillingMode
    plan: PlanView
    balance: int  # credits that can be spent now
    held: int  # credits reserved by queued and running jobs
    expiring: int  # the part of balance from this period's plan grant, which expires at period end
    period_start: datetime
    period_end: datetime
    usage: UsageView
    subscription: SubscriptionView
    exempt: bool  # an administrator: never refused for quota or credits (usage is still recorded)


class QuoteRequest(GenerationParams):
    """POST /billing/quote: a generation request (as POST /generations takes it) and its kind."""

    kind: Literal["txt2img", "img2img", "inpaint"] = "txt2img"


class Refusal(BaseModel):
    """What a submission would be refused with, in the error shape's terms."""

    status: int
    code: str
    message: str
    details: dict[str, object] = Field(default_factory=dict)


class Quote(BaseModel):
    mode: BillingMode
    credits: int  # what the job would reserve (0 when billing is off)
    images: int
    width: int
    height: int
    steps: int
    model: str
    balance: int | None  # None when billing is off
    allowed: bool
    refusal: Refusal | None = None
    formula: str  # the rule in words, for the generator's tooltip


LedgerKind = Literal["grant", "purchase", "reserve", "capture", "release", "refund", "adjustment", "expiry"]


class LedgerEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    amount: int  # change to the spendable balance
    held: int  # change to the reserved credits
    balance_after: int
    job_id: str | None
    payment_id: str | None
    reason: str
    actor_id: str | None
    created_at: datetime


class LedgerPage(BaseModel):
    items: list[LedgerEntry]
    next_cursor: str | None


class PaymentView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    amount_cents: int
    currency: str
    status: str
    description: str
    receipt_url: str | None
    credits: int
    plan_slug: str | None
    refunded_cents: int
    created_at: datetime


class PaymentPage(BaseModel):
    items: list[PaymentView]
    next_cursor: str | None


class CheckoutRequest(BaseModel):
    """POST /billing/checkout: a plan subscription or a credit pack."""

    model_config = ConfigDict(extra="forbid")

    plan: str | None = Field(default=None, max_length=40)
    credit_pack: str | None = Field(default=None, max_length=40)


class RedirectView(BaseModel):
    """Where to send the browser (a Stripe Checkout or Customer Portal page)."""

    url: str


class CreditGrant(BaseModel):
    """POST /admin/users/{id}/credits: credits added (positive) or taken away (negative), with a reason."""

    model_config = ConfigDict(extra="forbid")

    amount: int = Field(ge=-100_000_000, le=100_000_000)
    reason: str = Field(min_length=1, max_length=500)
    kind: Literal["grant", "adjustment"] = "adjustment"


class PlanAssignment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: str = Field(max_length=40)
    reason: str = Field(default="", max_length=500)


class AdminBillingDay(BaseModel):
    day: str
    revenue_cents: int
    payments: int
    refunds_cents: int
    images: int
    credits_captured: int


class AdminBillingAnalytics(BaseModel):
    currency: str
    days: list[AdminBillingDay]
    revenue_cents: int
    paying_users: int
    plans: dict[str, int]  # users per plan
