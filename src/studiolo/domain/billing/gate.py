"""The billing gate on the job queue: what a submission may do under its owner's plan, and what it costs.

``reserve`` runs inside the transaction that inserts the jobs (GenerationService.insert_queued, requeue): it locks
the owner's account, refuses what the plan forbids (403 plan_forbids), what the quotas no longer cover (402
quota_exceeded) and what the credits do not (402 insufficient_credits), then holds the credits and images in one
usage record per job. ``settle`` runs inside the transaction that ends a job: the credits of the images made are
captured, the rest released. A job is charged once however often its worker crashes: a retry after a lost worker
keeps its held record; only a retry of a failed or canceled job (whose record was released) reserves again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session

from studiolo.db.base import UTCDateTime, new_id
from studiolo.domain.accounts.models import User
from studiolo.domain.billing import cost
from studiolo.domain.billing.ledger import (
    ACCOUNTS,
    Entry,
    append,
    day_window,
    insert_entries,
    lock_account,
    month_window,
    roll_period,
)
from studiolo.domain.billing.models import BillingAccount, Plan, UsageRecord
from studiolo.errors import Forbidden, PaymentRequired

USAGE = cast(Table, UsageRecord.__table__)
UPGRADE_URL = "/pricing"


@dataclass(frozen=True)
class Charge:
    """What one queued job row will hold."""

    row: dict[str, Any]
    images: int
    credits: int


def used_images(session: Session, user_id: str, since: datetime) -> int:
    """Images held or made by the user's jobs submitted since ``since`` (released records count nothing)."""
    return used_images_since(session, user_id, [since])[0]


def _build_used_images(windows: int) -> Select[Any]:
    counted = case(
        (USAGE.c.state == "held", USAGE.c.images),
        (USAGE.c.state == "captured", USAGE.c.images_used),
        else_=0,
    )
    sums = [
        func.coalesce(func.sum(case((USAGE.c.created_at >= bindparam(f"start{i}", type_=UTCDateTime()), counted))), 0)
        for i in range(windows)
    ]
    return select(*sums).where(
        USAGE.c.user_id == bindparam("user_id"), USAGE.c.created_at >= bindparam("since", type_=UTCDateTime())
    )


# Built once, with bind parameters: building and keying the statement anew cost more than running it (bench/billing.py).
_USED_IMAGES = {windows: _build_used_images(windows) for windows in (1, 2)}


def used_images_since(session: Session, user_id: str, starts: Sequence[datetime]) -> list[int]:
    """``used_images`` for each of ``starts`` (one or two), in one statement: one range of ix_usage_records_user from
    the earliest start, a sum per start (the submit's month and day windows: one round trip instead of two)."""
    params: dict[str, Any] = {"user_id": user_id, "since": min(starts)}
    params.update({f"start{i}": start for i, start in enumerate(starts)})
    row = session.execute(_USED_IMAGES[len(starts)], params).one()
    return [int(value or 0) for value in row]


_INSERT_USAGE = insert(USAGE)
# The owner's role, plan slug and plan in one statement (reserve): an outer join, so a user without an account yet,
# or on a plan deleted from under them, reads NULL for what is missing.
_PEEK = (
    select(
        User.role,
        BillingAccount.plan_slug,
        BillingAccount.version,
        BillingAccount.anchor_at,
        BillingAccount.granted_period_start,
        Plan,
    )
    .select_from(User)
    .outerjoin(BillingAccount, BillingAccount.user_id == User.id)
    .outerjoin(Plan, Plan.slug == BillingAccount.plan_slug)
    .where(User.id == bindparam("owner_id"))
)


# The reservation's fast path in one statement: lock the account and hold the credits, only if the account is as the
# peek before it saw it (its version) and the balance covers them. No row: the full path decides (BillingGate.reserve).
_DEBIT = (
    update(ACCOUNTS)
    .where(
        ACCOUNTS.c.user_id == bindparam("owner_id"),
        ACCOUNTS.c.version == bindparam("version"),
        ACCOUNTS.c.balance >= bindparam("needed"),
    )
    .values(
        balance=ACCOUNTS.c.balance - bindparam("needed"),
        held=ACCOUNTS.c.held + bindparam("needed"),
        version=ACCOUNTS.c.version + 1,
    )
    .returning(ACCOUNTS.c.balance)
)


def plan_refusals(plan: Plan, kind: str, params: Mapping[str, Any], model_id: str) -> list[tuple[str, str, Any]]:
    """What the plan does not allow in one job: (field, message, limit) for each broken rule."""
    broken: list[tuple[str, str, Any]] = []
    feature = "upscale" if kind == "upscale" else kind
    if feature not in plan.features:
        broken.append(("kind", f"The {plan.name} plan does not include {feature}.", plan.features))
    if kind == "film":  # a render: its scene images are jobs of their own, checked on their own
        return broken
    if plan.models is not None and model_id not in plan.models:
        broken.append(("model", f"The {plan.name} plan does not include the model '{model_id}'.", plan.models))
    pixels = int(params["width"]) * int(params["height"])
    if plan.max_pixels is not None and pixels > plan.max_pixels:
        broken.append(
            ("size", f"The {plan.name} plan allows images up to {plan.max_pixels:,} pixels.", plan.max_pixels)
        )
    n = cost.job_images(kind, params)
    if plan.max_images_per_job is not None and n > plan.max_images_per_job:
        broken.append(
            ("n", f"The {plan.name} plan allows {plan.max_images_per_job} images per job.", plan.max_images_per_job)
        )
    steps = int(params.get("steps") or 0)
    if kind != "upscale" and plan.max_steps is not None and steps > plan.max_steps:
        broken.append(("steps", f"The {plan.name} plan allows up to {plan.max_steps} steps.", plan.max_steps))
    return broken


class BillingGate:
    """Reserve at submit, settle at the end (the ``ChargeGate`` of domain/generation/charges.py)."""

    def __init__(self, *, default_plan: str, factors: Mapping[str, float], load_plan: Any) -> None:
        self.default_plan = default_plan
        self.factors = factors
        # (session, slug) -> Plan: the service's lookup, which falls back to the default plan for a deleted one.
        self.load_plan = load_plan

    def charges(self, rows: Sequence[dict[str, Any]]) -> list[Charge]:
        return [
            Charge(
                row,
                cost.job_images(row["kind"], row["params"]),
                cost.job_credits(row["kind"], row["params"], row["model_id"], self.factors),
            )
            for row in rows
        ]

    def check(
        self, session: Session, account: BillingAccount, plan: Plan, charges: Sequence[Charge], now: datetime
    ) -> None:
        """Raise the refusal a submission of ``charges`` meets, if any: plan first, then quotas, then credits."""
        self.check_plan(plan, charges)
        self.check_quotas(session, account.user_id, account.anchor_at, plan, sum(c.images for c in charges), now)
        needed = sum(c.credits for c in charges)
        if needed > account.balance:
            raise PaymentRequired(
                f"This costs {needed} credit{'s' * (needed != 1)} and you have {account.balance}.",
                code="insufficient_credits",
                details={
                    "needed": needed,
                    "balance": account.balance,
                    "held": account.held,
                    "upgrade_url": "/billing",
                },
            )

    def check_plan(self, plan: Plan, charges: Sequence[Charge]) -> None:
        """403 plan_forbids for the first job that asks what the plan does not include."""
        for charge in charges:
            broken = plan_refusals(plan, charge.row["kind"], charge.row["params"], charge.row["model_id"])
            if broken:
                field, message, limit = broken[0]
                raise Forbidden(
                    message,
                    code="plan_forbids",
                    details={"plan": plan.slug, "field": field, "limit": limit, "upgrade_url": UPGRADE_URL},
                )

    def check_quotas(
        self, session: Session, user_id: str, anchor_at: datetime, plan: Plan, images: int, now: datetime
    ) -> None:
        """402 quota_exceeded when ``images`` more would pass the monthly or daily quota (run under the account's
        lock: what it counts must not change before the job rows commit)."""
        windows = (
            ("month", plan.monthly_images, month_window(anchor_at, now)),
            ("day", plan.daily_images, day_window(now)),
        )
        limited = [(window, limit, start, end) for window, limit, (start, end) in windows if limit is not None]
        counts = used_images_since(session, user_id, [w[2] for w in limited]) if limited else []
        for (window, limit, _, end), used in zip(limited, counts, strict=True):
            if used + images > limit:
                left = max(0, limit - used)
                raise PaymentRequired(
                    f"This would make {images} image{'s' * (images != 1)}, and your {plan.name} plan has "
                    f"{left} of {limit} left this {window}. It resets at {end:%Y-%m-%d %H:%M} UTC.",
                    code="quota_exceeded",
                    details={
                        "window": window,
                        "limit": limit,
                        "used": used,
                        "requested": images,
                        "resets_at": end.isoformat(),
                        "upgrade_url": UPGRADE_URL,
                    },
                )

    def reserve(
        self,
        session: Session,
        owner_id: str,
        rows: Sequence[dict[str, Any]],
        *,
        now: datetime,
        seq: int = 1,
    ) -> None:
        """Check and hold what ``rows`` (queued job rows, not yet inserted) cost; sets each row's plan-given
        ``system_priority`` (at least the plan's queue priority) and ``max_running``. ``seq``: 1 for a new job, the
        next number for a retry of a finished one."""
        # The owner's role, plan and account state in one statement, before the account's lock: on SQLite that
        # lock is the process's write slot, which every other submit waits for, so what need not be read under it
        # is not (bench/billing.py).
        peek = session.execute(_PEEK, {"owner_id": owner_id}).one()
        exempt = peek.role == "admin"
        charges = self.charges(rows)
        if exempt:  # administrators are never refused; their usage is recorded at no charge
            charges = [Charge(c.row, c.images, 0) for c in charges]
        if not self._reserve_fast(session, owner_id, peek, charges, exempt=exempt, now=now, seq=seq):
            self._reserve_full(session, owner_id, peek, charges, exempt=exempt, now=now, seq=seq)

    def _reserve_fast(
        self,
        session: Session,
        owner_id: str,
        peek: Any,
        charges: Sequence[Charge],
        *,
        exempt: bool,
        now: datetime,
        seq: int,
    ) -> bool:
        """The usual reservation in as few statements as it can be: the plan checked from the peek, the account
        locked and debited in one guarded UPDATE (_DEBIT), the quotas counted under that lock. False, having written
        nothing, when the peek cannot be trusted (no account yet, a period to roll over, the account changed since,
        credits short): the full path then decides, and says why it refuses."""
        plan: Plan | None = peek.Plan
        if plan is None or peek.granted_period_start is None:
            return False
        if peek.granted_period_start < month_window(peek.anchor_at, now)[0]:
            return False  # a new period is due: its grant and expiry are the full path's
        if not exempt:
            self.check_plan(plan, charges)
        needed = sum(c.credits for c in charges)
        balance = session.execute(_DEBIT, {"owner_id": owner_id, "version": peek.version, "needed": needed}).scalar()
        if balance is None:
            return False
        if not exempt:  # a refusal rolls the debit back with the transaction
            self.check_quotas(session, owner_id, peek.anchor_at, plan, sum(c.images for c in charges), now)
        self._hold(session, owner_id, plan, charges, exempt=exempt, now=now, seq=seq)
        insert_entries(session, owner_id, balance + needed, self._reserve_entries(charges, seq), now)
        return True

    def _reserve_full(
        self,
        session: Session,
        owner_id: str,
        peek: Any,
        charges: Sequence[Charge],
        *,
        exempt: bool,
        now: datetime,
        seq: int,
    ) -> None:
        account = lock_account(session, owner_id, self.default_plan, now)
        plan = peek.Plan
        if plan is None or peek.plan_slug != account.plan_slug:
            plan = self.load_plan(session, account.plan_slug)
        roll_period(session, account, plan, now)
        if not exempt:
            self.check(session, account, plan, charges, now)
        self._hold(session, owner_id, plan, charges, exempt=exempt, now=now, seq=seq)
        append(session, account, self._reserve_entries(charges, seq), now)

    @staticmethod
    def _reserve_entries(charges: Sequence[Charge], seq: int) -> list[Entry]:
        return [
            Entry("reserve", f"{c.row['id']}:{seq}:reserve", amount=-c.credits, held=c.credits, job_id=c.row["id"])
            for c in charges
            if c.credits
        ]

    @staticmethod
    def _hold(
        session: Session,
        owner_id: str,
        plan: Plan,
        charges: Sequence[Charge],
        *,
        exempt: bool,
        now: datetime,
        seq: int,
    ) -> None:
        """The jobs' usage records (what quotas count), and what the plan sets on their rows."""
        for c in charges:
            c.row["system_priority"] = max(int(c.row.get("system_priority") or 0), plan.queue_priority)
            c.row["max_running"] = 0 if exempt else plan.max_running_jobs or 0  # exempt: never held back either
        session.execute(
            _INSERT_USAGE,
            [
                {
                    "id": new_id(),
                    "user_id": owner_id,
                    "job_id": c.row["id"],
                    "seq": seq,
                    "kind": c.row["kind"],
                    "images": c.images,
                    "images_used": 0,
                    "credits": c.credits,
                    "credits_captured": 0,
                    "state": "held",
                    "created_at": now,
                    "settled_at": None,
                }
                for c in charges
            ],
        )

    def settle(self, session: Session, outcomes: Mapping[str, int], now: datetime) -> None:
        """End the holds of these jobs: ``outcomes`` maps a job id to the images it made (0: failed or canceled).
        The credits of the images made are captured, the rest released. Records already settled are skipped, so
        settling twice changes nothing."""
        if not outcomes:
            return
        held = session.scalars(
            select(UsageRecord)
            .where(UsageRecord.job_id.in_(list(outcomes)), UsageRecord.state == "held")
            .order_by(UsageRecord.user_id, UsageRecord.id)
        ).all()
        by_user: dict[str, list[UsageRecord]] = defaultdict(list)
        for record in held:
            by_user[record.user_id].append(record)
        for user_id in sorted(by_user):  # one lock order for every transaction: no deadlock between settlements
            account = lock_account(session, user_id, self.default_plan, now)
            entries: list[Entry] = []
            for record in by_user[user_id]:
                # Re-read under the account's lock: a concurrent settlement of the same job may have won.
                session.refresh(record)
                if record.state != "held":
                    continue
                if record.images:
                    made = max(0, min(outcomes[record.job_id], record.images))
                    captured = record.credits * made // record.images
                else:  # a job that makes no images (a film render): all or nothing
                    made = 1 if outcomes[record.job_id] > 0 else 0
                    captured = record.credits * made
                released = record.credits - captured
                key = f"{record.job_id}:{record.seq}"
                if captured:
                    entries.append(Entry("capture", f"{key}:capture", held=-captured, job_id=record.job_id))
                if released:
                    entries.append(
                        Entry("release", f"{key}:release", amount=released, held=-released, job_id=record.job_id)
                    )
                account.grant_remaining = max(0, account.grant_remaining - captured)
                record.state = "captured" if made else "released"
                record.images_used = made if record.images else 0
                record.credits_captured = captured
                record.settled_at = now
            append(session, account, entries, now)
