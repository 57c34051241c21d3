"""Billing: the plan catalogue, each user's plan, credits, usage and payments (issue 15, docs/billing.md).

One service for the API, the CLI, the workers (its gate settles jobs) and the Stripe webhook. Modes
(``STUDIOLO_BILLING``): ``off`` (no limits; the queue has no gate and nothing is recorded), ``quotas`` (plans and
credits assigned by an administrator), ``stripe`` (plus self-service payments, domain/billing/stripe_*.py).
Switching modes keeps every balance and record: ``off`` only stops using them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from studiolo.db.base import new_id, utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.audit import record as audit_record
from studiolo.domain.accounts.models import User
from studiolo.domain.billing import cost
from studiolo.domain.billing.analytics import BillingAnalytics
from studiolo.domain.billing.gate import BillingGate, used_images
from studiolo.domain.billing.ledger import (
    Entry,
    append,
    day_window,
    expire_grant,
    lock_account,
    month_window,
    roll_period,
)
from studiolo.domain.billing.models import (
    BillingAccount,
    CreditTransaction,
    Payment,
    Plan,
    UsageDaily,
    UsageRecord,
)
from studiolo.domain.billing.plans import (
    DEFAULT_CREDIT_PACKS,
    DEFAULT_PLANS,
    CreditPack,
    PlanPatch,
    PlanSpec,
    load_catalogue_file,
)
from studiolo.domain.billing.schemas import (
    AdminBillingAnalytics,
    BillingMode,
    BillingSummary,
    LedgerEntry,
    LedgerPage,
    PaymentPage,
    PaymentView,
    PlanList,
    PlanView,
    Quote,
    Refusal,
    SubscriptionView,
    UsageView,
    UsageWindow,
)
from studiolo.domain.generation.models import Job
from studiolo.errors import Conflict, InvalidInput, NotFound, StudioloError, describe_errors, plain_message
from studiolo.settings import Settings

log = logging.getLogger(__name__)

FORMULA = "credits = images x max(1, ceil(width x height / 512² x steps / 25 x model factor))"


def plan_view(plan: Plan) -> PlanView:
    return PlanView(
        **{name: getattr(plan, name) for name in PlanSpec.model_fields},
        retired=plan.retired_at is not None,
    )


class BillingService:
    def __init__(self, db: Database, settings: Settings):
        self.db = db
        self.settings = settings
        self.mode: BillingMode = settings.billing
        self.factors: dict[str, float] = {}
        self.packs: list[CreditPack] = list(DEFAULT_CREDIT_PACKS)
        self._file_plans: list[PlanSpec] = []
        if settings.billing_plans_file is not None:
            catalogue = load_catalogue_file(settings.billing_plans_file)
            self.factors = dict(catalogue.model_credits)
            self._file_plans = catalogue.plans
            if catalogue.credit_packs is not None:
                self.packs = list(catalogue.credit_packs)
        self.gate = BillingGate(default_plan=settings.billing_default_plan, factors=self.factors, load_plan=self._plan)

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    # -- catalogue ---------------------------------------------------------------------------------------------
    def sync_catalogue(self) -> None:
        """At start: the default plans into an empty catalogue, then the plans file's plans (created or updated)."""
        with self.db.session() as session:
            if session.scalar(select(func.count()).select_from(Plan)) == 0:
                for spec in DEFAULT_PLANS:
                    session.add(Plan(**spec.model_dump()))
                session.flush()
            for spec in self._file_plans:
                row = session.get(Plan, spec.slug)
                if row is None:
                    session.add(Plan(**spec.model_dump()))
                else:
                    for name, value in spec.model_dump().items():
                        setattr(row, name, value)
            session.flush()
            if session.get(Plan, self.settings.billing_default_plan) is None:
                raise InvalidInput(
                    f"STUDIOLO_BILLING_DEFAULT_PLAN names '{self.settings.billing_default_plan}', which is not in the "
                    "plan catalogue.",
                    code="invalid_default_plan",
                )

    def _plan(self, session: Session, slug: str) -> Plan:
        """A user's plan; a plan deleted from under its users reads as the default plan (docs/billing.md)."""
        plan = session.get(Plan, slug) or session.get(Plan, self.settings.billing_default_plan)
        if plan is None:
            raise StudioloError("The plan catalogue has no default plan.", code="plan_catalogue_broken")
        return plan

    def _existing_plan(self, session: Session, slug: str) -> Plan:
        plan = session.get(Plan, slug)
        if plan is None:
            raise NotFound(f"No plan named '{slug}'.", code="plan_not_found", details={"plan": slug})
        return plan

    def list_plans(self, *, include_retired: bool = False) -> PlanList:
        with self.db.session() as session:
            stmt = select(Plan).order_by(Plan.sort_order, Plan.price_cents, Plan.slug)
            if not include_retired:
                stmt = stmt.where(Plan.retired_at.is_(None))
            plans = [plan_view(p) for p in session.scalars(stmt)]
        return PlanList(
            mode=self.mode,
            plans=plans,
            credit_packs=self.packs,
            model_credits=self.factors,
            default_plan=self.settings.billing_default_plan,
        )

    def get_plan(self, slug: str) -> PlanView:
        with self.db.session() as session:
            return plan_view(self._existing_plan(session, slug))

    def credit_pack(self, slug: str) -> CreditPack:
        for pack in self.packs:
            if pack.slug == slug:
                return pack
        raise NotFound(f"No credit pack named '{slug}'.", code="credit_pack_not_found", details={"credit_pack": slug})

    def create_plan(self, spec: PlanSpec, *, actor_id: str, origin: Origin) -> PlanView:
        with self.db.session() as session:
            if session.get(Plan, spec.slug) is not None:
                raise Conflict(f"A plan named '{spec.slug}' exists.", code="plan_exists", details={"plan": spec.slug})
            plan = Plan(**spec.model_dump())
            session.add(plan)
            session.flush()
            audit_record(session, "billing.plan_created", actor_id=actor_id, origin=origin, plan=spec.slug)
            return plan_view(plan)

    def update_plan(self, slug: str, patch: PlanPatch, *, actor_id: str, origin: Origin) -> PlanView:
        """Change a plan: its users get the new limits at their next submission (docs/billing.md)."""
        changes = patch.model_dump(exclude_unset=True)
        with self.db.session() as session:
            plan = self._existing_plan(session, slug)
            try:
                merged = PlanSpec.model_validate({**plan_view(plan).model_dump(exclude={"retired"}), **changes})
            except ValidationError as exc:  # e.g. "name": null, or an unknown feature: the patch's fault, a 422
                errors = [
                    {"loc": ["body", *map(str, e["loc"])], "msg": plain_message(e), "type": e["type"]}
                    for e in exc.errors(include_url=False)
                ]
                raise InvalidInput(describe_errors(errors), details={"errors": errors}) from None
            for name in changes:
                setattr(plan, name, getattr(merged, name))
            session.flush()
            audit_record(
                session, "billing.plan_updated", actor_id=actor_id, origin=origin, plan=slug, fields=sorted(changes)
            )
            return plan_view(plan)

    def retire_plan(self, slug: str, *, retired: bool, actor_id: str, origin: Origin) -> PlanView:
        """Retire (or bring back) a plan: a retired plan is no longer offered, and its users keep it as it is."""
        with self.db.session() as session:
            plan = self._existing_plan(session, slug)
            if retired and slug == self.settings.billing_default_plan:
                raise Conflict("The default plan cannot be retired.", code="default_plan", details={"plan": slug})
            plan.retired_at = utcnow() if retired else None
            session.flush()
            action = "billing.plan_retired" if retired else "billing.plan_restored"
            audit_record(session, action, actor_id=actor_id, origin=origin, plan=slug)
            return plan_view(plan)

    def delete_plan(self, slug: str, *, actor_id: str, origin: Origin) -> None:
        """Delete a plan nobody is on (409 plan_in_use otherwise: retire it instead)."""
        with self.db.session() as session:
            plan = self._existing_plan(session, slug)
            if slug == self.settings.billing_default_plan:
                raise Conflict("The default plan cannot be deleted.", code="default_plan", details={"plan": slug})
            users = session.scalar(select(func.count()).where(BillingAccount.plan_slug == slug)) or 0
            if users:
                raise Conflict(
                    f"{users} user{'s are' if users != 1 else ' is'} on the plan '{slug}'; retire it instead, or "
                    "move them to another plan first.",
                    code="plan_in_use",
                    details={"plan": slug, "users": users},
                )
            session.delete(plan)
            audit_record(session, "billing.plan_deleted", actor_id=actor_id, origin=origin, plan=slug)

    # -- the gate on the queue (ChargeGate) ----------------------------------------------------------------------
    def reserve(self, session: Session, owner_id: str, rows: Sequence[dict[str, Any]], *, retry: bool = False) -> None:
        seq = 1
        if retry:
            seq = 1 + int(
                session.scalar(
                    select(func.coalesce(func.max(UsageRecord.seq), 0)).where(
                        UsageRecord.job_id.in_([r["id"] for r in rows])
                    )
                )
                or 0
            )
        self.gate.reserve(session, owner_id, rows, now=utcnow(), seq=seq)

    def settle(self, session: Session, outcomes: Mapping[str, int]) -> None:
        self.gate.settle(session, outcomes, utcnow())

    def upkeep(self) -> None:
        self.reconcile()
        self.roll_up_usage()

    def reconcile(self) -> int:
        """Settle the holds of jobs that ended without settling (a path that missed it, a job ended while billing was
        off); returns how many. Run by the workers' housekeeping."""
        with self.db.session() as session:
            ended = session.execute(
                select(UsageRecord.job_id, Job.status)
                .join(Job, Job.id == UsageRecord.job_id)
                .where(UsageRecord.state == "held", Job.status.in_(("succeeded", "failed", "canceled")))
                .limit(500)
            ).all()
            if not ended:
                return 0
            made: dict[str, int] = {job_id: 0 for job_id, _ in ended}
            succeeded = [job_id for job_id, status in ended if status == "succeeded"]
            if succeeded:
                from studiolo.domain.gallery.models import Image

                for image_job, count in session.execute(
                    select(Image.job_id, func.count()).where(Image.job_id.in_(succeeded)).group_by(Image.job_id)
                ):
                    made[str(image_job)] = int(count)
            self.settle(session, made)
        return len(ended)

    # -- what a user sees --------------------------------------------------------------------------------------
    def _usage(self, session: Session, account: BillingAccount, plan: Plan, now: datetime) -> UsageView:
        m_start, m_end = month_window(account.anchor_at, now)
        d_start, d_end = day_window(now)
        return UsageView(
            mode=self.mode,
            plan=plan.slug,
            month=UsageWindow(
                window="month",
                used=used_images(session, account.user_id, m_start),
                limit=plan.monthly_images,
                starts_at=m_start,
                resets_at=m_end,
            ),
            day=UsageWindow(
                window="day",
                used=used_images(session, account.user_id, d_start),
                limit=plan.daily_images,
                starts_at=d_start,
                resets_at=d_end,
            ),
        )

    def _open(self, session: Session, user_id: str, now: datetime) -> tuple[BillingAccount, Plan]:
        account = lock_account(session, user_id, self.settings.billing_default_plan, now)
        plan = self._plan(session, account.plan_slug)
        if self.enabled:  # off: nothing is granted or expired
            roll_period(session, account, plan, now)
        return account, plan

    def summary(self, user_id: str) -> BillingSummary:
        now = utcnow()
        with self.db.session() as session:
            account, plan = self._open(session, user_id, now)
            start, end = month_window(account.anchor_at, now)
            role = session.scalar(select(User.role).where(User.id == user_id))
            return BillingSummary(
                mode=self.mode,
                plan=plan_view(plan),
                balance=account.balance,
                held=account.held,
                expiring=min(account.grant_remaining, account.balance),
                period_start=start,
                period_end=end,
                usage=self._usage(session, account, plan, now),
                subscription=SubscriptionView(
                    status=account.subscription_status,
                    current_period_end=account.subscription_period_end,
                    cancel_at_period_end=account.cancel_at_period_end,
                    manageable=account.stripe_customer_id is not None,
                ),
                exempt=role == "admin",
            )

    def plan_max_pixels(self, user_id: str) -> int | None:
        """The most pixels an image of ``user_id``'s plan may have; None: billing off, no limit, or an administrator
        (never refused). For a face that fits a size to what the caller may make (compat/openai_params.py)."""
        if not self.enabled:
            return None
        with self.db.session() as session:
            if session.scalar(select(User.role).where(User.id == user_id)) == "admin":
                return None
            slug = session.scalar(select(BillingAccount.plan_slug).where(BillingAccount.user_id == user_id))
            return session.scalar(
                select(Plan.max_pixels).where(Plan.slug == (slug or self.settings.billing_default_plan))
            )

    def usage(self, user_id: str) -> UsageView:
        now = utcnow()
        with self.db.session() as session:
            account, plan = self._open(session, user_id, now)
            return self._usage(session, account, plan, now)

    def quote(self, owner_id: str, kind: str, params: Mapping[str, Any], model_id: str) -> Quote:
        """What a job with these resolved params (GenerationService.prepare's) would cost, and whether it would be
        accepted now: the same rules as the reservation, without holding anything."""
        images = cost.job_images(kind, params)
        base = {
            "images": images,
            "width": int(params["width"]),
            "height": int(params["height"]),
            "steps": int(params["steps"]),
            "model": model_id,
            "formula": FORMULA,
        }
        if not self.enabled:
            return Quote(mode=self.mode, credits=0, balance=None, allowed=True, **base)
        credits = cost.job_credits(kind, params, model_id, self.factors)
        now = utcnow()
        row = {"id": "quote", "kind": kind, "params": dict(params), "model_id": model_id}
        refusal = None
        with self.db.session() as session:
            account, plan = self._open(session, owner_id, now)
            exempt = session.scalar(select(User.role).where(User.id == owner_id)) == "admin"
            if not exempt:
                try:
                    self.gate.check(session, account, plan, self.gate.charges([row]), now)
                except StudioloError as exc:
                    refusal = Refusal(status=exc.status_code, code=exc.code, message=exc.message, details=exc.details)
            balance = account.balance
        return Quote(
            mode=self.mode,
            credits=0 if exempt else credits,
            balance=balance,
            allowed=refusal is None,
            refusal=refusal,
            **base,
        )

    def _newest_first(
        self, model: type[CreditTransaction] | type[Payment], user_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Any], str | None]:
        """A page of the user's ledger rows or payments, newest first (time-ordered ids), and the next cursor."""
        with self.db.session() as session:
            stmt = select(model).where(model.user_id == user_id)
            if cursor:
                stmt = stmt.where(model.id < cursor)
            rows: list[Any] = list(session.scalars(stmt.order_by(model.id.desc()).limit(limit + 1)).all())
        return rows[:limit], str(rows[limit - 1].id) if len(rows) > limit else None

    def ledger(self, user_id: str, *, limit: int = 50, cursor: str | None = None) -> LedgerPage:
        rows, next_cursor = self._newest_first(CreditTransaction, user_id, limit, cursor)
        return LedgerPage(items=[LedgerEntry.model_validate(r) for r in rows], next_cursor=next_cursor)

    def analytics(self, days: int) -> AdminBillingAnalytics:
        """Revenue and usage per UTC day over the last ``days`` (the admin analytics page; analytics.py)."""
        return BillingAnalytics(self.db, self.settings.billing_default_plan).admin(days)

    def payments(self, user_id: str, *, limit: int = 50, cursor: str | None = None) -> PaymentPage:
        rows, next_cursor = self._newest_first(Payment, user_id, limit, cursor)
        return PaymentPage(items=[PaymentView.model_validate(r) for r in rows], next_cursor=next_cursor)

    # -- what an administrator (or a payment) changes ------------------------------------------------------------
    def _user_exists(self, session: Session, user_id: str) -> None:
        if session.get(User, user_id) is None:
            raise NotFound("No such user.", code="user_not_found")

    def set_plan(
        self,
        session: Session,
        user_id: str,
        slug: str,
        *,
        now: datetime,
        anchor: datetime | None = None,
        allow_retired: bool = False,
    ) -> BillingAccount:
        """Put the user on a plan, in the caller's transaction. A new plan starts a new monthly period (at ``anchor``,
        default now): the old plan's unspent grant expires and the new plan's is added (roll_period)."""
        plan = self._existing_plan(session, slug)
        if plan.retired_at is not None and not allow_retired:
            raise Conflict(f"The plan '{slug}' is retired.", code="plan_retired", details={"plan": slug})
        account = lock_account(session, user_id, self.settings.billing_default_plan, now)
        if account.plan_slug == slug:
            # The same plan: at most its period moves (a Stripe renewal names the new period's start, which is the
            # old anchor plus whole months). roll_period then grants the new period once, or nothing if the lazy
            # roll-over at the account's last use already did (tests/integration/test_stripe_webhooks.py).
            if anchor is not None and anchor != account.anchor_at:
                account.anchor_at = anchor
                if self.enabled:
                    roll_period(session, account, plan, now)
            return account
        if self.enabled:
            roll_period(session, account, self._plan(session, account.plan_slug), now)
            expire_grant(session, account, now, f"Plan changed to {plan.name}: the last plan's credits expired.")
        account.plan_slug = slug
        account.anchor_at = anchor or now
        account.granted_period_start = None  # the new plan's period starts now: its grant is due
        if self.enabled:
            roll_period(session, account, plan, now)
        return account

    def assign_plan(
        self, user_id: str, slug: str, *, actor_id: str | None, origin: Origin, reason: str = ""
    ) -> BillingSummary:
        """An administrator puts a user on a plan (audited)."""
        now = utcnow()
        with self.db.session() as session:
            self._user_exists(session, user_id)
            previous = lock_account(session, user_id, self.settings.billing_default_plan, now).plan_slug
            self.set_plan(session, user_id, slug, now=now)
            audit_record(
                session,
                "billing.plan_assigned",
                actor_id=actor_id,
                origin=origin,
                target_id=user_id,
                previous=previous,
                plan=slug,
                reason=reason,
            )
        return self.summary(user_id)

    def adjust_credits(
        self,
        user_id: str,
        amount: int,
        *,
        kind: str = "adjustment",
        reason: str,
        actor_id: str | None,
        origin: Origin,
        idempotency_key: str | None = None,
    ) -> LedgerEntry:
        """Add (or, negative, take away) credits with a reason, audited. These credits never expire. Taking away more
        than the spendable balance is refused (409 insufficient_balance): the balance is never negative."""
        if amount == 0:
            raise InvalidInput("amount must not be 0.", code="invalid_amount", details={"field": "amount"})
        now = utcnow()
        key = f"admin:{user_id}:{idempotency_key}" if idempotency_key else f"admin:{new_id()}"
        with self.db.session() as session:
            self._user_exists(session, user_id)
            existing = session.scalar(select(CreditTransaction).where(CreditTransaction.idempotency_key == key))
            if existing is not None:
                return LedgerEntry.model_validate(existing)
            account, _ = self._open(session, user_id, now)
            if account.balance + amount < 0:
                raise Conflict(
                    f"The user has {account.balance} spendable credits; {-amount} cannot be taken away.",
                    code="insufficient_balance",
                    details={"balance": account.balance, "amount": amount},
                )
            (row_id,) = append(
                session, account, [Entry(kind, key, amount=amount, reason=reason, actor_id=actor_id)], now
            )
            audit_record(
                session,
                "billing.credits_adjusted",
                actor_id=actor_id,
                origin=origin,
                target_id=user_id,
                amount=amount,
                kind=kind,
                reason=reason,
            )
            row = session.get(CreditTransaction, row_id)
            assert row is not None
            return LedgerEntry.model_validate(row)

    def add_credits(
        self,
        session: Session,
        user_id: str,
        credits: int,
        *,
        kind: str,
        key: str,
        reason: str,
        payment_id: str | None = None,
        now: datetime | None = None,
    ) -> int:
        """Within the caller's transaction: add (``credits`` > 0) or remove (< 0, clamped to the spendable balance)
        credits under ``key``; returns the change made, 0 when ``key`` was applied before (exactly once)."""
        now = now or utcnow()
        account = lock_account(session, user_id, self.settings.billing_default_plan, now)
        if session.scalar(select(CreditTransaction.id).where(CreditTransaction.idempotency_key == key)):
            return 0
        change = credits if credits > 0 else -min(-credits, account.balance)
        if change == 0:
            return 0
        append(session, account, [Entry(kind, key, amount=change, reason=reason, payment_id=payment_id)], now)
        return change

    # -- retention ---------------------------------------------------------------------------------------------
    def roll_up_usage(self, now: datetime | None = None, *, chunk: int = 5000) -> int:
        """Fold settled usage records older than STUDIOLO_USAGE_RETENTION_DAYS into per-user, per-UTC-day totals and
        delete them (seed 004's retention); the ledger is never touched. Returns how many records were folded."""
        cutoff = (now or utcnow()) - timedelta(days=self.settings.usage_retention_days)
        folded = 0
        while True:
            # In chunks, each its own transaction: a first run over years of records holds no lock for long.
            with self.db.session() as session:
                rows = session.execute(
                    select(
                        UsageRecord.id,
                        UsageRecord.user_id,
                        UsageRecord.created_at,
                        UsageRecord.images_used,
                        UsageRecord.credits_captured,
                    )
                    .where(UsageRecord.state != "held", UsageRecord.created_at < cutoff)
                    .limit(chunk)
                ).all()
                if not rows:
                    break
                totals: dict[tuple[str, str], list[int]] = {}
                for _, user_id, created_at, images, credits in rows:
                    t = totals.setdefault((user_id, created_at.strftime("%Y-%m-%d")), [0, 0, 0])
                    t[0] += 1
                    t[1] += images
                    t[2] += credits
                for (user_id, day), (jobs, images, credits) in totals.items():
                    daily = session.get(UsageDaily, (user_id, day))
                    if daily is None:
                        session.add(UsageDaily(user_id=user_id, day=day, jobs=jobs, images=images, credits=credits))
                    else:
                        daily.jobs += jobs
                        daily.images += images
                        daily.credits += credits
                session.execute(delete(UsageRecord).where(UsageRecord.id.in_([r[0] for r in rows])))
                folded += len(rows)
            if len(rows) < chunk:
                break
        if folded:
            log.info("rolled up %d usage records older than %d days", folded, self.settings.usage_retention_days)
        return folded
