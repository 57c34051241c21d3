"""Sign in with Google and GitHub, end to end: the app (TestClient) sends the browser (httpx) to a real local
provider (tests/oidc_provider.py) and back; the app exchanges the code and checks the ID token over real HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from studiolo.app import create_app
from studiolo.db.base import utcnow
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import AuditEvent, OAuthAccount, User
from studiolo.services import Services, build_services
from tests.helpers import create_user
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, GitHubUser, GoogleUser, LocalProvider

START = "/api/v1/auth/oauth/{}/start"
# What TestClient answers: an httpx or an httpx2 response, depending on the installed Starlette.
Response = Any


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    p = LocalProvider()
    p.start()
    yield p
    p.stop()


@pytest.fixture
def idp(provider: LocalProvider) -> LocalProvider:
    provider.reset()
    return provider


def provider_settings(idp: LocalProvider, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "google_client_id": CLIENT_ID,
        "google_client_secret": CLIENT_SECRET,
        "google_discovery_url": f"{idp.url}/.well-known/openid-configuration",
        "github_client_id": CLIENT_ID,
        "github_client_secret": CLIENT_SECRET,
        "github_authorize_url": f"{idp.url}/login/oauth/authorize",
        "github_token_url": f"{idp.url}/login/oauth/access_token",
        "github_api_url": idp.url,
        "hub_timeout_seconds": 5.0,
    }
    values.update(overrides)
    return values


@pytest.fixture
def oauth_services(settings_factory: Any, idp: LocalProvider) -> Iterator[Services]:
    svc = build_services(settings_factory(**provider_settings(idp)), upgrade_db=False)
    yield svc
    svc.close(timeout=10)


@pytest.fixture
def web(oauth_services: Services) -> Iterator[TestClient]:
    """A browser with no session: it keeps cookies, and follows no redirect on its own."""
    with TestClient(create_app(services=oauth_services, start_workers=False), follow_redirects=False) as c:
        yield c


def to_provider_and_back(web: TestClient, provider: str, **params: str) -> str:
    """Start the sign-in and let the (auto-approving) provider answer: the callback URL it sends the browser to."""
    start = web.get(START.format(provider), params=params)
    assert start.status_code == 302, start.text
    at_provider = httpx.get(start.headers["location"], follow_redirects=False)
    assert at_provider.status_code == 302, at_provider.text
    back: str = at_provider.headers["location"]
    assert back.startswith(f"http://testserver/api/v1/auth/oauth/{provider}/callback?")
    return back


def sign_in(web: TestClient, provider: str, **params: str) -> Response:
    return web.get(to_provider_and_back(web, provider, **params))


def error_code(response: Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def count(services: Services, model: Any) -> int:
    with services.db.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def actions(services: Services, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    with services.db.session() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.actor_id == user_id).order_by(AuditEvent.id))
        return [(r.action, r.details) for r in rows]


def mark_verified(services: Services, user_id: str) -> None:
    with services.db.session() as session:
        session.get_one(User, user_id).email_verified_at = utcnow()


# --- Google (OpenID Connect) ------------------------------------------------------------------------------
def test_start_redirects_with_state_pkce_and_nonce_kept_in_a_short_lived_cookie(
    web: TestClient, idp: LocalProvider
) -> None:
    r = web.get(START.format("google"), params={"next": "/gallery"})
    assert r.status_code == 302
    url = urlsplit(r.headers["location"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{idp.url}/authorize"
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert q["client_id"] == CLIENT_ID and q["response_type"] == "code"
    assert q["redirect_uri"] == "http://testserver/api/v1/auth/oauth/google/callback"
    assert set(q["scope"].split()) == {"openid", "email", "profile"}
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert len(q["state"]) >= 32 and len(q["nonce"]) >= 32
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("studiolo_oauth=")
    for attribute in ("HttpOnly", "Max-Age=600", "Path=/api/v1/auth/oauth", "SameSite=lax"):
        assert attribute in cookie
    # The verifier never leaves the server's side in the URL (only its S256 challenge does).
    assert "code_verifier" not in q

    github = urlsplit(web.get(START.format("github")).headers["location"])
    gq = parse_qs(github.query)
    assert github.path == "/login/oauth/authorize" and "nonce" not in gq and gq["code_challenge_method"] == ["S256"]


def test_google_sign_in_creates_a_verified_user_and_signs_in_with_web_cookies(
    web: TestClient, idp: LocalProvider, oauth_services: Services
) -> None:
    idp.behaviour.google = GoogleUser(sub="g-ada", email="Ada@Example.com", name="Ada Lovelace")
    r = sign_in(web, "google", next="/gallery?tab=starred")
    assert r.status_code == 302, r.text
    assert r.headers["location"] == "/gallery?tab=starred"
    assert r.headers["cache-control"] == "no-store"
    set_cookies = r.headers.get_list("set-cookie")
    for name in ("studiolo_access=", "studiolo_refresh=", "studiolo_csrf="):
        assert any(c.startswith(name) for c in set_cookies), (name, set_cookies)
    assert any(c.startswith("studiolo_oauth=") and "Max-Age=0" in c for c in set_cookies)  # state spent

    me = web.get("/api/v1/auth/me")  # authenticated by the HttpOnly access cookie alone
    assert me.status_code == 200, me.text
    view = me.json()
    assert view["email"] == "ada@example.com" and view["email_verified"] is True and view["status"] == "active"
    assert view["display_name"] == "Ada Lovelace" and view["has_password"] is False
    assert view["oauth_providers"] == ["google"]
    trail = actions(oauth_services, view["id"])
    assert [a for a, _ in trail] == ["register", "oauth_linked", "login"]
    assert trail[2][1] == {"method": "google"}

    # Next time the link (provider, subject) decides, whatever the email says now.
    idp.behaviour.google = GoogleUser(sub="g-ada", email="ada.new@example.com")
    web.cookies.clear()
    again = sign_in(web, "google")
    assert again.status_code == 302 and again.headers["location"] == "/"
    assert web.get("/api/v1/auth/me").json()["id"] == view["id"]
    assert count(oauth_services, User) == 2  # the install's local owner and Ada
    assert count(oauth_services, OAuthAccount) == 1


def test_json_mode_answers_the_token_pair_for_api_clients(web: TestClient, idp: LocalProvider) -> None:
    r = sign_in(web, "google", mode="json")
    assert r.status_code == 200, r.text
    pair = r.json()
    assert pair["token_type"] == "bearer" and pair["refresh_token"]
    assert not any(c.startswith("studiolo_access=") for c in r.headers.get_list("set-cookie"))
    me = web.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert me.json()["email"] == "ada@example.com"


def test_links_to_an_existing_account_whose_email_is_verified(
    web: TestClient, idp: LocalProvider, oauth_services: Services
) -> None:
    user_id = create_user(oauth_services, "grace@example.com", password="a long enough passphrase")
    mark_verified(oauth_services, user_id)
    idp.behaviour.google = GoogleUser(sub="g-grace", email="grace@example.com")
    r = sign_in(web, "google")
    assert r.status_code == 302, r.text
    me = web.get("/api/v1/auth/me").json()
    assert me["id"] == user_id and me["has_password"] is True and me["oauth_providers"] == ["google"]
    assert [a for a, _ in actions(oauth_services, user_id)] == ["oauth_linked", "login"]


def test_an_unverified_account_with_the_same_email_is_never_linked(
    web: TestClient, idp: LocalProvider, oauth_services: Services
) -> None:
    # A pending sign-up (someone typed this address, nobody proved it) and an active row never verified.
    oauth_services.accounts.register("pending@example.com", "a long enough passphrase", "", Origin())()
    oauth_services.outbox.flush()  # the sign-up's rows are written on the outbox thread
    unproven = create_user(oauth_services, "unproven@example.com")
    with oauth_services.db.session() as session:  # an active row whose address nobody ever proved
        session.get_one(User, unproven).email_verified_at = None
    for email in ("pending@example.com", "unproven@example.com"):
        idp.behaviour.google = GoogleUser(sub=f"g-{email}", email=email)
        r = sign_in(web, "google")
        assert r.status_code == 409, r.text
        assert error_code(r) == "oauth_email_unverified_account"
        assert "studiolo_access" not in web.cookies
    assert count(oauth_services, OAuthAccount) == 0


def test_provider_that_did_not_verify_the_email_is_refused(
    web: TestClient, idp: LocalProvider, oauth_services: Services
) -> None:
    idp.behaviour.google = GoogleUser(email="maybe@example.com", email_verified=False)
    r = sign_in(web, "google")
    assert r.status_code == 403 and error_code(r) == "oauth_email_unverified"
    assert count(oauth_services, OAuthAccount) == 0


def test_a_suspended_account_cannot_sign_in(web: TestClient, idp: LocalProvider, oauth_services: Services) -> None:
    assert sign_in(web, "google").status_code == 302
    with oauth_services.db.session() as session:
        session.scalars(select(User).where(User.email == "ada@example.com")).one().status = "suspended"
    web.cookies.clear()
    r = sign_in(web, "google")
    assert r.status_code == 403 and error_code(r) == "account_suspended"


def test_state_must_match_the_cookie_of_this_browser(web: TestClient, idp: LocalProvider) -> None:
    back = to_provider_and_back(web, "google")
    parts = urlsplit(back)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    forged = f"{parts.path}?{urlencode({**q, 'state': 'not-' + q['state']})}"
    r = web.get(forged)
    assert r.status_code == 400 and error_code(r) == "oauth_state_mismatch"
    assert web.get(f"{parts.path}?{urlencode({'code': q['code']})}").status_code == 400  # no state at all

    # Another browser (no cookie), and a cookie whose signature was tampered with.
    with TestClient(web.app, follow_redirects=False) as other:
        assert error_code(other.get(back)) == "oauth_state_mismatch"
        sealed = web.cookies["studiolo_oauth"]
        tampered = sealed[:-10] + ("A" if sealed[-10] != "A" else "B") + sealed[-9:]
        assert error_code(other.get(back, headers={"cookie": f"studiolo_oauth={tampered}"})) == "oauth_state_mismatch"
    # The GitHub callback does not take Google's state.
    assert error_code(web.get(back.replace("/google/", "/github/"))) == "oauth_state_mismatch"

    # None of that spent the code: the real callback still signs in, exactly once.
    assert web.get(back).status_code == 302
    replay = web.get(back)
    assert replay.status_code == 400 and error_code(replay) == "oauth_state_mismatch"


@pytest.mark.parametrize(
    ("tweak", "reason"),
    [
        ({"rogue_key": True}, "signature"),
        ({"nonce": "a-nonce-from-another-sign-in"}, "claim:nonce"),
        ({"id_token_lifetime": -600}, "expired"),
        ({"audience": "another-client"}, "claim:aud"),
        ({"issuer": "https://issuer.example"}, "claim:iss"),
    ],
)
def test_a_bad_id_token_is_refused(
    web: TestClient, idp: LocalProvider, oauth_services: Services, tweak: dict[str, Any], reason: str
) -> None:
    for name, value in tweak.items():
        setattr(idp.behaviour, name, value)
    r = sign_in(web, "google")
    assert r.status_code == 401, r.text
    assert error_code(r) == "oauth_invalid_id_token" and r.json()["error"]["details"] == {"reason": reason}
    assert "studiolo_access" not in web.cookies
    assert count(oauth_services, OAuthAccount) == 0


def test_access_denied_at_the_provider(web: TestClient, idp: LocalProvider) -> None:
    idp.behaviour.deny = True
    r = sign_in(web, "google")
    assert r.status_code == 400 and error_code(r) == "oauth_access_denied"


def test_next_only_ever_leads_to_a_path_on_this_site(web: TestClient, idp: LocalProvider) -> None:
    for target in ("//evil.com", "https://evil.com/", "/\\evil.com", "/\t/evil.com", "evil.com", ""):
        web.cookies.clear()
        r = sign_in(web, "google", next=target)
        assert r.status_code == 302 and r.headers["location"] == "/", (target, r.headers["location"])


# --- GitHub (OAuth 2 + API) -------------------------------------------------------------------------------
def test_github_sign_in_uses_the_primary_verified_email(
    web: TestClient, idp: LocalProvider, oauth_services: Services
) -> None:
    idp.behaviour.github = GitHubUser(
        id=583231,
        login="octocat",
        name=None,
        emails=[
            {"email": "old@example.com", "primary": False, "verified": True},
            {"email": "Mona@Example.com", "primary": True, "verified": True},
        ],
    )
    r = sign_in(web, "github", next="/studio")
    assert r.status_code == 302, r.text
    assert r.headers["location"] == "/studio"
    me = web.get("/api/v1/auth/me").json()
    assert me["email"] == "mona@example.com" and me["display_name"] == "octocat"
    assert me["oauth_providers"] == ["github"]
    with oauth_services.db.session() as session:
        link = session.scalars(select(OAuthAccount)).one()
        assert (link.provider, link.subject, link.email) == ("github", "583231", "mona@example.com")
    # The code was exchanged with the PKCE verifier (the provider checks it against the challenge).
    assert idp.token_requests[-1]["code_verifier"]


@pytest.mark.parametrize(
    "emails",
    [
        [{"email": "mona@example.com", "primary": True, "verified": False}],
        # a verified secondary address does not count: only the primary one
        [
            {"email": "mona@example.com", "primary": True, "verified": False},
            {"email": "other@example.com", "primary": False, "verified": True},
        ],
        [],
    ],
)
def test_github_account_without_a_verified_primary_email_is_refused(
    web: TestClient, idp: LocalProvider, oauth_services: Services, emails: list[dict[str, Any]]
) -> None:
    idp.behaviour.github = GitHubUser(emails=emails)
    r = sign_in(web, "github")
    assert r.status_code == 403 and error_code(r) == "oauth_email_unverified"
    assert count(oauth_services, OAuthAccount) == 0


# --- configuration and provider failures ---------------------------------------------------------------
def test_providers_and_unknown_ones(web: TestClient, settings_factory: Any, idp: LocalProvider) -> None:
    assert web.get("/api/v1/auth/oauth/providers").json() == ["google", "github"]
    for url in (START.format("facebook"), "/api/v1/auth/oauth/facebook/callback?code=x&state=y"):
        r = web.get(url)
        assert r.status_code == 404 and error_code(r) == "oauth_provider_not_found"

    # Configured providers only: without a GitHub client id, GitHub is not offered.
    svc = build_services(settings_factory(**provider_settings(idp, github_client_id="")), upgrade_db=False)
    try:
        with TestClient(create_app(services=svc, start_workers=False), follow_redirects=False) as c:
            assert c.get("/api/v1/auth/oauth/providers").json() == ["google"]
            assert error_code(c.get(START.format("github"))) == "oauth_provider_not_found"
    finally:
        svc.close(timeout=10)


def test_provider_failures_are_502_not_500(settings_factory: Any, idp: LocalProvider) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    overrides = provider_settings(
        idp, google_discovery_url=f"{dead}/.well-known/openid-configuration", github_client_secret="wrong secret"
    )
    svc = build_services(settings_factory(**overrides), upgrade_db=False)
    try:
        with TestClient(create_app(services=svc, start_workers=False), follow_redirects=False) as c:
            r = c.get(START.format("google"))
            assert r.status_code == 502 and error_code(r) == "oauth_provider_unavailable"
            r = sign_in(c, "github")  # the provider refuses our client secret at the code exchange
            assert r.status_code == 502 and error_code(r) == "oauth_token_exchange_failed"
            assert r.json()["error"]["details"] == {"error": "invalid_client"}
    finally:
        svc.close(timeout=10)
