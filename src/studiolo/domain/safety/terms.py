"""What an owner's plan says of their outputs: the visible watermark and the NSFW policy (issue 17).

Billing off: the install's settings for everyone. Billing on: the plan's ``watermark`` flag (issue 15 stores it) and
its ``nsfw_policy`` (NULL: the install's). Read per output in the worker, so kept for a few seconds per owner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import select

from studiolo.db.session import Database
from studiolo.domain.billing.models import BillingAccount, Plan
from studiolo.domain.safety.outputs import OwnerTerms
from studiolo.domain.safety.ports import NSFW_POLICIES, NsfwPolicy
from studiolo.settings import Settings

_TTL_SECONDS = 30.0  # a plan change reaches the outputs of running workers within this


def _policy(value: str | None, default: NsfwPolicy) -> NsfwPolicy:
    return value if value in NSFW_POLICIES else default


def owner_terms(db: Database, settings: Settings) -> Callable[[str], OwnerTerms]:
    """The reader the output guard asks, per owner."""
    default_policy = settings.nsfw_policy
    always = settings.watermark_visible == "always"
    if settings.billing == "off":
        fixed = OwnerTerms(watermark=always, nsfw_policy=default_policy)
        return lambda owner_id: fixed
    cache: dict[str, tuple[float, OwnerTerms]] = {}
    lock = threading.Lock()

    def read(owner_id: str) -> OwnerTerms:
        now = time.monotonic()
        with lock:
            hit = cache.get(owner_id)
        if hit is not None and now - hit[0] < _TTL_SECONDS:
            return hit[1]
        with db.session() as session:
            slug = session.scalar(select(BillingAccount.plan_slug).where(BillingAccount.user_id == owner_id))
            row = session.execute(
                select(Plan.watermark, Plan.nsfw_policy).where(Plan.slug == (slug or settings.billing_default_plan))
            ).first()
        watermark, policy = (bool(row[0]), row[1]) if row is not None else (False, None)
        terms = OwnerTerms(
            watermark=always or (watermark and settings.watermark_visible == "plan"),
            nsfw_policy=_policy(policy, default_policy),
        )
        with lock:
            cache[owner_id] = (now, terms)
        return terms

    return read
