"""A suspended user is told why and what to do (the reason the administrator gave, or a plain sentence), on the
sign-in form, from the API and on the page they open; error and offline pages carry the signed-in header."""

from __future__ import annotations

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from studiolo.cli import app as cli_app
from studiolo.services import Services
from tests.helpers import create_user

STRONG = "velvet-harbor-1937"
PAGE = {"Accept": "text/html"}


def login(api: TestClient, email: str) -> dict:
    r = api.post("/api/v1/auth/login", json={"email": email, "password": STRONG})
    return {"status": r.status_code, **r.json()}


def cookie(token: str) -> dict[str, str]:
    return {**PAGE, "Cookie": f"studiolo_access={token}"}


def test_a_suspended_user_sees_the_reason_everywhere(api: TestClient, client: TestClient, services: Services) -> None:
    bob = create_user(services, "bob@example.com", password=STRONG)
    token = login(api, "bob@example.com")["access_token"]
    key = api.post("/api/v1/api-keys", json={"name": "cron"}, headers={"Authorization": f"Bearer {token}"})
    assert key.status_code == 201, key.text

    r = client.post(f"/api/v1/admin/users/{bob}/suspend", json={"reason": "  Shared the account with a team  "})
    assert r.status_code == 200 and r.json()["status"] == "suspended", r.text

    # The sign-in form's answer: the code as before, the reason and what to do in words.
    answer = login(api, "bob@example.com")
    assert answer["status"] == 403 and answer["error"]["code"] == "account_suspended"
    message = answer["error"]["message"]
    assert "“Shared the account with a team”" in message and "ask the administrator" in message
    assert answer["error"]["details"] == {"reason": "Shared the account with a team"}

    # The access token they still hold: the API says the same, and a page says it as a page (not the sign-in form).
    me = api.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 403 and me.json()["error"]["message"] == message
    page = api.get("/gallery", headers=cookie(token), follow_redirects=False)
    assert page.status_code == 403 and "text/html" in page.headers["content-type"]
    assert "Your account is suspended" in page.text and "Shared the account with a team" in page.text
    assert 'id="sign-out"' in page.text and 'href="/signin"' in page.text
    # Signing in as someone else stays possible on that browser.
    assert api.get("/signin", headers=cookie(token)).status_code == 200

    # Re-activated, then suspended without a reason: a plain sentence, not an old reason.
    assert client.post(f"/api/v1/admin/users/{bob}/activate").status_code == 200
    assert client.post(f"/api/v1/admin/users/{bob}/suspend").status_code == 200
    plain = login(api, "bob@example.com")["error"]
    assert plain["message"].startswith("An administrator suspended this account. ")
    assert "Shared" not in plain["message"] and plain["details"] == {"reason": None}

    too_long = client.post(f"/api/v1/admin/users/{bob}/activate")
    assert too_long.status_code == 200
    r = client.post(f"/api/v1/admin/users/{bob}/suspend", json={"reason": "x" * 501})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"


def test_error_pages_know_the_signed_in_user(api: TestClient, services: Services) -> None:
    create_user(services, "ann@example.com", password=STRONG)
    token = login(api, "ann@example.com")["access_token"]
    mine = api.get("/no-such-page", headers=cookie(token))
    assert mine.status_code == 404
    assert '<nav class="nav" id="nav" aria-label="Main">' in mine.text and 'href="/gallery"' in mine.text
    assert 'id="sign-out"' in mine.text and ">Sign in</a>" not in mine.text
    anonymous = api.get("/no-such-page", headers=PAGE)
    assert anonymous.status_code == 404 and ">Sign in</a>" in anonymous.text and 'id="sign-out"' not in anonymous.text


def test_the_offline_page_names_nobody_and_carries_both_headers(api: TestClient, services: Services) -> None:
    create_user(services, "ann@example.com", password=STRONG)
    token = login(api, "ann@example.com")["access_token"]
    # Cached once by the service worker for everyone on the device: the same bytes whoever asks.
    signed_in = api.get("/offline", headers=cookie(token)).text
    assert signed_in == api.get("/offline", headers=PAGE).text
    assert "ann@example.com" not in signed_in and 'href="/admin"' not in signed_in
    assert '<nav class="nav" id="nav" aria-label="Main" data-shell="signed-in" hidden>' in signed_in
    assert 'data-shell="signed-out">Sign in</a>' in signed_in


def test_the_cli_suspends_with_a_reason_too(api: TestClient, services: Services) -> None:
    create_user(services, "cat@example.com", password=STRONG)
    env = {"STUDIOLO_DATA_DIR": str(services.settings.data_dir), "STUDIOLO_ENV": "test"}
    if services.settings.database_url:
        env["STUDIOLO_DATABASE_URL"] = services.settings.database_url
    result = CliRunner().invoke(cli_app, ["users", "suspend", "cat@example.com", "--reason", "Spam"], env=env)
    assert result.exit_code == 0, result.output
    error = login(api, "cat@example.com")["error"]
    assert error["code"] == "account_suspended" and error["details"] == {"reason": "Spam"}
