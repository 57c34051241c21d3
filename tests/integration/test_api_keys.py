"""API keys (/api/v1/api-keys): shown once, stored hashed, scoped, revocable, expiring, and never able to
manage the account that owns them."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from studiolo.db.base import utcnow
from studiolo.domain.accounts.keys import MAX_KEYS_PER_USER
from studiolo.domain.accounts.models import ApiKey
from studiolo.domain.generation.models import Job
from studiolo.services import Services
from tests.helpers import auth_headers, create_user

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
