"""``studiolo billing``: the plan catalogue, a user's usage and credits, granting credits and assigning plans.

The same BillingService calls as the admin API (docs/billing.md); what the CLI changes is audited with no actor
(the operator at the machine) and the origin ``cli``. A domain error (an unknown email or plan, taking away more
credits than a user has) becomes one line and exit code 1 through the ``command_services`` context of the main CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from studiolo.cli_images import _owner as user_by_email
from studiolo.cli_options import SuggestingGroup
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.billing.schemas import PlanView, UsageWindow

CommandServices = Callable[[], AbstractContextManager[Any]]
CLI_ORIGIN = Origin(ip="cli", user_agent="studiolo cli")
EMAIL = typer.Argument(help="The account's email address.")


def _limit(value: int | None, unit: str = "") -> str:
    return "unlimited" if value is None else f"{value:,}{unit}"


def _price(plan: PlanView) -> str:
    return "free" if plan.price_cents == 0 else f"{plan.price_cents / 100:.2f} {plan.currency.upper()}"


def _window(w: UsageWindow) -> str:
    return f"{w.used:,} of {_limit(w.limit)} images (resets {w.resets_at:%Y-%m-%d %H:%M} UTC)"


def _reason(reason: str) -> str:
    text = reason.strip()
    if not text or len(text) > 500:
        raise typer.BadParameter("give a reason of 1 to 500 characters", param_hint="--reason")
    return text


def build_billing_app(command_services: CommandServices, out: Console) -> typer.Typer:
    """The ``billing`` command group, bound to the main CLI's services factory and output console."""
    billing_app = typer.Typer(
        help="Plans, usage and credits (STUDIOLO_BILLING; docs/billing.md).", no_args_is_help=True, cls=SuggestingGroup
    )

    @billing_app.command("plans")
    def billing_plans() -> None:
        """The plan catalogue, retired plans included, and the credit packs."""
        with command_services() as services:
            catalogue = services.billing.list_plans(include_retired=True)
        out.print(f"Billing mode: {catalogue.mode}; new accounts get the plan '{catalogue.default_plan}'.")
        table = Table("plan", "price", "images", "credits/mo", "per job", "queue", "notes")
        for p in catalogue.plans:
            images = "unlimited" if p.monthly_images is None else f"{p.monthly_images:,}/month"
            if p.daily_images is not None:
                images += f", {p.daily_images:,}/day"
            pixels = "any size" if p.max_pixels is None else f"{p.max_pixels / 2**20:g} MP"
            per_job = f"{pixels}, {_limit(p.max_images_per_job)} images, {_limit(p.max_steps)} steps"
            queue = f"priority {p.queue_priority}, {_limit(p.max_running_jobs)} running"
            notes = ", ".join([*(["watermark"] if p.watermark else []), *(["retired"] if p.retired else [])])
            table.add_row(f"{p.slug}\n{p.name}", _price(p), images, f"{p.monthly_credits:,}", per_job, queue, notes)
        out.print(table)
        packs = ", ".join(
            f"{k.slug} ({k.credits:,} credits, {k.price_cents / 100:.2f})" for k in catalogue.credit_packs
        )
        out.print(f"Credit packs: {packs or 'none'}")

    @billing_app.command("usage")
    def billing_usage(email: Annotated[str, EMAIL]) -> None:
        """A user's plan, images this month and today, and credits (spendable, held by queued jobs, expiring)."""
        with command_services() as services:
            summary = services.billing.summary(user_by_email(services, email))
        if summary.mode == "off":
            out.print("Billing is off (STUDIOLO_BILLING=off): nothing is limited or charged.")
        exempt = " (an administrator: never refused)" if summary.exempt else ""
        out.print(f"{email}: plan {summary.plan.slug} ({escape(summary.plan.name)}){exempt}")
        out.print(f"  period   {summary.period_start:%Y-%m-%d %H:%M} to {summary.period_end:%Y-%m-%d %H:%M} UTC")
        out.print(f"  month    {_window(summary.usage.month)}")
        out.print(f"  day      {_window(summary.usage.day)}")
        out.print(
            f"  credits  {summary.balance:,} spendable, {summary.held:,} held, "
            f"{summary.expiring:,} of them expire at the period's end"
        )

    @billing_app.command("grant")
    def billing_grant(
        email: Annotated[str, EMAIL],
        amount: Annotated[int, typer.Argument(help="Credits to add; to take some away, options first, then `-- -N`.")],
        reason: Annotated[str, typer.Option(help="Why (kept in the ledger and the audit log).")],
    ) -> None:
        """Add (or take away) credits, with a reason; audited. They never expire."""
        why = _reason(reason)
        with command_services() as services:
            entry = services.billing.adjust_credits(
                user_by_email(services, email),
                amount,
                kind="grant" if amount > 0 else "adjustment",
                reason=why,
                actor_id=None,
                origin=CLI_ORIGIN,
            )
        verb = "granted" if amount > 0 else "took away"
        out.print(f"{verb} {abs(amount):,} credits: {email} now has {entry.balance_after:,}")

    @billing_app.command("assign")
    def billing_assign(
        email: Annotated[str, EMAIL],
        plan: Annotated[str, typer.Argument(help="The plan's slug (see `studiolo billing plans`).")],
        reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "",
    ) -> None:
        """Put a user on a plan (audited). A new plan starts a new period: the old plan's unspent credits expire."""
        with command_services() as services:
            summary = services.billing.assign_plan(
                user_by_email(services, email), plan, actor_id=None, origin=CLI_ORIGIN, reason=reason.strip()[:500]
            )
        out.print(f"{email}: plan {summary.plan.slug}, {summary.balance:,} credits")

    return billing_app
