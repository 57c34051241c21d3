"""Revenue and usage per UTC day for the administrators' analytics page (GET /admin/billing/analytics).

Revenue comes from ``payments``: a payment counts on the UTC day it was made (``created_at``); money taken is a
payment whose status is ``paid``, ``partially_refunded`` or ``refunded`` (a ``failed`` one took nothing), and its
revenue is what was kept, ``amount_cents - refunded_cents``. Refunds are counted on the day of the payment they
return (the table keeps no refund date), so a day's ``revenue_cents + refunds_cents`` is what was charged that day.
Only payments in the catalogue's currency (the default plan's) are summed: cents of two currencies do not add up.

Usage comes from ``usage_records`` (images made and credits captured, on the day the job was submitted) plus the
per-day roll-ups in ``usage_daily`` that retention made of older records (BillingService.roll_up_usage): the same
day key, so a day half rolled up still adds up.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from studiolo.db.session import Database
from studiolo.domain.accounts.models import User
from studiolo.domain.billing.models import BillingAccount, Payment, Plan, UsageDaily, UsageRecord
from studiolo.domain.billing.schemas import AdminBillingAnalytics, AdminBillingDay
from studiolo.domain.generation.analytics import utc_day, window

# Payment statuses that took money (a refund returns part or all of it later).
COLLECTED = ("paid", "partially_refunded", "refunded")


def _key(value: object) -> str:
    """A day from SQL (a date on PostgreSQL, text on SQLite) as 'YYYY-MM-DD'."""
    return value if isinstance(value, str) else value.isoformat()  # type: ignore[attr-defined]


class BillingAnalytics:
    def __init__(self, db: Database, default_plan: str) -> None:
        self.db = db
        self.default_plan = default_plan

    def admin(self, days: int, now: datetime | None = None) -> AdminBillingAnalytics:
        dates, since = window(days, now)
        keys = [d.isoformat() for d in dates]
        rows = {
            k: AdminBillingDay(day=k, revenue_cents=0, payments=0, refunds_cents=0, images=0, credits_captured=0)
            for k in keys
        }
        with self.db.session() as session:
            is_sqlite = session.get_bind().dialect.name == "sqlite"
            currency = session.scalar(select(Plan.currency).where(Plan.slug == self.default_plan)) or "usd"
            paid = (Payment.created_at >= since, Payment.status.in_(COLLECTED), Payment.currency == currency)
            day = utc_day(Payment.created_at, is_sqlite)
            for d, amount, refunded, count in session.execute(
                select(day, func.sum(Payment.amount_cents), func.sum(Payment.refunded_cents), func.count())
                .where(*paid)
                .group_by(day)
            ):
                row = rows.get(_key(d))
                if row is not None:
                    row.refunds_cents = int(refunded or 0)
                    row.revenue_cents = int(amount or 0) - row.refunds_cents
                    row.payments = int(count)
            paying = session.scalar(select(func.count(distinct(Payment.user_id))).where(*paid)) or 0
            self._usage(session, rows, since, keys[0], is_sqlite)
            plans = self._plans(session)
        series = [rows[k] for k in keys]
        return AdminBillingAnalytics(
            currency=currency,
            days=series,
            revenue_cents=sum(r.revenue_cents for r in series),
            paying_users=int(paying),
            plans=plans,
        )

    @staticmethod
    def _usage(
        session: Session, rows: dict[str, AdminBillingDay], since: datetime, first_day: str, is_sqlite: bool
    ) -> None:
        day = utc_day(UsageRecord.created_at, is_sqlite)
        recent = session.execute(
            select(day, func.sum(UsageRecord.images_used), func.sum(UsageRecord.credits_captured))
            .where(UsageRecord.created_at >= since, UsageRecord.state == "captured")
            .group_by(day)
        ).all()
        rolled = session.execute(
            select(UsageDaily.day, func.sum(UsageDaily.images), func.sum(UsageDaily.credits))
            .where(UsageDaily.day >= first_day)
            .group_by(UsageDaily.day)
        ).all()
        for d, images, credits in [*recent, *rolled]:
            row = rows.get(_key(d))
            if row is not None:
                row.images += int(images or 0)
                row.credits_captured += int(credits or 0)

    def _plans(self, session: Session) -> dict[str, int]:
        """Users per plan; a user who never used billing has no account yet and is on the default plan."""
        plans = {
            str(slug): int(count)
            for slug, count in session.execute(
                select(BillingAccount.plan_slug, func.count()).group_by(BillingAccount.plan_slug)
            )
        }
        without = session.scalar(
            select(func.count()).select_from(User).where(~User.id.in_(select(BillingAccount.user_id)))
        )
        if without:
            plans[self.default_plan] = plans.get(self.default_plan, 0) + int(without)
        return plans
