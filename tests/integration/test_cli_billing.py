"""``studiolo billing plans|usage|grant|assign`` in-process (typer's CliRunner) on a temporary install with
STUDIOLO_BILLING=quotas, on PostgreSQL too when the suite runs there: what the operator reads, what the commands
change (audited, no actor, origin ``cli``), and one clear line with a non-zero exit code for what cannot be done."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from typer.testing import CliRunner, Result

from studiolo.cli import app
from studiolo.services import Services, build_services
from studiolo.settings import Settings
from tests.helpers import create_user

Run = Callable[..., Result]


@pytest.fixture
def install(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Run, Services]]:
    """The CLI's environment, and the same install's services (to make accounts and read what the CLI did)."""
    for key in list(os.environ):
        if key.startswith("STUDIOLO_"):
            monkeypatch.delenv(key)
    settings = settings_factory(billing="quotas")
    env = {
        "STUDIOLO_DATA_DIR": str(settings.data_dir),
        "STUDIOLO_ENV": "test",
        "STUDIOLO_LOG_LEVEL": "warning",
        "STUDIOLO_BILLING": "quotas",
        "STUDIOLO_DATABASE_URL": settings.database_url,
        "COLUMNS": "200",  # a table row and an error on one line each
    }
    services = build_services(settings, upgrade_db=False)
    try:
        yield (lambda *args: CliRunner().invoke(app, list(args), env=env)), services
    finally:
        services.close()


def test_plans_lists_the_catalogue(install: tuple[Run, Services]) -> None:
    run, _ = install
    r = run("billing", "plans")
    assert r.exit_code == 0, r.output
    assert "Billing mode: quotas; new accounts get the plan 'free'." in r.stdout
    for text in ("free", "basic", "pro", "9.99 USD", "19.99 USD", "5/month, 5/day", "watermark", "credits-500"):
        assert text in r.stdout, text


def test_assign_grant_and_usage(install: tuple[Run, Services]) -> None:
    run, services = install
    user = create_user(services, "ada@example.com")
    r = run("billing", "assign", "Ada@Example.com", "basic", "--reason", "team member")
    assert r.exit_code == 0 and r.stdout.strip() == "Ada@Example.com: plan basic, 1,000 credits", r.output
    r = run("billing", "grant", "ada@example.com", "25", "--reason", "contest prize")
    assert r.exit_code == 0 and r.stdout.strip() == "granted 25 credits: ada@example.com now has 1,025", r.output
    r = run("billing", "grant", "--reason", "refund mistake", "ada@example.com", "--", "-5")
    assert r.exit_code == 0 and r.stdout.strip() == "took away 5 credits: ada@example.com now has 1,020", r.output

    r = run("billing", "usage", "ada@example.com")
    assert r.exit_code == 0, r.output
    assert "plan basic (Basic)" in r.stdout and "0 of 50 images" in r.stdout and "0 of unlimited images" in r.stdout
    assert "1,020 spendable, 0 held, 1,000 of them expire" in r.stdout

    entries = services.billing.ledger(user).items
    assert [(e.kind, e.amount, e.reason, e.actor_id) for e in entries[:2]] == [
        ("adjustment", -5, "refund mistake", None),
        ("grant", 25, "contest prize", None),
    ]
    audit = services.admin.audit_log(actor_id=None, action="billing.credits_adjusted", cursor=None, limit=10).items
    assert [(e.ip, e.target_id, e.details["amount"]) for e in audit] == [("cli", user, -5), ("cli", user, 25)]
    [assigned] = services.admin.audit_log(actor_id=None, action="billing.plan_assigned", cursor=None, limit=10).items
    assert assigned.details["plan"] == "basic" and assigned.details["reason"] == "team member"


@pytest.mark.parametrize(
    ("args", "code", "exit_code"),
    [
        (("usage", "nobody@example.com"), "user_not_found", 1),
        (("grant", "nobody@example.com", "5", "--reason", "x"), "user_not_found", 1),
        (("assign", "nobody@example.com", "pro"), "user_not_found", 1),
        (("assign", "ada@example.com", "gold"), "plan_not_found", 1),
        (("grant", "ada@example.com", "0", "--reason", "x"), "invalid_amount", 1),
        (("grant", "--reason", "x", "ada@example.com", "--", "-51"), "insufficient_balance", 1),
        (("grant", "ada@example.com", "5"), "Missing option '--reason'", 2),
        (("grant", "ada@example.com", "5", "--reason", "  "), "give a reason", 2),
        (("grant", "ada@example.com", "many", "--reason", "x"), "Invalid value for 'amount'", 2),
    ],
)
def test_what_cannot_be_done_is_one_line_and_a_non_zero_exit(
    install: tuple[Run, Services], args: tuple[str, ...], code: str, exit_code: int
) -> None:
    run, services = install
    user = create_user(services, "ada@example.com")
    r = run("billing", *args)
    assert r.exit_code == exit_code, r.output
    assert code in r.output and "Traceback" not in r.output
    assert isinstance(r.exception, SystemExit)
    assert services.billing.summary(user).balance == 50  # nothing changed
