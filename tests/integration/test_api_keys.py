"""API keys (/api/v1/api-keys): shown once, stored hashed, scoped, revocable, expiring, and never able to
manage the account that owns them."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from studiolo.db.base import utcnow
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.keys import MAX_KEYS_PER_USER
from studiolo.domain.accounts.mail import ConsoleMailer
from studiolo.domain.accounts.models import LOCAL_USER_ID, ApiKey
from studiolo.domain.accounts.schemas import ApiKeyCreate
from studiolo.domain.generation.models import Job
from studiolo.services import Services
from tests.helpers import (
    PUBLIC_AUTH_ROUTES,
    SHARE_ROUTES,
    SIGNED_ROUTES,
    auth_headers,
    create_user,
    in_threads,
    writes_meet,
)

if TYPE_CHECKING:  # the TestClient's responses (Starlette's test client runs on httpx2)
    from httpx2 import Response

STRONG = "velvet-harbor-1937"
GEN = {"prompt": "x", "size": "64x64", "steps": 2}


@pytest.fixture
def alice(services: Services) -> dict[str, str]:
    """A plain user with a signed-in session: {"id", "Authorization"}."""
    user_id = create_user(services, "alice@example.com", password=STRONG)
    return {"id": user_id, **auth_headers(services, user_id)}


def session_headers(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": user["Authorization"]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(r: Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "request_id"}
    assert body["error"]["code"] == code, body


def create_key(api: TestClient, user: dict[str, str], **body: Any) -> dict[str, Any]:
    r = api.post("/api/v1/api-keys", json={"name": "script", **body}, headers=session_headers(user))
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def job_count(services: Services) -> int:
    with services.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_the_secret_is_shown_once_and_stored_hashed(api: TestClient, services: Services, alice: dict[str, str]) -> None:
    created = create_key(api, alice, name="  my script  ")
    secret = created["key"]
    assert secret.startswith("ais_") and len(secret) >= 40
    assert created["prefix"] == secret[:12]
    assert created["name"] == "my script"
    assert created["scopes"] == ["generate", "read"]
    assert created["expires_at"] is None and created["revoked_at"] is None and created["last_used_at"] is None

    listed = api.get("/api/v1/api-keys", headers=session_headers(alice))
    assert listed.status_code == 200
    assert secret not in listed.text and secret[12:] not in listed.text
    [item] = listed.json()
    assert "key" not in item
    assert item["id"] == created["id"] and item["prefix"] == created["prefix"]

    with services.db.session() as session:
        row = session.get_one(ApiKey, created["id"])
        assert secret not in (row.key_hash, row.prefix, row.name)
        assert len(row.key_hash) == 64


def test_a_key_works_as_a_bearer_token(api: TestClient, services: Services, alice: dict[str, str]) -> None:
    secret = create_key(api, alice)["key"]
    r = api.get("/api/v1/auth/me", headers=bearer(secret))
    assert r.status_code == 200 and r.json()["id"] == alice["id"]
    r = api.post("/api/v1/generations", json=GEN, headers=bearer(secret))
    assert r.status_code == 202, r.text
    with services.db.session() as session:
        assert session.scalar(select(Job.owner_id).where(Job.id == r.json()["id"])) == alice["id"]


def test_a_read_only_key_cannot_change_anything(api: TestClient, services: Services, alice: dict[str, str]) -> None:
    secret = create_key(api, alice, scopes=["read"])["key"]
    assert api.get("/api/v1/jobs", headers=bearer(secret)).status_code == 200
    assert api.get("/api/v1/images", headers=bearer(secret)).status_code == 200
    assert api.get("/api/v1/auth/me", headers=bearer(secret)).status_code == 200
    before = job_count(services)
    assert_error(api.post("/api/v1/generations", json=GEN, headers=bearer(secret)), 403, "insufficient_scope")
    assert job_count(services) == before
    assert_error(api.post("/api/v1/collections", json={"name": "x"}, headers=bearer(secret)), 403, "insufficient_scope")
    assert api.get("/api/v1/collections", headers=session_headers(alice)).json()["items"] == []


def test_a_generate_only_key_cannot_read(api: TestClient, alice: dict[str, str]) -> None:
    secret = create_key(api, alice, scopes=["generate"])["key"]
    assert_error(api.get("/api/v1/jobs", headers=bearer(secret)), 403, "insufficient_scope")
    assert api.post("/api/v1/generations", json=GEN, headers=bearer(secret)).status_code == 202


def test_a_revoked_key_stops_working(api: TestClient, services: Services, alice: dict[str, str]) -> None:
    created = create_key(api, alice)
    assert api.get("/api/v1/auth/me", headers=bearer(created["key"])).status_code == 200
    r = api.delete(f"/api/v1/api-keys/{created['id']}", headers=session_headers(alice))
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert_error(api.get("/api/v1/auth/me", headers=bearer(created["key"])), 401, "invalid_api_key")
    assert "www-authenticate" in api.get("/api/v1/auth/me", headers=bearer(created["key"])).headers
    # Revoking again is harmless and keeps the first time.
    again = api.delete(f"/api/v1/api-keys/{created['id']}", headers=session_headers(alice))
    assert again.status_code == 200 and again.json()["revoked_at"] == r.json()["revoked_at"]
    listed = api.get("/api/v1/api-keys", headers=session_headers(alice)).json()
    assert listed[0]["revoked_at"] is not None


def test_an_expired_key_stops_working(api: TestClient, services: Services, alice: dict[str, str]) -> None:
    created = create_key(api, alice, expires_in_days=1)
    assert created["expires_at"] is not None
    assert api.get("/api/v1/auth/me", headers=bearer(created["key"])).status_code == 200
    with services.db.session() as session:
        session.execute(update(ApiKey).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert_error(api.get("/api/v1/auth/me", headers=bearer(created["key"])), 401, "api_key_expired")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/api-keys", None),
        ("POST", "/api/v1/api-keys", {"name": "child"}),
        ("DELETE", "/api/v1/api-keys/{key_id}", None),
        ("POST", "/api/v1/auth/password", {"current_password": STRONG, "new_password": "quiet-lantern-2046"}),
        ("DELETE", "/api/v1/auth/me", {"password": STRONG}),
        ("PATCH", "/api/v1/auth/me", {"display_name": "owned"}),
        ("GET", "/api/v1/auth/sessions", None),
    ],
)
def test_a_key_cannot_manage_the_account(
    api: TestClient, services: Services, alice: dict[str, str], method: str, path: str, body: Any
) -> None:
    created = create_key(api, alice)
    r = api.request(method, path.format(key_id=created["id"]), json=body, headers=bearer(created["key"]))
    assert_error(r, 403, "session_required")
    # Nothing happened: the key lives, the password is unchanged, there is still exactly one key.
    assert api.get("/api/v1/auth/me", headers=bearer(created["key"])).json()["display_name"] == "alice"
    assert len(api.get("/api/v1/api-keys", headers=session_headers(alice)).json()) == 1
    r = api.post("/api/v1/auth/login", json={"email": "alice@example.com", "password": STRONG})
    assert r.status_code == 200


def test_only_administrators_create_admin_keys(
    api: TestClient, client: TestClient, services: Services, alice: dict[str, str]
) -> None:
    for scopes in (["admin"], ["read", "admin"]):
        r = api.post("/api/v1/api-keys", json={"name": "root", "scopes": scopes}, headers=session_headers(alice))
        assert_error(r, 403, "insufficient_role")
    assert api.get("/api/v1/api-keys", headers=session_headers(alice)).json() == []

    # The local owner is an administrator: its admin key reaches the admin routes.
    r = client.post("/api/v1/api-keys", json={"name": "ops", "scopes": ["read", "admin"]})
    assert r.status_code == 201, r.text
    admin_key = r.json()["key"]
    assert api.get("/api/v1/admin/users", headers=bearer(admin_key)).status_code == 200
    # Without the admin scope an administrator's key is not an admin credential.
    plain = client.post("/api/v1/api-keys", json={"name": "plain"}).json()["key"]
    assert_error(api.get("/api/v1/admin/users", headers=bearer(plain)), 403, "admin_required")


def test_a_demoted_admins_key_loses_the_admin_scope(api: TestClient, client: TestClient, services: Services) -> None:
    bob_id = create_user(services, "bob@example.com", password=STRONG, role="admin")
    bob = {"id": bob_id, **auth_headers(services, bob_id)}
    key = create_key(api, bob, scopes=["read", "admin"])["key"]
    assert api.get("/api/v1/admin/users", headers=bearer(key)).status_code == 200
    r = client.post(f"/api/v1/admin/users/{bob_id}/role", json={"role": "user"})
    assert r.status_code == 200, r.text
    assert_error(api.get("/api/v1/admin/users", headers=bearer(key)), 403, "admin_required")
    assert api.get("/api/v1/auth/me", headers=bearer(key)).status_code == 200


def test_last_used_at_is_recorded(api: TestClient, services: Services, alice: dict[str, str]) -> None:
    created = create_key(api, alice)
    before = utcnow()
    api.get("/api/v1/jobs", headers=bearer(created["key"]))
    [item] = api.get("/api/v1/api-keys", headers=session_headers(alice)).json()
    assert item["last_used_at"] is not None
    with services.db.session() as session:
        used = session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == created["id"]))
    assert used is not None and used >= before - timedelta(seconds=1)


def test_another_users_key_is_not_found(api: TestClient, client: TestClient, alice: dict[str, str]) -> None:
    created = create_key(api, alice)
    r = client.delete(f"/api/v1/api-keys/{created['id']}")
    assert_error(r, 404, "api_key_not_found")
    assert created["id"] not in client.get("/api/v1/api-keys").text
    assert api.get("/api/v1/auth/me", headers=bearer(created["key"])).status_code == 200
    assert_error(client.delete("/api/v1/api-keys/nope"), 404, "api_key_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 121},
        {"name": "x", "scopes": ["write"]},
        {"name": "x", "scopes": "read"},
        {"name": "x", "expires_in_days": 0},
        {"name": "x", "expires_in_days": 4000},
        {"name": "x", "owner_id": "00000000-0000-7000-8000-000000000001"},
        {},
    ],
)
def test_invalid_key_requests_are_422(api: TestClient, alice: dict[str, str], body: dict[str, Any]) -> None:
    r = api.post("/api/v1/api-keys", json=body, headers=session_headers(alice))
    assert_error(r, 422, "invalid_input")
    assert api.get("/api/v1/api-keys", headers=session_headers(alice)).json() == []


def test_live_keys_per_user_are_capped(api: TestClient, alice: dict[str, str]) -> None:
    ids = [create_key(api, alice, name=f"k{i}")["id"] for i in range(MAX_KEYS_PER_USER)]
    r = api.post("/api/v1/api-keys", json={"name": "one too many"}, headers=session_headers(alice))
    assert_error(r, 403, "too_many_keys")
    api.delete(f"/api/v1/api-keys/{ids[0]}", headers=session_headers(alice))
    create_key(api, alice, name="after revoking one")


# --- every route, every kind of key (issue 13, item 2) --------------------------------------------------------------
# Routes anyone may call, and routes outside the API: no credential is involved.
OPEN_ROUTES = {*PUBLIC_AUTH_ROUTES, *SIGNED_ROUTES, *SHARE_ROUTES, "/api/v1/auth/oauth/providers"}
ANY_ID = "00000000-0000-7000-8000-00000000dead"


def api_routes(api: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every operation in the OpenAPI schema that needs a credential."""
    schema = api.get("/openapi.json").json()
    routes = []
    for path, ops in schema["paths"].items():
        if not path.startswith("/api/v1/") or path in OPEN_ROUTES or path.startswith("/api/v1/auth/oauth/"):
            continue
        routes += [(method.upper(), path) for method in ops]
    return routes


def session_only(method: str, path: str) -> bool:
    """Account management: sessions, signing out, password, profile, deletion and keys need a signed-in session."""
    return (path.startswith(("/api/v1/auth/", "/api/v1/api-keys"))) and (method, path) != ("GET", "/api/v1/auth/me")


# Reads that are credentials: a webhook signing secret needs the generate scope besides read (webhooks/router.py).
SECRET_READS = {"/api/v1/webhooks/secret", "/api/v1/webhooks/endpoints/{endpoint_id}/secret"}


def needed_scopes(method: str, path: str) -> tuple[str, ...]:
    if method == "GET" and path in SECRET_READS:
        return ("generate",)
    return ("read",) if method == "GET" else ("generate",)


def test_every_route_holds_api_keys_to_their_scopes(api: TestClient, services: Services, alice: dict[str, str]) -> None:
    """Regression (issue 13, item 2): a read-only key could sign its owner out everywhere, because /auth/logout took
    any credential without a scope check; GET /models answered a key without the read scope. This walks every route
    of the schema with a read-only, a generate-only and a full key of a plain user: reads need ``read``, changes
    ``generate``, account management a session, admin routes the admin role; and nothing the keys tried ended the
    owner's session or changed the account."""
    scopes = {"read": ["read"], "generate": ["generate"], "full": ["read", "generate"]}
    keys = {kind: create_key(api, alice, name=kind, scopes=granted)["key"] for kind, granted in scopes.items()}
    routes = api_routes(api)
    assert ("POST", "/api/v1/auth/logout") in routes and ("GET", "/api/v1/models") in routes
    # The Trash's routes change things: they need the generate scope, as DELETE /images/{id} does.
    assert {("POST", "/api/v1/images/{image_id}/restore"), ("POST", "/api/v1/images/trash/empty")} <= set(routes)
    problems = []
    for method, path in routes:
        url = re.sub(r"\{[^}]+\}", ANY_ID, path)
        body = None if method in ("GET", "DELETE") else {}
        if (method, path) == ("POST", "/api/v1/auth/logout"):
            body = {"everywhere": True}
        for kind, secret in keys.items():
            r = api.request(method, url, json=body, headers=bearer(secret))
            is_json = r.headers.get("content-type", "").startswith("application/json")
            code = r.json().get("error", {}).get("code") if is_json else None
            if path.startswith("/api/v1/admin/"):
                expected = "admin_required"
            elif session_only(method, path):
                expected = "session_required"
            elif not set(needed_scopes(method, path)) <= set(scopes[kind]):
                expected = "insufficient_scope"
            else:
                # Let through: whatever the route answers (404 for the made-up id, 422 for the empty body, 200).
                if r.status_code in (401, 403) or r.status_code >= 500:
                    problems.append((kind, method, path, r.status_code, code))
                continue
            if r.status_code != 403 or code != expected:
                problems.append((kind, method, path, r.status_code, code, "expected", expected))
    assert problems == []

    # Nothing happened to the account: the owner's session lives, nothing was signed out, the keys are all there.
    r = api.get("/api/v1/auth/me", headers=session_headers(alice))
    assert r.status_code == 200 and r.json()["display_name"] == "alice"
    assert len(api.get("/api/v1/auth/sessions", headers=session_headers(alice)).json()) == 1
    listed = api.get("/api/v1/api-keys", headers=session_headers(alice)).json()
    assert len(listed) == 3 and all(k["revoked_at"] is None for k in listed)
    assert api.post("/api/v1/auth/login", json={"email": "alice@example.com", "password": STRONG}).status_code == 200


@pytest.mark.parametrize("everywhere", [True, False])
@pytest.mark.parametrize("scopes", [["read"], ["generate"], ["read", "generate"]])
def test_no_key_can_sign_its_owner_out(
    api: TestClient, services: Services, alice: dict[str, str], scopes: list[str], everywhere: bool
) -> None:
    """Regression (issue 13, item 2): ``POST /auth/logout {"everywhere": true}`` with a read-only key answered 204
    and the owner's web session then got 401. A leaked key must not be able to lock its owner out."""
    secret = create_key(api, alice, scopes=scopes)["key"]
    r = api.post("/api/v1/auth/logout", json={"everywhere": everywhere}, headers=bearer(secret))
    assert_error(r, 403, "session_required")
    assert api.get("/api/v1/auth/me", headers=session_headers(alice)).status_code == 200
    assert len(live_keys(api, alice)) == 1  # and the key is untouched too


def test_an_admin_key_cannot_demote_or_delete_its_own_owner(
    api: TestClient, client: TestClient, services: Services
) -> None:
    """The admin routes follow the same rule when they aim at the key's own owner (the local owner is an admin)."""
    bob = create_user(services, "bob@example.com", password=STRONG, role="admin")
    admin_key = client.post("/api/v1/api-keys", json={"name": "ops", "scopes": ["read", "admin"]}).json()["key"]
    r = api.post(f"/api/v1/admin/users/{LOCAL_USER_ID}/role", json={"role": "user"}, headers=bearer(admin_key))
    assert_error(r, 403, "session_required")
    assert_error(api.delete(f"/api/v1/admin/users/{LOCAL_USER_ID}", headers=bearer(admin_key)), 403, "session_required")
    assert client.get("/api/v1/auth/me").json()["role"] == "admin"
    # Other accounts are what an admin key is for.
    r = api.post(f"/api/v1/admin/users/{bob}/role", json={"role": "user"}, headers=bearer(admin_key))
    assert r.status_code == 200 and r.json()["role"] == "user"


# --- keys do not outlive a suspension or a new password ------------------------------------------------------------
def live_keys(api: TestClient, user: dict[str, str]) -> list[str]:
    return [k["id"] for k in api.get("/api/v1/api-keys", headers=session_headers(user)).json() if not k["revoked_at"]]


def test_suspension_revokes_api_keys_for_good(
    api: TestClient, client: TestClient, services: Services, alice: dict[str, str]
) -> None:
    """Docs said suspension "ends every session, token and key", but keys came back when it was lifted. Now the
    suspension revokes them: lifting it (even within the authenticator's cache time) brings none back."""
    secret = create_key(api, alice)["key"]
    assert api.get("/api/v1/jobs", headers=bearer(secret)).status_code == 200  # cached as valid by the authenticator
    assert client.post(f"/api/v1/admin/users/{alice['id']}/suspend").status_code == 200
    assert_error(api.get("/api/v1/jobs", headers=bearer(secret)), 401, "invalid_api_key")
    assert client.post(f"/api/v1/admin/users/{alice['id']}/activate").status_code == 200
    assert_error(api.get("/api/v1/jobs", headers=bearer(secret)), 401, "invalid_api_key")
    fresh = {"id": alice["id"], **auth_headers(services, alice["id"])}
    assert live_keys(api, fresh) == []
    events = client.get("/api/v1/admin/audit", params={"action": "api_keys_revoked"}).json()["items"]
    assert [(e["target_id"], e["details"]["reason"], e["details"]["count"]) for e in events] == [
        (alice["id"], "suspended", 1)
    ]


@pytest.mark.parametrize("keep", [False, True])
def test_a_password_change_revokes_keys_unless_kept(
    api: TestClient, services: Services, alice: dict[str, str], keep: bool
) -> None:
    secret = create_key(api, alice)["key"]
    assert api.get("/api/v1/jobs", headers=bearer(secret)).status_code == 200
    body: dict[str, Any] = {"current_password": STRONG, "new_password": "quiet-lantern-2046"}
    if keep:
        body["keep_api_keys"] = True
    r = api.post("/api/v1/auth/password", json=body, headers=session_headers(alice))
    assert r.status_code == 200, r.text
    fresh = {"id": alice["id"], "Authorization": f"Bearer {r.json()['access_token']}"}
    if keep:
        assert api.get("/api/v1/jobs", headers=bearer(secret)).status_code == 200
        assert len(live_keys(api, fresh)) == 1
    else:
        assert_error(api.get("/api/v1/jobs", headers=bearer(secret)), 401, "invalid_api_key")
        assert live_keys(api, fresh) == []


@pytest.mark.parametrize("keep", [False, True])
def test_a_password_reset_revokes_keys_unless_kept(
    api: TestClient, services: Services, alice: dict[str, str], keep: bool
) -> None:
    secret = create_key(api, alice)["key"]
    assert api.get("/api/v1/jobs", headers=bearer(secret)).status_code == 200
    assert api.post("/api/v1/auth/password-reset", json={"email": "alice@example.com"}).status_code == 202
    services.outbox.flush()
    mailer = services.outbox.mailer
    assert isinstance(mailer, ConsoleMailer)
    code = mailer.sent[-1].secret
    body: dict[str, Any] = {"email": "alice@example.com", "code": code, "new_password": "quiet-lantern-2046"}
    if keep:
        body["keep_api_keys"] = True
    assert api.post("/api/v1/auth/password-reset/confirm", json=body).status_code == 204
    if keep:
        assert api.get("/api/v1/jobs", headers=bearer(secret)).status_code == 200
    else:
        assert_error(api.get("/api/v1/jobs", headers=bearer(secret)), 401, "invalid_api_key")
    pair = api.post("/api/v1/auth/login", json={"email": "alice@example.com", "password": "quiet-lantern-2046"}).json()
    assert len(live_keys(api, {"Authorization": f"Bearer {pair['access_token']}"})) == (1 if keep else 0)


def test_a_new_key_is_never_cached(api: TestClient, alice: dict[str, str]) -> None:
    r = api.post("/api/v1/api-keys", json={"name": "script"}, headers=session_headers(alice))
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"


def test_concurrent_creations_do_not_pass_the_cap(services: Services, alice: dict[str, str]) -> None:
    """Found while auditing check-then-change for issue 13: the live keys were counted, then the key inserted, so
    requests at the same moment all passed the cap together. Real threads, their inserts made to meet."""
    for i in range(MAX_KEYS_PER_USER - 1):
        services.keys.create(alice["id"], ApiKeyCreate(name=f"k{i}"), Origin())
    with writes_meet(services.db, "INSERT INTO api_keys", parties=4):
        outcomes = in_threads(4, lambda: services.keys.create(alice["id"], ApiKeyCreate(name="racer"), Origin()))
    refused = [o for o in outcomes if o is not None]
    assert len(refused) == 3 and all(getattr(o, "code", "") == "too_many_keys" for o in refused), outcomes
    with services.db.session() as session:
        live = session.scalar(select(func.count()).where(ApiKey.owner_id == alice["id"], ApiKey.revoked_at.is_(None)))
    assert live == MAX_KEYS_PER_USER
