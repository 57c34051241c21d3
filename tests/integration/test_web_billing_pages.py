"""The billing pages through HTTP (issue 15): /pricing, /billing, the admin's /admin/plans and /admin/users/{id}, and
the generator's cost line, in each billing mode. Their scripts run in tests/e2e/test_web_billing.py (Playwright).

Pages are rendered from BillingService, so these need no billing API route: they hold on main alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient

from studiolo.app import create_app
from studiolo.domain.accounts.audit import Origin
from studiolo.services import Services, build_services
from tests.helpers import create_user, drain, submit
from tests.integration.test_web_pages import HTML, PASSWORD, Page, assert_page_headers

BILLING_PAGES = {"/pricing": "Plans and pricing", "/billing": "Billing"}
ORIGIN = Origin("127.0.0.1", "tests")


@pytest.fixture
def studio(settings_factory: Callable[..., Any]) -> Iterator[Callable[..., tuple[Services, Callable[..., TestClient]]]]:
    """Services in a billing mode, and a factory of signed-in browsers (cookie sessions) on them."""
    with ExitStack() as stack:

        def make(mode: str) -> tuple[Services, Callable[..., TestClient]]:
            keys = {"stripe_secret_key": "sk_test_pages", "stripe_webhook_secret": "whsec_pages"}
            keys = keys if mode == "stripe" else {}
            services = build_services(settings_factory(billing=mode, **keys), upgrade_db=False)
            stack.callback(services.close)

            def browser(email: str | None = None, role: str = "user") -> TestClient:
                c = stack.enter_context(TestClient(create_app(services=services, start_workers=False)))
                if email is not None:
                    create_user(services, email, password=PASSWORD, role=role)
                    body = {"email": email, "password": PASSWORD, "use_cookies": True}
                    assert c.post("/api/v1/auth/login", json=body).status_code == 200
                return c

            return services, browser

        yield make


def get(c: TestClient, url: str, status: int = 200) -> Page:
    r = c.get(url, headers=HTML, follow_redirects=False)
    assert r.status_code == status, (url, r.status_code, r.text[:300])
    if status == 200:
        assert_page_headers(r)
    return Page(r.text)


def text(page: Page) -> str:
    return " ".join(" ".join(page.data).split())


def nav_links(page: Page) -> list[str]:
    return [a["href"] for a in page.all("a") if a.get("href") in ("/billing", "/pricing", "/admin/plans")]


def test_billing_off_says_so_and_hides_the_links(studio: Any) -> None:
    _, browser = studio("off")
    admin = browser("root@example.com", role="admin")
    for url, heading in BILLING_PAGES.items():
        page = get(admin, url)
        assert page.headings == [heading]
        assert "Billing is not enabled on this server" in text(page)
        assert not page.all("button", **{"data-checkout-plan": "basic"})
    for url in ("/generate", "/admin", "/admin/users"):
        page = get(admin, url)
        assert nav_links(page) == [], url
        assert not page.all("p", id="cost-line"), url  # the generator asks for no quote
    assert "Nothing is charged or limited by it" in text(get(admin, "/generate"))
    assert "Billing is not enabled" in text(get(admin, "/admin/plans"))
    assert nav_links(get(browser(), "/signin")) == []


def test_pricing_lists_the_catalogue_and_marks_the_current_plan(studio: Any) -> None:
    _, browser = studio("stripe")
    user = browser("ann@example.com")
    page = get(user, "/pricing")
    assert page.headings == ["Plans and pricing"]
    words = text(page)
    expected_words = ("Free", "Basic", "$9.99", "Pro", "$19.99", "Images per month", "Unlimited",
                      "1.0 MP (1024\u00d71024)", "Watermark", "Credit packs", "500 credits", "$5.00")  # fmt: skip
    for expected in expected_words:
        assert expected in words, expected
    # The film studio (issue 16) is listed where a plan unlocks it: Basic and Pro, not Free.
    assert words.count("Film studio") == 2
    # On Free now: Free is marked, the others can be chosen (a Stripe checkout), and packs bought.
    current = [li for li in page.all("li") if "current" in li.get("class", "")]
    assert [li["aria-labelledby"] for li in current] == ["plan-free"]
    assert {b["data-checkout-plan"] for b in page.all("button") if "data-checkout-plan" in b} == {"basic", "pro"}
    assert {b["data-checkout-pack"] for b in page.all("button") if "data-checkout-pack" in b} == {
        "credits-500",
        "credits-2500",
    }
    assert "/billing" in nav_links(page)
    # Signed out: the same catalogue, with sign-up links instead of checkout buttons, and Pricing in the header.
    visitor = get(browser(), "/pricing")
    assert "Sign up to choose Basic" in text(visitor)
    assert not [b for b in visitor.all("button") if "data-checkout-plan" in b]
    assert nav_links(visitor) == ["/pricing"]


def test_quotas_mode_asks_the_administrator(studio: Any) -> None:
    _, browser = studio("quotas")
    user = browser("bo@example.com")
    page = get(user, "/pricing")
    assert "Ask your administrator to move you to Basic" in text(page)
    assert not [b for b in page.all("button") if "data-checkout-plan" in b or "data-checkout-pack" in b]
    assert "Credit packs" not in text(page)


def test_billing_page_shows_usage_credits_and_the_ledger(studio: Any) -> None:
    services, browser = studio("quotas")
    user = browser("cy@example.com")
    user_id = services.admin.list_users(q="cy@", limit=1).items[0].id
    submit(services, user_id, n=2)
    drain(services)
    services.billing.adjust_credits(user_id, 7, reason="Welcome gift", actor_id=None, origin=ORIGIN)
    page = get(user, "/billing?checkout=success")
    words = text(page)
    assert page.headings == ["Billing"]
    assert "Thank you: your payment went through." in words
    assert "2 of 5 images" in words  # the free plan's month and day windows
    bars = [d for d in page.all("div") if d.get("role") == "progressbar"]
    assert [(b["aria-valuenow"], b["aria-valuemax"]) for b in bars] == [("2", "5"), ("2", "5")]
    summary = services.billing.summary(user_id)
    assert page.all("span", id="credit-balance")
    assert f"{summary.balance:,}" in words
    assert "Welcome gift" in words and "Charged" in words and "Monthly grant" in words
    # quotas mode: no payments, no portal, no checkout
    assert not page.all("button", id="manage-subscription") and "Payments" not in page.headings
    assert not [b for b in page.all("button") if "data-checkout-pack" in b]
    ledger = page.all("table", **{"data-ledger": "billing/ledger"})
    assert ledger and "Show older" in words


def test_generator_carries_the_cost_line_when_billing_is_on(studio: Any) -> None:
    _, browser = studio("quotas")
    page = get(browser("di@example.com"), "/generate")
    assert page.all("p", id="cost-line") and page.all("div", id="billing-refusal")
    assert "credits = images x" in text(page)  # the formula, from the billing service
    assert "Nothing is charged or limited by it" not in text(page)


def test_admin_views(studio: Any) -> None:
    services, browser = studio("stripe")
    admin = browser("root@example.com", role="admin")
    user_id = create_user(services, "ed@example.com")
    services.billing.adjust_credits(user_id, 25, reason="Beta tester", actor_id=None, origin=ORIGIN)
    plans = get(admin, "/admin/plans")
    assert plans.headings == ["Plans"]
    assert {r["data-slug"] for r in plans.all("tr") if "data-slug" in r} == {"free", "basic", "pro"}
    assert [b["data-api"] for b in plans.all("button") if "data-api" in b] == [
        "/api/v1/admin/billing/plans/basic/retire",
        "/api/v1/admin/billing/plans/pro/retire",
    ]  # the default plan cannot be retired: no button
    assert "/admin/plans" in nav_links(plans)
    detail = get(admin, f"/admin/users/{user_id}")
    assert detail.headings == ["ed@example.com"]
    assert detail.all("form", **{"data-api": f"/api/v1/admin/users/{user_id}/plan", "data-method": "PUT"})
    assert detail.all("form", **{"data-api": f"/api/v1/admin/users/{user_id}/credits"})
    assert "Beta tester" in text(detail)
    assert detail.all("table", **{"data-ledger": f"admin/users/{user_id}/ledger"})
    assert [a for a in get(admin, "/admin/users").all("a") if a.get("href") == f"/admin/users/{user_id}"]
    assert get(admin, "/admin").all("section", id="billing-analytics")
    get(admin, "/admin/users/00000000-0000-0000-0000-000000000000", status=404)
    # Not for other users.
    get(browser("fay@example.com"), "/admin/plans", status=403)
    get(browser("gus@example.com"), f"/admin/users/{user_id}", status=403)


def test_signed_out_billing_goes_to_sign_in(studio: Any) -> None:
    _, browser = studio("stripe")
    r = browser().get("/billing", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/signin?next=")
