"""Attacks on authentication: forged and replayed tokens, missing credentials on every protected route,
suspended accounts, password changes, rate limits and account lockout."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import jwt
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from studiolo.db.base import utcnow
from studiolo.domain.accounts.mail import ConsoleMailer
from studiolo.domain.accounts.models import LOCAL_USER_ID, User
from studiolo.domain.accounts.tokens import ISSUER
from studiolo.domain.generation.models import Job
from studiolo.services import Services
from tests.helpers import PUBLIC_AUTH_ROUTES, SHARE_ROUTES, SIGNED_ROUTES, app_with, auth_headers, create_user

if TYPE_CHECKING:  # the TestClient's responses (Starlette's test client runs on httpx2)
    from httpx2 import Response

STRONG = "velvet-harbor-1937"
OTHER = "quiet-lantern-2046"
GEN = {"prompt": "x", "size": "64x64", "steps": 2}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(r: Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "request_id"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    if status == 401:
        assert r.headers["www-authenticate"].lower().startswith("bearer"), r.headers
    return body


def login(api: TestClient, email: str, password: str = STRONG) -> Response:
    return api.post("/api/v1/auth/login", json={"email": email, "password": password})


def me(api: TestClient, token: str) -> Response:
    return api.get("/api/v1/auth/me", headers=bearer(token))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def claims_for(user_id: str, **changes: Any) -> dict[str, Any]:
    now = utcnow()
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": user_id,
        "typ": "access",
        "role": "user",
        "scp": "read generate",
        "ep": 0,
        "sid": "",
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    for key, value in changes.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


# --- forged and broken tokens -----------------------------------------------------------------------------------
def test_a_correctly_signed_token_is_accepted(api: TestClient, services: Services) -> None:
    """The control for the forgeries below: the same claims, signed with the server's key, work."""
    alice = create_user(services, "alice@example.com", password=STRONG)
    token = jwt.encode(claims_for(alice), services.codec.key, algorithm="HS256")
    r = me(api, token)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == alice


def forgeries(services: Services, user_id: str, real: str, refresh_token: str) -> dict[str, tuple[str, str]]:
    """name -> (Authorization header value, expected error code)."""
    key = services.codec.key
    header, payload, signature = real.split(".")
    claims = json.loads(unb64(payload))
    elevated = {**claims, "role": "admin", "scp": "read generate admin"}
    other_user = {**claims, "sub": LOCAL_USER_ID}
    none_header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return {
        "tampered-role": (f"Bearer {header}.{b64(json.dumps(elevated).encode())}.{signature}", "invalid_token"),
        "tampered-subject": (f"Bearer {header}.{b64(json.dumps(other_user).encode())}.{signature}", "invalid_token"),
        "truncated-signature": (f"Bearer {header}.{payload}.{signature[:-4]}", "invalid_token"),
        "wrong-key": (
            f"Bearer {jwt.encode(claims_for(user_id), 'not-the-key' * 4, algorithm='HS256')}",
            "invalid_token",
        ),
        "alg-none-pyjwt": (f"Bearer {jwt.encode(claims_for(user_id), '', algorithm='none')}", "invalid_token"),
        "alg-none-by-hand": (f"Bearer {none_header}.{payload}.", "invalid_token"),
        "alg-none-keeping-signature": (f"Bearer {none_header}.{payload}.{signature}", "invalid_token"),
        "hs512-right-key": (f"Bearer {jwt.encode(claims_for(user_id), key, algorithm='HS512')}", "invalid_token"),
        "expired": (
            "Bearer "
            + jwt.encode(
                claims_for(user_id, iat=utcnow() - timedelta(hours=1), exp=utcnow() - timedelta(minutes=1)),
                key,
                algorithm="HS256",
            ),
            "token_expired",
        ),
        "missing-typ": (f"Bearer {jwt.encode(claims_for(user_id, typ=None), key, algorithm='HS256')}", "invalid_token"),
        "typ-refresh": (
            f"Bearer {jwt.encode(claims_for(user_id, typ='refresh'), key, algorithm='HS256')}",
            "invalid_token",
        ),
        "missing-exp": (f"Bearer {jwt.encode(claims_for(user_id, exp=None), key, algorithm='HS256')}", "invalid_token"),
        "missing-sub": (f"Bearer {jwt.encode(claims_for(user_id, sub=None), key, algorithm='HS256')}", "invalid_token"),
        "wrong-issuer": (
            f"Bearer {jwt.encode(claims_for(user_id, iss='elsewhere'), key, algorithm='HS256')}",
            "invalid_token",
        ),
        "epoch-as-text": (f"Bearer {jwt.encode(claims_for(user_id, ep='0'), key, algorithm='HS256')}", "invalid_token"),
        "stale-epoch": (f"Bearer {jwt.encode(claims_for(user_id, ep=7), key, algorithm='HS256')}", "token_revoked"),
        "unknown-user": (
            f"Bearer {jwt.encode(claims_for('00000000-0000-7000-8000-00000000dead'), key, algorithm='HS256')}",
            "token_revoked",
        ),
        "unknown-session": (
            f"Bearer {jwt.encode(claims_for(user_id, sid='no-such-session'), key, algorithm='HS256')}",
            "token_revoked",
        ),
        "refresh-token-as-access": (f"Bearer {refresh_token}", "invalid_token"),
        "garbage": ("Bearer definitely-not-a-token", "invalid_token"),
        "three-dots": ("Bearer ...", "invalid_token"),
        "empty-bearer": ("Bearer ", "invalid_token"),
        "basic": ("Basic " + base64.b64encode(b"alice@example.com:" + STRONG.encode()).decode(), "invalid_token"),
        "token-without-scheme": (real, "invalid_token"),
        "fake-api-key": ("Bearer ais_" + "A" * 40, "invalid_api_key"),
        "huge-api-key": ("Bearer ais_" + "A" * 5000, "invalid_api_key"),
        "setup-token": (f"Bearer {services.admin.setup_token()}", "invalid_token"),
    }


def test_forged_and_broken_tokens_are_refused(api: TestClient, services: Services) -> None:
    alice = create_user(services, "alice@example.com", password=STRONG)
    pair = login(api, "alice@example.com").json()
    cases = forgeries(services, alice, pair["access_token"], pair["refresh_token"])
    for name, (authorization, code) in cases.items():
        for method, path in (("GET", "/api/v1/auth/me"), ("GET", "/api/v1/jobs"), ("POST", "/api/v1/collections")):
            r = api.request(method, path, headers={"Authorization": authorization}, json={"name": "x"})
            assert r.status_code == 401, (name, path, r.status_code, r.text)
            body = assert_error(r, 401, code)
            assert alice not in r.text, name
            assert "Traceback" not in body["error"]["message"]
    # Nothing was created by any of them, and the real token still works.
    assert api.get("/api/v1/collections", headers=bearer(pair["access_token"])).json()["items"] == []
    assert me(api, pair["access_token"]).status_code == 200


def test_a_cookie_with_a_forged_token_is_refused(api: TestClient, services: Services) -> None:
    alice = create_user(services, "alice@example.com", password=STRONG)
    forged = jwt.encode(claims_for(alice), "not-the-key" * 4, algorithm="HS256")
    api.cookies.set("studiolo_access", forged)
    assert_error(api.get("/api/v1/auth/me"), 401, "invalid_token")


def _fill(path: str) -> str:
    out = path
    while "{" in out:
        start, end = out.index("{"), out.index("}")
        out = out[:start] + "00000000-0000-7000-8000-0000000000ff" + out[end + 1 :]
    return out


def test_every_protected_route_needs_credentials(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    families: set[str] = set()
    checked = 0
    for path, operations in schema["paths"].items():
        if not path.startswith("/api/v1/") or path in (*PUBLIC_AUTH_ROUTES, *SIGNED_ROUTES, *SHARE_ROUTES):
            continue
        if path.startswith("/api/v1/auth/oauth/"):
            continue
        for method in operations:
            r = api.request(method.upper(), _fill(path))
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert_error(r, 401, "not_authenticated")
            families.add(path.split("/")[3])
            checked += 1
    assert {"generations", "jobs", "images", "collections", "styles", "models", "stats"} <= families
    assert {"auth", "api-keys", "admin"} <= families
    assert checked >= 30


def test_public_routes_answer_without_credentials(api: TestClient) -> None:
    assert api.get("/api/v1/setup").status_code == 200
    # A share link that names no public film is not found, whoever asks (test_film_api.py shares a real one).
    for path in SHARE_ROUTES:
        assert_error(api.get(_fill(path)), 404, "film_not_found")
    assert api.get("/health").status_code == 200
    r = api.post("/api/v1/auth/login", json={"email": "nobody@example.com", "password": STRONG})
    assert_error(r, 401, "invalid_credentials")


# --- suspension and password changes ------------------------------------------------------------------------------
def test_a_suspended_user_is_refused_everywhere(api: TestClient, client: TestClient, services: Services) -> None:
    alice = create_user(services, "alice@example.com", password=STRONG)
    pair = login(api, "alice@example.com").json()
    key = api.post("/api/v1/api-keys", json={"name": "script"}, headers=bearer(pair["access_token"])).json()["key"]
    assert me(api, pair["access_token"]).status_code == 200
    assert me(api, key).status_code == 200

    r = client.post(f"/api/v1/admin/users/{alice}/suspend")  # the local owner is an administrator
    assert r.status_code == 200 and r.json()["status"] == "suspended", r.text

    assert_error(me(api, key), 401, "invalid_api_key")  # revoked for good, see test_suspension_revokes_api_keys_*
    assert_error(login(api, "alice@example.com"), 403, "account_suspended")
    assert_error(login(api, "alice@example.com", OTHER), 401, "invalid_credentials")
    assert api.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
    assert_error(me(api, pair["access_token"]), 403, "account_suspended")


def test_suspension_stops_access_even_for_a_token_the_authenticator_cached(
    api: TestClient, client: TestClient, services: Services
) -> None:
    alice = create_user(services, "alice@example.com", password=STRONG)
    token = login(api, "alice@example.com").json()["access_token"]
    assert me(api, token).status_code == 200
    client.post(f"/api/v1/admin/users/{alice}/suspend")
    r = me(api, token)
    assert r.status_code in (401, 403), r.text
    r = api.post("/api/v1/collections", json={"name": "x"}, headers=bearer(token))
    assert r.status_code in (401, 403), r.text


def test_password_change_ends_old_tokens_and_returns_a_working_pair(api: TestClient, services: Services) -> None:
    create_user(services, "alice@example.com", password=STRONG)
    a = login(api, "alice@example.com").json()
    b = login(api, "alice@example.com").json()
    assert me(api, b["access_token"]).status_code == 200

    r = api.post(
        "/api/v1/auth/password",
        json={"current_password": STRONG, "new_password": OTHER},
        headers=bearer(a["access_token"]),
    )
    assert r.status_code == 200, r.text
    new = r.json()
    for old in (a, b):
        assert_error(me(api, old["access_token"]), 401, "token_revoked")
        assert api.post("/api/v1/auth/refresh", json={"refresh_token": old["refresh_token"]}).status_code == 401
    assert me(api, new["access_token"]).status_code == 200
    r = api.post("/api/v1/auth/refresh", json={"refresh_token": new["refresh_token"]})
    assert r.status_code == 200, r.text
    assert me(api, r.json()["access_token"]).status_code == 200
    assert_error(login(api, "alice@example.com", STRONG), 401, "invalid_credentials")
    assert login(api, "alice@example.com", OTHER).status_code == 200
    services.outbox.flush()
    mailer = services.outbox.mailer
    assert isinstance(mailer, ConsoleMailer)
    assert any(m.to == "alice@example.com" and "password" in m.subject.lower() for m in mailer.sent)


def test_password_change_refuses_a_wrong_current_or_weak_new_password(api: TestClient, services: Services) -> None:
    create_user(services, "alice@example.com", password=STRONG)
    token = login(api, "alice@example.com").json()["access_token"]
    r = api.post(
        "/api/v1/auth/password", json={"current_password": OTHER, "new_password": OTHER}, headers=bearer(token)
    )
    assert_error(r, 403, "invalid_credentials")
    r = api.post(
        "/api/v1/auth/password",
        json={"current_password": STRONG, "new_password": "password123"},
        headers=bearer(token),
    )
    assert_error(r, 422, "weak_password")
    r = api.post(
        "/api/v1/auth/password",
        json={"current_password": STRONG, "new_password": "alice@example.com"[:5]},
        headers=bearer(token),
    )
    assert_error(r, 422, "weak_password")
    # Nothing changed: the session and the password still work.
    assert me(api, token).status_code == 200
    assert login(api, "alice@example.com", STRONG).status_code == 200


# --- rate limits ------------------------------------------------------------------------------------------------
def assert_rate_limited(r: Response, code: str = "rate_limited") -> None:
    body = assert_error(r, 429, code)
    retry = r.headers["retry-after"]
    assert retry.isdigit() and int(retry) >= 1, retry
    assert body["error"]["details"]["retry_after"] == int(retry)


def test_login_is_limited_per_ip(settings_factory: Callable[..., Any]) -> None:
    with app_with(settings_factory, rate_limits_enabled=True, rate_limit_login="3/minute") as (svc, api):
        create_user(svc, "alice@example.com", password=STRONG)
        for email in ("alice@example.com", "bob@example.com", "carol@example.com"):
            assert login(api, email, OTHER).status_code == 401
        assert_rate_limited(login(api, "alice@example.com", STRONG))  # even the right password waits
        assert_rate_limited(login(api, "dave@example.com", STRONG))
        # Proxy headers from the client are not trusted to pick the counter.
        for header in ("X-Forwarded-For", "X-Real-IP", "Forwarded"):
            value = "for=203.0.113.7" if header == "Forwarded" else "203.0.113.7"
            r = api.post(
                "/api/v1/auth/login", json={"email": "alice@example.com", "password": STRONG}, headers={header: value}
            )
            assert_rate_limited(r)


def test_register_is_limited_per_ip(settings_factory: Callable[..., Any]) -> None:
    with app_with(settings_factory, rate_limits_enabled=True, rate_limit_register="2/minute") as (svc, api):
        for i in range(2):
            r = api.post("/api/v1/auth/register", json={"email": f"user{i}@example.com", "password": STRONG})
            assert r.status_code == 202
        r = api.post("/api/v1/auth/register", json={"email": "user2@example.com", "password": STRONG})
        assert_rate_limited(r)
        with svc.db.session() as session:
            assert session.scalar(select(User).where(User.email == "user2@example.com")) is None


def test_codes_and_resets_are_limited_per_ip(settings_factory: Callable[..., Any]) -> None:
    with app_with(
        settings_factory, rate_limits_enabled=True, rate_limit_code="2/minute", rate_limit_reset="1/minute"
    ) as (_svc, api):
        for _ in range(2):
            r = api.post("/api/v1/auth/verify", json={"email": "x@example.com", "code": "123456", "password": STRONG})
            assert r.status_code == 400
        assert_rate_limited(
            api.post("/api/v1/auth/verify", json={"email": "x@example.com", "code": "123456", "password": STRONG})
        )
        assert api.post("/api/v1/auth/password-reset", json={"email": "x@example.com"}).status_code == 202
        assert_rate_limited(api.post("/api/v1/auth/password-reset", json={"email": "y@example.com"}))


def job_count(svc: Services) -> int:
    with svc.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_generation_submissions_are_limited_per_user(settings_factory: Callable[..., Any]) -> None:
    with app_with(settings_factory, rate_limits_enabled=True, rate_limit_generate="2/minute") as (svc, api):
        headers = auth_headers(svc)
        for _ in range(2):
            assert api.post("/api/v1/generations", json=GEN, headers=headers).status_code == 202
        assert job_count(svc) == 2
        assert_rate_limited(api.post("/api/v1/generations", json=GEN, headers=headers))
        assert job_count(svc) == 2
        # Reading is not counted.
        assert api.get("/api/v1/jobs", headers=headers).status_code == 200


def test_lockout_after_failed_logins_even_with_the_right_password(settings_factory: Callable[..., Any]) -> None:
    with app_with(settings_factory, rate_limits_enabled=True, rate_limit_login="100/minute", lockout_failures=3) as (
        svc,
        api,
    ):
        create_user(svc, "alice@example.com", password=STRONG)
        create_user(svc, "bob@example.com", password=STRONG)
        for _ in range(3):
            assert_error(login(api, "alice@example.com", OTHER), 401, "invalid_credentials")
            assert_error(login(api, "ghost@example.com", OTHER), 401, "invalid_credentials")
        known = login(api, "alice@example.com", STRONG)
        unknown = login(api, "ghost@example.com", STRONG)
        assert_rate_limited(known, "account_locked")
        assert_rate_limited(unknown, "account_locked")
        assert known.json()["error"]["message"] == unknown.json()["error"]["message"]
        # The lock is per address: another account signs in.
        assert login(api, "bob@example.com", STRONG).status_code == 200
        # Different spelling, same address: still locked.
        assert_rate_limited(login(api, " ALICE@example.com", STRONG), "account_locked")


def test_a_successful_login_clears_earlier_failures(settings_factory: Callable[..., Any]) -> None:
    with app_with(settings_factory, lockout_failures=3) as (svc, api):  # lockout applies even with limits off
        create_user(svc, "alice@example.com", password=STRONG)
        for _ in range(2):
            login(api, "alice@example.com", OTHER)
        assert login(api, "alice@example.com", STRONG).status_code == 200
        for _ in range(2):
            login(api, "alice@example.com", OTHER)
        assert login(api, "alice@example.com", STRONG).status_code == 200
        for _ in range(3):
            login(api, "alice@example.com", OTHER)
        assert_rate_limited(login(api, "alice@example.com", STRONG), "account_locked")
