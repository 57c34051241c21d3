"""The billing HTTP API (issue 15, docs/billing.md) on both databases: a user's plan, usage, quotes, ledger and
payments; the refusals POST /generations meets under a plan; the administrators' plan catalogue, plan assignment,
credit grants and analytics. Every refusal is checked by its stable code."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from studiolo.db.base import utcnow
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.billing.models import Payment, UsageDaily, UsageRecord
from studiolo.errors import InvalidInput
from studiolo.services import Services
from tests.helpers import app_with, auth_headers, create_user, drain, job_count

GEN = "/api/v1/generations"
STANDARD = {"prompt": "a lighthouse", "size": "512x512", "steps": 25}


@dataclass
class Billed:
    """An app with STUDIOLO_BILLING=quotas, an administrator's headers and a way to sign in new users."""

    services: Services
    client: TestClient
    admin: dict[str, str]

    def user(self, email: str, plan: str | None = None) -> tuple[str, dict[str, str]]:
        user_id = create_user(self.services, email)
        if plan is not None:
            r = self.client.put(f"/api/v1/admin/users/{user_id}/plan", json={"plan": plan}, headers=self.admin)
            assert r.status_code == 200, r.text
        return user_id, auth_headers(self.services, user_id)


@pytest.fixture
def billed(settings_factory: Callable[..., Any]) -> Iterator[Billed]:
    with app_with(settings_factory, billing="quotas") as (services, client):
        admin = create_user(services, "boss@example.com", role="admin")
        yield Billed(services, client, auth_headers(services, admin))


def error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body: dict[str, Any] = r.json()["error"]
    assert body["code"] == code, body
    return body


# --- a user's own billing ---------------------------------------------------------------------------------------
def test_a_new_user_sees_the_catalogue_their_plan_and_usage(billed: Billed) -> None:
    _, me = billed.user("new@example.com")
    plans = billed.client.get("/api/v1/billing/plans", headers=me).json()
    assert plans["mode"] == "quotas" and plans["default_plan"] == "free"
    assert [p["slug"] for p in plans["plans"]] == ["free", "basic", "pro"]
    assert [p["slug"] for p in plans["credit_packs"]] == ["credits-500", "credits-2500"]

    summary = billed.client.get("/api/v1/billing", headers=me).json()
    assert summary["plan"]["slug"] == "free" and summary["mode"] == "quotas"
    assert (summary["balance"], summary["held"], summary["expiring"], summary["exempt"]) == (50, 0, 50, False)
    assert summary["subscription"]["manageable"] is False

    usage = billed.client.get("/api/v1/billing/usage", headers=me).json()
    assert (usage["month"]["used"], usage["month"]["limit"]) == (0, 5)
    assert (usage["day"]["used"], usage["day"]["limit"]) == (0, 5)
    assert usage["day"]["resets_at"] > usage["day"]["starts_at"]

    [grant] = billed.client.get("/api/v1/billing/ledger", headers=me).json()["items"]
    assert (grant["kind"], grant["amount"], grant["balance_after"]) == ("grant", 50, 50)
    assert billed.client.get("/api/v1/billing/payments", headers=me).json() == {"items": [], "next_cursor": None}


def test_every_user_route_answers_with_billing_off(client: TestClient) -> None:
    """A single-user install: nothing is limited, and the routes say so rather than fail."""
    assert client.get("/api/v1/billing").json()["mode"] == "off"
    assert client.get("/api/v1/billing/usage").json()["mode"] == "off"
    assert client.get("/api/v1/billing/plans").json()["mode"] == "off"
    quote = client.post("/api/v1/billing/quote", json={"prompt": "x", "size": "64x64", "steps": 2}).json()
    assert (quote["mode"], quote["credits"], quote["balance"], quote["allowed"]) == ("off", 0, None, True)
    assert client.get("/api/v1/billing/ledger").json()["items"] == []
    assert client.get("/api/v1/billing/payments").json()["items"] == []


def test_a_quote_is_what_the_submission_reserves(billed: Billed) -> None:
    _, me = billed.user("basic@example.com", "basic")
    body = {**STANDARD, "n": 2}
    quote = billed.client.post("/api/v1/billing/quote", json=body, headers=me).json()
    assert (quote["credits"], quote["images"], quote["balance"], quote["allowed"]) == (2, 2, 1000, True)
    assert (quote["width"], quote["height"], quote["steps"]) == (512, 512, 25) and quote["formula"]
    large = {"prompt": "x", "size": "1024x1024", "steps": 25}
    assert billed.client.post("/api/v1/billing/quote", json=large, headers=me).json()["credits"] == 4

    assert billed.client.post(GEN, json=body, headers=me).status_code == 202
    after = billed.client.get("/api/v1/billing", headers=me).json()
    assert (after["balance"], after["held"]) == (1000 - quote["credits"], quote["credits"])
    reserve = billed.client.get("/api/v1/billing/ledger", headers=me).json()["items"][0]
    assert (reserve["kind"], reserve["amount"], reserve["held"]) == ("reserve", -2, 2)
    drain(billed.services)
    done = billed.client.get("/api/v1/billing", headers=me).json()
    assert (done["balance"], done["held"], done["usage"]["month"]["used"]) == (998, 0, 2)


def test_a_quote_reports_the_refusal_the_submission_meets(billed: Billed) -> None:
    _, me = billed.user("free@example.com")
    big = {"prompt": "x", "size": "2048x1024", "steps": 25}
    quote = billed.client.post("/api/v1/billing/quote", json=big, headers=me).json()
    assert quote["allowed"] is False
    assert (quote["refusal"]["status"], quote["refusal"]["code"]) == (403, "plan_forbids")
    assert quote["refusal"]["details"]["field"] == "size"
    # A request no job could be made of is refused as POST /generations refuses it.
    error(
        billed.client.post("/api/v1/billing/quote", json={"prompt": "x", "size": "13x13"}, headers=me),
        422,
        "invalid_size",
    )
    error(
        billed.client.post("/api/v1/billing/quote", json={"prompt": "x", "model": "nope"}, headers=me),
        409,
        "model_unavailable",
    )
    error(
        billed.client.post("/api/v1/billing/quote", json={"prompt": "x", "kind": "film"}, headers=me),
        422,
        "invalid_input",
    )


def test_submissions_are_refused_by_plan_quota_and_credits(billed: Billed) -> None:
    user, me = billed.user("payer@example.com")
    before = job_count(billed.services)
    forbidden = error(billed.client.post(GEN, json={**STANDARD, "size": "2048x1024"}, headers=me), 403, "plan_forbids")
    assert forbidden["details"]["field"] == "size" and forbidden["details"]["upgrade_url"] == "/pricing"
    error(billed.client.post(GEN, json={**STANDARD, "n": 8}, headers=me), 403, "plan_forbids")

    assert billed.client.post(GEN, json={**STANDARD, "n": 4}, headers=me).status_code == 202
    quota = error(billed.client.post(GEN, json={**STANDARD, "n": 2}, headers=me), 402, "quota_exceeded")
    assert (quota["details"]["limit"], quota["details"]["used"], quota["details"]["requested"]) == (5, 4, 2)
    assert quota["details"]["resets_at"] and quota["details"]["upgrade_url"]
    refused = billed.client.post("/api/v1/billing/quote", json={**STANDARD, "n": 2}, headers=me).json()["refusal"]
    assert (refused["status"], refused["code"]) == (402, "quota_exceeded")

    # 46 left of the 50 granted (4 held): take them away, and one more image is refused for credits.
    r = billed.client.post(
        f"/api/v1/admin/users/{user}/credits", json={"amount": -46, "reason": "test"}, headers=billed.admin
    )
    assert r.status_code == 201, r.text
    credits = error(billed.client.post(GEN, json=STANDARD, headers=me), 402, "insufficient_credits")
    assert (credits["details"]["needed"], credits["details"]["balance"], credits["details"]["held"]) == (1, 0, 4)
    assert job_count(billed.services) == before + 1  # only the accepted one


def test_administrators_are_never_refused(billed: Billed) -> None:
    summary = billed.client.get("/api/v1/billing", headers=billed.admin).json()
    assert summary["exempt"] is True and summary["plan"]["slug"] == "free"
    for _ in range(2):
        r = billed.client.post(GEN, json={**STANDARD, "size": "1024x2048", "n": 4}, headers=billed.admin)
        assert r.status_code == 202, r.text
    quote = billed.client.post("/api/v1/billing/quote", json=STANDARD, headers=billed.admin).json()
    assert (quote["credits"], quote["allowed"]) == (0, True)
    assert billed.client.get("/api/v1/billing/usage", headers=billed.admin).json()["month"]["used"] == 8


def test_a_user_sees_only_their_own_ledger_and_payments(billed: Billed) -> None:
    alice, alice_h = billed.user("alice@example.com", "basic")
    _, bob_h = billed.user("bob@example.com")
    with billed.services.db.session() as session:
        for i in range(3):
            session.add(
                Payment(
                    user_id=alice,
                    kind="subscription",
                    stripe_object_id=f"in_alice_{i}",
                    amount_cents=999,
                    status="paid",
                    description="Basic",
                    receipt_url=f"https://pay.example/receipt/{i}",
                )
            )
    assert billed.client.get("/api/v1/billing", headers=bob_h).json()["balance"] == 50  # bob's account, granted
    theirs = billed.client.get("/api/v1/billing/ledger", headers=alice_h).json()["items"]
    mine = billed.client.get("/api/v1/billing/ledger", headers=bob_h).json()["items"]
    assert theirs and mine and not {e["id"] for e in theirs} & {e["id"] for e in mine}
    assert billed.client.get("/api/v1/billing/payments", headers=bob_h).json()["items"] == []

    first = billed.client.get("/api/v1/billing/payments", params={"limit": 2}, headers=alice_h).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = billed.client.get(
        "/api/v1/billing/payments", params={"limit": 2, "cursor": first["next_cursor"]}, headers=alice_h
    ).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    receipts = {p["receipt_url"] for p in first["items"] + rest["items"]}
    assert receipts == {f"https://pay.example/receipt/{i}" for i in range(3)}
    page = billed.client.get("/api/v1/billing/ledger", params={"limit": 1}, headers=alice_h).json()
    assert len(page["items"]) == 1 and page["next_cursor"] == page["items"][0]["id"]
    error(billed.client.get("/api/v1/billing/ledger", params={"limit": 0}, headers=alice_h), 422, "invalid_input")


# --- administrators --------------------------------------------------------------------------------------------
ADMIN_ROUTES = [
    ("GET", "/api/v1/admin/billing/plans", None),
    ("POST", "/api/v1/admin/billing/plans", {"slug": "team", "name": "Team"}),
    ("GET", "/api/v1/admin/billing/plans/basic", None),
    ("PATCH", "/api/v1/admin/billing/plans/basic", {"monthly_images": 1000}),
    ("DELETE", "/api/v1/admin/billing/plans/basic", None),
    ("POST", "/api/v1/admin/billing/plans/basic/retire", None),
    ("POST", "/api/v1/admin/billing/plans/basic/restore", None),
    ("GET", "/api/v1/admin/billing/analytics", None),
    ("PUT", "/api/v1/admin/users/{me}/plan", {"plan": "pro"}),
    ("POST", "/api/v1/admin/users/{me}/credits", {"amount": 1000, "reason": "mine"}),
    ("GET", "/api/v1/admin/users/{me}/billing", None),
    ("GET", "/api/v1/admin/users/{me}/ledger", None),
]


def test_admin_routes_need_an_administrator(billed: Billed) -> None:
    user, me = billed.user("sneaky@example.com")
    for method, path, body in ADMIN_ROUTES:
        r = billed.client.request(method, path.replace("{me}", user), json=body, headers=me)
        error(r, 403, "admin_required")
    summary = billed.client.get("/api/v1/billing", headers=me).json()
    assert (summary["plan"]["slug"], summary["balance"]) == ("free", 50)
    assert billed.client.get("/api/v1/admin/billing/plans/basic", headers=billed.admin).json()["monthly_images"] == 50


def test_plan_catalogue_create_change_retire_restore_delete(billed: Billed) -> None:
    admin, c = billed.admin, billed.client
    team = {"slug": "team", "name": "Team", "monthly_images": 20, "monthly_credits": 100, "max_images_per_job": 4}
    created = c.post("/api/v1/admin/billing/plans", json=team, headers=admin)
    assert created.status_code == 201 and created.json()["retired"] is False, created.text
    error(c.post("/api/v1/admin/billing/plans", json=team, headers=admin), 409, "plan_exists")
    error(c.post("/api/v1/admin/billing/plans", json={**team, "slug": "Bad Slug"}, headers=admin), 422, "invalid_input")
    error(
        c.post("/api/v1/admin/billing/plans", json={**team, "slug": "t2", "features": ["teleport"]}, headers=admin),
        422,
        "invalid_input",
    )
    error(
        c.post("/api/v1/admin/billing/plans", json={**team, "slug": "t3", "max_pixels": 2**40}, headers=admin),
        422,
        "invalid_input",
    )
    assert c.get("/api/v1/admin/billing/plans/team", headers=admin).json()["monthly_images"] == 20

    user, me = billed.user("member@example.com", "team")
    assert c.post(GEN, json={**STANDARD, "n": 2}, headers=me).status_code == 202
    # A changed plan: its users meet the new limits at their next submission.
    patched = c.patch("/api/v1/admin/billing/plans/team", json={"max_images_per_job": 1}, headers=admin)
    assert patched.status_code == 200 and patched.json()["max_images_per_job"] == 1
    assert patched.json()["monthly_images"] == 20  # untouched fields stay
    error(c.post(GEN, json={**STANDARD, "n": 2}, headers=me), 403, "plan_forbids")
    error(c.patch("/api/v1/admin/billing/plans/team", json={"name": None}, headers=admin), 422, "invalid_input")
    error(c.patch("/api/v1/admin/billing/plans/team", json={"features": ["x"]}, headers=admin), 422, "invalid_input")
    error(c.patch("/api/v1/admin/billing/plans/team", json={"price": 1}, headers=admin), 422, "invalid_input")
    error(c.patch("/api/v1/admin/billing/plans/nope", json={"name": "N"}, headers=admin), 404, "plan_not_found")

    in_use = error(c.delete("/api/v1/admin/billing/plans/team", headers=admin), 409, "plan_in_use")
    assert in_use["details"]["users"] == 1

    # Retired: no longer offered or assignable; its user keeps it and keeps working.
    assert c.post("/api/v1/admin/billing/plans/team/retire", headers=admin).json()["retired"] is True
    assert "team" not in [p["slug"] for p in c.get("/api/v1/billing/plans", headers=me).json()["plans"]]
    listed = c.get("/api/v1/admin/billing/plans", headers=admin).json()["plans"]
    assert {p["slug"]: p["retired"] for p in listed}["team"] is True
    other, _ = billed.user("latecomer@example.com")
    error(c.put(f"/api/v1/admin/users/{other}/plan", json={"plan": "team"}, headers=admin), 409, "plan_retired")
    assert c.get("/api/v1/billing", headers=me).json()["plan"]["slug"] == "team"
    assert c.post(GEN, json=STANDARD, headers=me).status_code == 202
    assert c.post("/api/v1/admin/billing/plans/team/restore", headers=admin).json()["retired"] is False
    assert "team" in [p["slug"] for p in c.get("/api/v1/billing/plans", headers=me).json()["plans"]]

    # The default plan can be neither retired nor deleted.
    error(c.post("/api/v1/admin/billing/plans/free/retire", headers=admin), 409, "default_plan")
    error(c.delete("/api/v1/admin/billing/plans/free", headers=admin), 409, "default_plan")

    assert c.put(f"/api/v1/admin/users/{user}/plan", json={"plan": "basic"}, headers=admin).status_code == 200
    assert c.delete("/api/v1/admin/billing/plans/team", headers=admin).status_code == 204
    error(c.get("/api/v1/admin/billing/plans/team", headers=admin), 404, "plan_not_found")
    error(c.delete("/api/v1/admin/billing/plans/team", headers=admin), 404, "plan_not_found")
    error(c.post("/api/v1/admin/billing/plans/team/retire", headers=admin), 404, "plan_not_found")

    actions = {e["action"] for e in c.get("/api/v1/admin/audit", headers=admin).json()["items"]}
    assert {"billing.plan_created", "billing.plan_updated", "billing.plan_retired", "billing.plan_restored"} <= actions
    assert {"billing.plan_deleted", "billing.plan_assigned"} <= actions


def test_assigning_a_plan_starts_a_new_period(billed: Billed) -> None:
    user, me = billed.user("upgrader@example.com")
    assert billed.client.get("/api/v1/billing", headers=me).json()["balance"] == 50
    r = billed.client.put(
        f"/api/v1/admin/users/{user}/plan", json={"plan": "pro", "reason": "a friend"}, headers=billed.admin
    )
    assert r.status_code == 200, r.text
    assert (r.json()["plan"]["slug"], r.json()["balance"], r.json()["expiring"]) == ("pro", 10000, 10000)
    kinds = [
        e["kind"] for e in billed.client.get(f"/api/v1/admin/users/{user}/ledger", headers=billed.admin).json()["items"]
    ]
    assert kinds == ["grant", "expiry", "grant"]  # the free plan's 50 expired, pro's 10000 granted
    assert billed.client.get(f"/api/v1/admin/users/{user}/billing", headers=billed.admin).json()["balance"] == 10000
    error(
        billed.client.put(f"/api/v1/admin/users/{user}/plan", json={"plan": "gold"}, headers=billed.admin),
        404,
        "plan_not_found",
    )
    error(
        billed.client.put("/api/v1/admin/users/nobody/plan", json={"plan": "pro"}, headers=billed.admin),
        404,
        "user_not_found",
    )
    [entry] = billed.client.get(
        "/api/v1/admin/audit", params={"action": "billing.plan_assigned"}, headers=billed.admin
    ).json()["items"]
    assert entry["target_id"] == user and entry["details"]["reason"] == "a friend"


def test_admin_credit_grants_are_audited_idempotent_and_never_overdraw(billed: Billed) -> None:
    user, me = billed.user("granted@example.com")
    admin, c = billed.admin, billed.client
    path = f"/api/v1/admin/users/{user}/credits"
    r = c.post(path, json={"amount": 100, "reason": "contest prize", "kind": "grant"}, headers=admin)
    assert r.status_code == 201, r.text
    assert (r.json()["kind"], r.json()["amount"], r.json()["balance_after"]) == ("grant", 100, 150)
    assert r.json()["actor_id"] and r.json()["reason"] == "contest prize"
    keyed = {**admin, "Idempotency-Key": "refund-42"}
    once = c.post(path, json={"amount": 25, "reason": "sorry"}, headers=keyed).json()
    again = c.post(path, json={"amount": 25, "reason": "sorry"}, headers=keyed).json()
    assert once["id"] == again["id"] and once["kind"] == "adjustment"
    summary = c.get("/api/v1/billing", headers=me).json()
    assert (summary["balance"], summary["expiring"]) == (175, 50)  # granted credits never expire

    error(c.post(path, json={"amount": 0, "reason": "nothing"}, headers=admin), 422, "invalid_amount")
    short = error(
        c.post(path, json={"amount": -1000, "reason": "too much"}, headers=admin), 409, "insufficient_balance"
    )
    assert short["details"]["balance"] == 175
    error(c.post(path, json={"amount": 5}, headers=admin), 422, "invalid_input")
    error(c.post(path, json={"amount": 5, "reason": "x", "kind": "purchase"}, headers=admin), 422, "invalid_input")
    error(
        c.post("/api/v1/admin/users/nobody/credits", json={"amount": 5, "reason": "x"}, headers=admin),
        404,
        "user_not_found",
    )
    error(c.get("/api/v1/admin/users/nobody/billing", headers=admin), 404, "user_not_found")
    error(c.get("/api/v1/admin/users/nobody/ledger", headers=admin), 404, "user_not_found")
    audited = c.get("/api/v1/admin/audit", params={"action": "billing.credits_adjusted"}, headers=admin).json()
    assert [e["details"]["amount"] for e in audited["items"]] == [25, 100]


def test_analytics_sums_revenue_and_usage_per_utc_day(billed: Billed) -> None:
    user, me = billed.user("spender@example.com", "basic")
    other, _ = billed.user("other@example.com")
    now = utcnow()
    yesterday = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    with billed.services.db.session() as session:
        payments = [
            ("paid", 999, 0, user, "usd"),
            ("partially_refunded", 1999, 500, user, "usd"),
            ("refunded", 500, 500, other, "usd"),
            ("failed", 999, 0, other, "usd"),
            ("paid", 700, 0, other, "eur"),  # another currency: not summed with dollars
        ]
        for i, (status, amount, refunded, owner, currency) in enumerate(payments):
            session.add(
                Payment(
                    user_id=owner,
                    kind="credits",
                    stripe_object_id=f"cs_{i}",
                    amount_cents=amount,
                    refunded_cents=refunded,
                    status=status,
                    currency=currency,
                    created_at=now,
                )
            )
        session.add(UsageDaily(user_id=user, day=yesterday, jobs=3, images=7, credits=9))
    assert billed.client.post(GEN, json={**STANDARD, "n": 3}, headers=me).status_code == 202
    drain(billed.services)
    with billed.services.db.session() as session:
        assert session.query(UsageRecord).filter_by(user_id=user, state="captured").count() == 1

    r = billed.client.get("/api/v1/admin/billing/analytics", params={"days": 2}, headers=billed.admin)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["currency"] == "usd"
    first, today = data["days"]
    assert first["day"] == yesterday and today["day"] == now.strftime("%Y-%m-%d")
    assert (first["images"], first["credits_captured"], first["revenue_cents"]) == (7, 9, 0)
    assert (today["revenue_cents"], today["refunds_cents"], today["payments"]) == (999 + 1499, 1000, 3)
    assert (today["images"], today["credits_captured"]) == (3, 3)
    assert data["revenue_cents"] == 2498 and data["paying_users"] == 2
    # The install's local owner, the administrator and the other user have no account yet: the default plan.
    assert data["plans"] == {"basic": 1, "free": 3}
    assert len(billed.client.get("/api/v1/admin/billing/analytics", headers=billed.admin).json()["days"]) == 30
    for bad in ("0", "366", "x"):
        r = billed.client.get("/api/v1/admin/billing/analytics", params={"days": bad}, headers=billed.admin)
        error(r, 422, "invalid_input")


def test_a_plans_file_adds_plans_packs_and_model_factors(settings_factory: Callable[..., Any], tmp_path: Path) -> None:
    path = tmp_path / "plans.toml"
    path.write_text(
        '[[plans]]\nslug = "team"\nname = "Team"\nmonthly_credits = 300\nsort_order = 3\n'
        '[[credit_packs]]\nslug = "credits-100"\ncredits = 100\nprice_cents = 100\n'
        '[model_credits]\n"echo" = 2.0\n'
    )
    with app_with(settings_factory, billing="quotas", billing_plans_file=path) as (services, client):
        user = create_user(services, "team@example.com")
        services.billing.assign_plan(user, "team", actor_id=None, origin=Origin())
        me = auth_headers(services, user)
        plans = client.get("/api/v1/billing/plans", headers=me).json()
        assert [p["slug"] for p in plans["plans"]] == ["free", "basic", "pro", "team"]
        assert [p["slug"] for p in plans["credit_packs"]] == ["credits-100"]
        assert plans["model_credits"] == {"echo": 2.0}
        quote = client.post("/api/v1/billing/quote", json={**STANDARD, "model": "echo"}, headers=me).json()
        assert (quote["model"], quote["credits"], quote["balance"]) == ("echo", 2, 300)
        assert client.post(GEN, json={**STANDARD, "model": "echo"}, headers=me).status_code == 202
        assert client.get("/api/v1/billing", headers=me).json()["held"] == 2


def test_a_broken_plans_file_or_an_unknown_default_plan_stops_the_start(
    settings_factory: Callable[..., Any], tmp_path: Path
) -> None:
    path = tmp_path / "plans.json"
    path.write_text('{"plans": [{"slug": "x"}]}')
    with pytest.raises(InvalidInput) as broken, app_with(settings_factory, billing="quotas", billing_plans_file=path):
        pass
    assert broken.value.code == "invalid_plans_file" and "name" in broken.value.message
    with pytest.raises(InvalidInput) as unknown, app_with(settings_factory, billing_default_plan="gold"):
        pass
    assert unknown.value.code == "invalid_default_plan"


def test_every_billing_route_is_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    billing = {p: ops for p, ops in paths.items() if "billing" in p or p.endswith(("/plan", "/credits", "/ledger"))}
    assert len(billing) >= 14
    for path, ops in billing.items():
        for method, op in ops.items():
            assert op.get("summary") and op.get("description"), (method, path)


def test_the_daily_window_and_a_canceled_job_gives_its_images_back(billed: Billed) -> None:
    plan = {"slug": "daily", "name": "Daily", "monthly_images": 100, "daily_images": 2, "monthly_credits": 100}
    assert billed.client.post("/api/v1/admin/billing/plans", json=plan, headers=billed.admin).status_code == 201
    _, me = billed.user("daily@example.com", "daily")
    job = billed.client.post(GEN, json={**STANDARD, "n": 2}, headers=me).json()
    day = error(billed.client.post(GEN, json=STANDARD, headers=me), 402, "quota_exceeded")["details"]
    assert (day["window"], day["limit"], day["used"]) == ("day", 2, 2)
    assert day["resets_at"].endswith("T00:00:00+00:00")
    usage = billed.client.get("/api/v1/billing/usage", headers=me).json()
    assert (usage["day"]["used"], usage["month"]["used"], usage["month"]["limit"]) == (2, 2, 100)

    assert billed.client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=me).status_code == 200
    assert billed.client.get("/api/v1/billing/usage", headers=me).json()["day"]["used"] == 0
    assert billed.client.get("/api/v1/billing", headers=me).json()["balance"] == 100  # released
    assert billed.client.post(GEN, json=STANDARD, headers=me).status_code == 202
