"""First-run setup, the admin routes (users, suspension, roles, audit log) and account deletion."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_ID, ApiKey, OneTimeCode, RefreshToken, User
from studiolo.domain.gallery.models import Collection, CollectionItem, Image
from studiolo.domain.generation.models import Job
from studiolo.errors import Conflict
from studiolo.services import Services
from tests.helpers import auth_headers, create_user, drain, in_threads, submit, writes_meet

if TYPE_CHECKING:  # the TestClient's responses (Starlette's test client runs on httpx2)
    from httpx2 import Response

STRONG = "velvet-harbor-1937"
OTHER = "quiet-lantern-2046"
GEN = {"prompt": "a lighthouse at dusk", "size": "64x64", "steps": 2, "seed": 1234}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(r: Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "request_id"}
    assert body["error"]["code"] == code, body


def login(api: TestClient, email: str, password: str = STRONG) -> Response:
    return api.post("/api/v1/auth/login", json={"email": email, "password": password})


def token_of(api: TestClient, email: str, password: str = STRONG) -> str:
    r = login(api, email, password)
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def setup_body(services: Services, **changes: Any) -> dict[str, Any]:
    return {
        "token": services.admin.setup_token(),
        "email": "root@example.com",
        "password": STRONG,
        "display_name": "Root",
        **changes,
    }


# --- first run --------------------------------------------------------------------------------------------------
def test_setup_creates_the_first_admin_from_the_install_owner(api: TestClient, services: Services) -> None:
    owner_before = auth_headers(services)  # a session of the built-in owner, as the CLI era left it
    job_id = submit(services)  # made before anyone could sign in

    r = api.get("/api/v1/setup")
    assert r.status_code == 200
    assert r.json() == {"needs_setup": True, "auth_mode": "accounts", "oauth_providers": []}

    assert_error(api.post("/api/v1/setup", json=setup_body(services, token="0" * 32)), 403, "invalid_setup_token")
    assert_error(api.post("/api/v1/setup", json=setup_body(services, password="password123")), 422, "weak_password")
    assert_error(api.post("/api/v1/setup", json=setup_body(services, email="root")), 422, "invalid_email")
    assert api.get("/api/v1/setup").json()["needs_setup"] is True

    r = api.post("/api/v1/setup", json=setup_body(services))
    assert r.status_code == 200, r.text
    pair = r.json()
    assert {"studiolo_access", "studiolo_refresh", "studiolo_csrf"} <= set(api.cookies.keys())
    api.cookies.clear()
    view = api.get("/api/v1/auth/me", headers=bearer(pair["access_token"])).json()
    assert view["id"] == LOCAL_USER_ID
    assert view["email"] == "root@example.com" and view["display_name"] == "Root"
    assert view["role"] == "admin" and view["status"] == "active" and view["email_verified"] is True
    assert api.get("/api/v1/setup").json()["needs_setup"] is False

    # What the install made before belongs to the new admin; old sessions of the owner row are over.
    jobs = api.get("/api/v1/jobs", headers=bearer(pair["access_token"])).json()["items"]
    assert [j["id"] for j in jobs] == [job_id]
    assert_error(api.get("/api/v1/auth/me", headers=owner_before), 401, "token_revoked")
    assert api.get("/api/v1/admin/users", headers=bearer(pair["access_token"])).status_code == 200
    assert login(api, "root@example.com").status_code == 200
    with services.db.session() as session:
        assert session.scalar(select(func.count()).select_from(User).where(User.role == "admin")) == 1


def test_setup_works_only_once(api: TestClient, services: Services) -> None:
    assert api.post("/api/v1/setup", json=setup_body(services)).status_code == 200
    api.cookies.clear()
    r = api.post("/api/v1/setup", json=setup_body(services, email="second@example.com", password=OTHER))
    assert_error(r, 409, "already_set_up")
    r = api.post("/api/v1/setup", json=setup_body(services, email="third@example.com", token="0" * 32))
    assert_error(r, 409, "already_set_up")
    assert_error(login(api, "second@example.com", OTHER), 401, "invalid_credentials")
    assert api.get("/api/v1/auth/me", headers=bearer(token_of(api, "root@example.com"))).json()["role"] == "admin"


# --- admin routes -------------------------------------------------------------------------------------------------
ADMIN_ROUTES = [
    ("GET", "/api/v1/admin/users", None),
    ("GET", "/api/v1/admin/users/{id}", None),
    ("POST", "/api/v1/admin/users/{id}/suspend", None),
    ("POST", "/api/v1/admin/users/{id}/activate", None),
    ("POST", "/api/v1/admin/users/{id}/role", {"role": "admin"}),
    ("DELETE", "/api/v1/admin/users/{id}", None),
    ("GET", "/api/v1/admin/audit", None),
]


def test_admin_routes_refuse_non_admins(api: TestClient, services: Services) -> None:
    alice = create_user(services, "alice@example.com", password=STRONG)
    bob = create_user(services, "bob@example.com", password=STRONG)
    token = token_of(api, "alice@example.com")
    for method, path, body in ADMIN_ROUTES:
        for target in (alice, bob):
            r = api.request(method, path.format(id=target), json=body, headers=bearer(token))
            assert_error(r, 403, "admin_required")
    me = api.get("/api/v1/auth/me", headers=bearer(token)).json()
    assert me["role"] == "user" and me["status"] == "active"
    with services.db.session() as session:
        assert session.get_one(User, bob).status == "active"


def test_list_and_search_users(client: TestClient, services: Services) -> None:
    ids = {
        "anna": create_user(services, "anna@example.com"),
        "ben": create_user(services, "ben.smith@example.com"),
        "under": create_user(services, "first_last@example.com"),
        "pct": create_user(services, "percent@example.com"),
        "dora": create_user(services, "dora@example.com", status="pending"),
        "eve": create_user(services, "eve@example.com", status="suspended"),
    }
    with services.db.session() as session:
        session.get_one(User, ids["anna"]).display_name = "Anna Berg"
        session.get_one(User, ids["pct"]).display_name = "100% real"

    def search(**params: Any) -> list[str]:
        r = client.get("/api/v1/admin/users", params={"limit": 100, **params})
        assert r.status_code == 200, r.text
        return [u["id"] for u in r.json()["items"]]

    everyone = search()
    assert set(everyone) == {*ids.values(), LOCAL_USER_ID}
    assert everyone == sorted(everyone, reverse=True)  # newest first
    assert search(q="anna") == [ids["anna"]]
    assert search(q="BERG") == [ids["anna"]]  # display names, any case
    assert search(q="SMITH@EXAMPLE") == [ids["ben"]]
    assert search(q="_") == [ids["under"]]  # a literal underscore, not "any character"
    assert search(q="%") == [ids["pct"]]  # a literal percent sign
    assert search(q="nobody-has-this") == []
    assert search(status="pending") == [ids["dora"]]
    assert search(status="suspended") == [ids["eve"]]
    assert search(q="example.com", status="active") == sorted(
        [ids["anna"], ids["ben"], ids["under"], ids["pct"]], reverse=True
    )
    assert_error(client.get("/api/v1/admin/users", params={"status": "deleted"}), 422, "invalid_input")
    assert_error(client.get("/api/v1/admin/users", params={"limit": 0}), 422, "invalid_input")

    # Keyset pages: every user exactly once, in order, and the last page says so.
    walked: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/admin/users", params=params).json()
        walked += [u["id"] for u in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["items"]) == 2
    assert walked == everyone
    assert pages == 4  # 7 users, 2 per page

    r = client.get(f"/api/v1/admin/users/{ids['anna']}")
    assert r.status_code == 200 and r.json()["email"] == "anna@example.com"
    assert "password_hash" not in r.text
    assert_error(client.get("/api/v1/admin/users/nope"), 404, "user_not_found")


def test_suspend_and_activate(api: TestClient, client: TestClient, services: Services) -> None:
    bob = create_user(services, "bob@example.com", password=STRONG)
    token = token_of(api, "bob@example.com")
    assert api.get("/api/v1/auth/me", headers=bearer(token)).status_code == 200

    r = client.post(f"/api/v1/admin/users/{bob}/suspend")
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    r = api.get("/api/v1/auth/me", headers=bearer(token))
    assert r.status_code in (401, 403) and r.json()["error"]["code"] in ("token_revoked", "account_suspended")
    assert_error(login(api, "bob@example.com"), 403, "account_suspended")
    # Suspending twice changes nothing.
    assert client.post(f"/api/v1/admin/users/{bob}/suspend").json()["status"] == "suspended"

    r = client.post(f"/api/v1/admin/users/{bob}/activate")
    assert r.status_code == 200 and r.json()["status"] == "active"
    fresh = token_of(api, "bob@example.com")
    assert api.get("/api/v1/auth/me", headers=bearer(fresh)).status_code == 200
    # Sessions from before the suspension stay ended.
    assert_error(api.get("/api/v1/auth/me", headers=bearer(token)), 401, "token_revoked")


def test_suspension_rules(client: TestClient, services: Services) -> None:
    pending = create_user(services, "pending@example.com", status="pending")
    assert_error(client.post(f"/api/v1/admin/users/{LOCAL_USER_ID}/suspend"), 409, "cannot_suspend_self")
    assert_error(client.post(f"/api/v1/admin/users/{pending}/activate"), 409, "email_not_verified")
    assert_error(client.post("/api/v1/admin/users/nope/suspend"), 404, "user_not_found")
    assert client.get("/api/v1/auth/me").status_code == 200
    with services.db.session() as session:
        assert session.get_one(User, pending).status == "pending"


def test_role_changes_end_old_tokens(api: TestClient, client: TestClient, services: Services) -> None:
    bob = create_user(services, "bob@example.com", password=STRONG)
    token = token_of(api, "bob@example.com")
    assert_error(api.get("/api/v1/admin/users", headers=bearer(token)), 403, "admin_required")

    r = client.post(f"/api/v1/admin/users/{bob}/role", json={"role": "admin"})
    assert r.status_code == 200 and r.json()["role"] == "admin"
    assert_error(api.get("/api/v1/auth/me", headers=bearer(token)), 401, "token_revoked")
    admin_token = token_of(api, "bob@example.com")
    assert api.get("/api/v1/admin/users", headers=bearer(admin_token)).status_code == 200

    r = client.post(f"/api/v1/admin/users/{bob}/role", json={"role": "user"})
    assert r.status_code == 200 and r.json()["role"] == "user"
    assert_error(api.get("/api/v1/admin/users", headers=bearer(admin_token)), 401, "token_revoked")
    user_token = token_of(api, "bob@example.com")
    assert_error(api.get("/api/v1/admin/users", headers=bearer(user_token)), 403, "admin_required")

    assert_error(client.post(f"/api/v1/admin/users/{bob}/role", json={"role": "root"}), 422, "invalid_input")
    assert_error(client.post("/api/v1/admin/users/nope/role", json={"role": "admin"}), 404, "user_not_found")


def test_the_last_admin_cannot_be_demoted(api: TestClient, client: TestClient, services: Services) -> None:
    assert_error(client.post(f"/api/v1/admin/users/{LOCAL_USER_ID}/role", json={"role": "user"}), 409, "last_admin")
    assert client.get("/api/v1/admin/users").status_code == 200

    # With a second admin, one of them may step down; then the other is the last one.
    bob = create_user(services, "bob@example.com", password=STRONG, role="admin")
    r = client.post(f"/api/v1/admin/users/{LOCAL_USER_ID}/role", json={"role": "user"})
    assert r.status_code == 200, r.text
    bob_token = token_of(api, "bob@example.com")
    r = api.post(f"/api/v1/admin/users/{bob}/role", json={"role": "user"}, headers=bearer(bob_token))
    assert_error(r, 409, "last_admin")
    assert api.get("/api/v1/auth/me", headers=bearer(bob_token)).json()["role"] == "admin"


def test_a_suspended_admin_does_not_count_as_another_admin(client: TestClient, services: Services) -> None:
    create_user(services, "sleeping@example.com", password=STRONG, role="admin", status="suspended")
    assert_error(client.post(f"/api/v1/admin/users/{LOCAL_USER_ID}/role", json={"role": "user"}), 409, "last_admin")


def test_admin_deletes_a_user(api: TestClient, client: TestClient, services: Services) -> None:
    bob = create_user(services, "bob@example.com", password=STRONG)
    token = token_of(api, "bob@example.com")
    r = client.delete(f"/api/v1/admin/users/{bob}")
    assert r.status_code == 204, r.text
    assert_error(client.get(f"/api/v1/admin/users/{bob}"), 404, "user_not_found")
    assert api.get("/api/v1/auth/me", headers=bearer(token)).status_code == 401
    assert_error(client.delete(f"/api/v1/admin/users/{bob}"), 404, "user_not_found")


# --- the audit log ----------------------------------------------------------------------------------------------
def test_the_audit_log_records_who_did_what_from_where(api: TestClient, client: TestClient, services: Services) -> None:
    bob = create_user(services, "bob@example.com", password=STRONG)
    carol = create_user(services, "carol@example.com", password=STRONG)
    dave = create_user(services, "dave@example.com", password=STRONG)
    erin = create_user(services, "erin@example.com", password=STRONG)
    ua = {"User-Agent": "audit-test/1.0"}

    assert_error(login(api, "ghost@example.com", OTHER), 401, "invalid_credentials")
    assert_error(login(api, "bob@example.com", OTHER), 401, "invalid_credentials")
    token = token_of(api, "bob@example.com")
    r = api.post(
        "/api/v1/auth/password",
        json={"current_password": STRONG, "new_password": OTHER},
        headers={**bearer(token), **ua},
    )
    token = r.json()["access_token"]
    key_id = api.post("/api/v1/api-keys", json={"name": "k"}, headers={**bearer(token), **ua}).json()["id"]
    api.delete(f"/api/v1/api-keys/{key_id}", headers={**bearer(token), **ua})
    assert client.post(f"/api/v1/admin/users/{carol}/suspend").status_code == 200
    assert client.post(f"/api/v1/admin/users/{dave}/role", json={"role": "admin"}).status_code == 200
    assert client.delete(f"/api/v1/admin/users/{erin}").status_code == 204

    r = client.get("/api/v1/admin/audit", params={"limit": 200})
    assert r.status_code == 200, r.text
    events = r.json()["items"]
    by_action: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_action.setdefault(e["action"], []).append(e)
    for action in (
        "login",
        "login_failed",
        "password_changed",
        "api_key_created",
        "api_key_revoked",
        "user_suspended",
        "role_changed",
        "account_deleted",
    ):
        assert action in by_action, (action, sorted(by_action))
        assert all(e["ip"] for e in by_action[action]), action

    failed = {e["subject"]: e for e in by_action["login_failed"]}
    assert failed["ghost@example.com"]["actor_id"] is None
    assert failed["bob@example.com"]["actor_id"] == bob
    assert [e["actor_id"] for e in by_action["login"]] == [bob]
    assert by_action["password_changed"][0]["actor_id"] == bob
    assert by_action["password_changed"][0]["user_agent"] == "audit-test/1.0"
    assert by_action["api_key_created"][0]["target_id"] == key_id
    assert by_action["api_key_revoked"][0]["target_id"] == key_id
    suspended = by_action["user_suspended"][0]
    assert (suspended["actor_id"], suspended["target_id"]) == (LOCAL_USER_ID, carol)
    role = by_action["role_changed"][0]
    assert role["target_id"] == dave and role["details"] == {"previous": "user", "role": "admin"}
    deleted = by_action["account_deleted"][0]
    assert (deleted["actor_id"], deleted["target_id"]) == (LOCAL_USER_ID, erin)
    assert "erin@example.com" not in r.text  # the trail keeps the id, not the address
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True)

    # Filters and keyset pages.
    only = client.get("/api/v1/admin/audit", params={"action": "login_failed"}).json()["items"]
    assert {e["action"] for e in only} == {"login_failed"} and len(only) == 2
    mine = client.get("/api/v1/admin/audit", params={"actor_id": bob, "limit": 200}).json()["items"]
    assert mine and {e["actor_id"] for e in mine} == {bob}
    walked: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/admin/audit", params=params).json()
        walked += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == ids


# --- account deletion -------------------------------------------------------------------------------------------
def rows_of(services: Services, user_id: str) -> dict[str, int]:
    def count(stmt: Any) -> int:
        return int(session.scalar(stmt) or 0)

    with services.db.session() as session:
        return {
            "users": count(select(func.count()).select_from(User).where(User.id == user_id)),
            "jobs": count(select(func.count()).select_from(Job).where(Job.owner_id == user_id)),
            "images": count(select(func.count()).select_from(Image).where(Image.owner_id == user_id)),
            "collections": count(select(func.count()).select_from(Collection).where(Collection.owner_id == user_id)),
            "collection_items": count(
                select(func.count())
                .select_from(CollectionItem)
                .join(Collection, Collection.id == CollectionItem.collection_id)
                .where(Collection.owner_id == user_id)
            ),
            "api_keys": count(select(func.count()).select_from(ApiKey).where(ApiKey.owner_id == user_id)),
            "sessions": count(select(func.count()).select_from(RefreshToken).where(RefreshToken.user_id == user_id)),
            "codes": count(select(func.count()).select_from(OneTimeCode).where(OneTimeCode.user_id == user_id)),
        }


def file_keys(services: Services, user_id: str) -> list[str]:
    with services.db.session() as session:
        rows = session.execute(select(Image.original_key, Image.thumbnail_keys).where(Image.owner_id == user_id)).all()
    return [key for original, thumbs in rows for key in (original, *(thumbs or {}).values())]


def test_deleting_my_account_removes_my_data_and_files(api: TestClient, client: TestClient, services: Services) -> None:
    alice = create_user(services, "alice@example.com", password=STRONG)
    pair = login(api, "alice@example.com").json()
    token = pair["access_token"]
    other_session = login(api, "alice@example.com").json()
    h = bearer(token)
    job = api.post("/api/v1/generations", json=GEN, headers=h)
    assert job.status_code == 202, job.text
    # The owner makes the same picture (same prompt and seed): the owner's files must survive Alice's deletion.
    owner_job = client.post("/api/v1/generations", json=GEN).json()
    assert drain(services) == 2
    image_id = api.get(job.json()["urls"]["get"], headers=h).json()["outputs"][0]["image_id"]
    owner_image = client.get(owner_job["urls"]["get"]).json()["outputs"][0]["image_id"]
    collection = api.post("/api/v1/collections", json={"name": "mine"}, headers=h).json()["id"]
    assert api.post(f"/api/v1/collections/{collection}/images", json={"image_ids": [image_id]}, headers=h).is_success
    key = api.post("/api/v1/api-keys", json={"name": "k"}, headers=h).json()["key"]
    api.post("/api/v1/auth/password-reset", json={"email": "alice@example.com"})
    services.outbox.flush()  # the code is written in the background, after the answer

    before = rows_of(services, alice)
    assert all(before.values()), before
    files = file_keys(services, alice)
    assert files and all(services.store.exists(k) for k in files)

    for body in ({"password": OTHER}, {}, {"confirm_email": "alice@example.com"}):
        r = api.request("DELETE", "/api/v1/auth/me", json=body, headers=h)
        assert r.status_code == 403, (body, r.text)
    assert_error(
        api.request("DELETE", "/api/v1/auth/me", json={"password": OTHER}, headers=h), 403, "invalid_credentials"
    )
    assert rows_of(services, alice) == before
    assert all(services.store.exists(k) for k in files)
    assert api.get("/api/v1/auth/me", headers=h).status_code == 200

    r = api.request("DELETE", "/api/v1/auth/me", json={"password": STRONG}, headers=h)
    assert r.status_code == 204, r.text
    assert rows_of(services, alice) == dict.fromkeys(before, 0)
    owner_files = set(file_keys(services, LOCAL_USER_ID))
    for k in files:
        assert services.store.exists(k) == (k in owner_files), k
    assert client.get(f"/api/v1/images/{owner_image}/file").status_code == 200

    assert api.get("/api/v1/auth/me", headers=h).status_code == 401
    assert api.get("/api/v1/auth/me", headers=bearer(other_session["access_token"])).status_code == 401
    assert_error(api.get("/api/v1/auth/me", headers=bearer(key)), 401, "invalid_api_key")
    assert api.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
    assert_error(login(api, "alice@example.com"), 401, "invalid_credentials")
    # The address is free again.
    r = api.post("/api/v1/auth/register", json={"email": "alice@example.com", "password": OTHER})
    assert r.status_code == 202
    services.outbox.flush()  # sign-up is written in the background, after the answer
    with services.db.session() as session:
        assert session.scalar(select(User.status).where(User.email == "alice@example.com")) == "pending"


def test_deleted_files_are_gone_when_nothing_else_uses_them(api: TestClient, services: Services) -> None:
    alice = create_user(services, "alice@example.com", password=STRONG)
    h = bearer(token_of(api, "alice@example.com"))
    api.post("/api/v1/generations", json={**GEN, "prompt": "only alice has this", "seed": 99}, headers=h)
    drain(services)
    files = file_keys(services, alice)
    assert files and all(services.store.exists(k) for k in files)
    assert api.request("DELETE", "/api/v1/auth/me", json={"password": STRONG}, headers=h).status_code == 204
    assert not any(services.store.exists(k) for k in files)


def test_the_last_admin_cannot_delete_itself(api: TestClient, services: Services) -> None:
    pair = api.post("/api/v1/setup", json=setup_body(services)).json()
    api.cookies.clear()
    h = bearer(pair["access_token"])
    r = api.request("DELETE", "/api/v1/auth/me", json={"password": STRONG}, headers=h)
    assert_error(r, 409, "last_admin")
    assert api.get("/api/v1/auth/me", headers=h).status_code == 200

    # Once someone else administers, it may go.
    bob = create_user(services, "bob@example.com", password=STRONG)
    assert api.post(f"/api/v1/admin/users/{bob}/role", json={"role": "admin"}, headers=h).status_code == 200
    r = api.request("DELETE", "/api/v1/auth/me", json={"password": STRONG}, headers=h)
    assert r.status_code == 204, r.text
    with services.db.session() as session:
        assert session.get(User, LOCAL_USER_ID) is None


def test_a_cookie_session_needs_csrf_to_delete_the_account(api: TestClient, services: Services) -> None:
    alice = create_user(services, "alice@example.com", password=STRONG)
    api.post("/api/v1/auth/login", json={"email": "alice@example.com", "password": STRONG, "use_cookies": True})
    r = api.request("DELETE", "/api/v1/auth/me", json={"password": STRONG})
    assert_error(r, 403, "csrf_failed")
    assert rows_of(services, alice)["users"] == 1
    csrf = api.cookies.get("studiolo_csrf") or ""
    r = api.request("DELETE", "/api/v1/auth/me", json={"password": STRONG}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 204
    assert rows_of(services, alice)["users"] == 0


# --- the last administrator under concurrency (issue 13, item 12) -------------------------------------------------
def active_admins(services: Services) -> list[str]:
    with services.db.session() as session:
        return list(session.scalars(select(User.email).where(User.role == "admin", User.status == "active")))


REMOVALS: dict[str, tuple[str, Callable[[Services, str, str], object]]] = {
    # change: (the statement of the old code to make the two transactions meet at, the change)
    "demote": ("UPDATE users", lambda svc, actor, target: svc.admin.set_role(actor, target, "user", Origin())),
    "suspend": ("UPDATE users", lambda svc, actor, target: svc.admin.set_status(actor, target, "suspended", Origin())),
    "delete": ("DELETE FROM users", lambda svc, actor, target: svc.admin.delete_account(actor, target, Origin())),
}


@pytest.mark.parametrize("change", sorted(REMOVALS))
def test_concurrent_removals_of_the_last_two_admins_leave_one(services: Services, change: str) -> None:
    """Regression (issue 13, item 12): two admins demoting each other at the same time left no admin, because the
    last-admin check ran in its own transaction before the change (deletion the same; suspension had no check at
    all). Real threads, their writes made to meet; now exactly one change wins and the other is refused."""
    with services.db.session() as session:
        session.get_one(User, LOCAL_USER_ID).role = "user"
    ann = create_user(services, "ann@example.com", password=STRONG, role="admin")
    ben = create_user(services, "ben@example.com", password=STRONG, role="admin")
    statement, remove = REMOVALS[change]
    turns = iter([(ann, ben), (ben, ann)])
    lock = threading.Lock()

    def act() -> None:
        with lock:
            actor, target = next(turns)
        remove(services, actor, target)

    with writes_meet(services.db, statement, parties=2):
        outcomes = in_threads(2, act)
    refused = [o for o in outcomes if o is not None]
    assert len(refused) == 1, outcomes
    assert isinstance(refused[0], Conflict) and refused[0].code == "last_admin"
    assert len(active_admins(services)) == 1


def test_suspending_the_last_admin_is_refused(client: TestClient, services: Services) -> None:
    """Suspension now counts like demotion and deletion (the CLI may suspend anyone, itself not signed in)."""
    bob = create_user(services, "bob@example.com", password=STRONG, role="admin")
    assert client.post(f"/api/v1/admin/users/{bob}/suspend").status_code == 200
    with pytest.raises(Conflict) as refused:
        services.admin.set_status(None, LOCAL_USER_ID, "suspended", Origin())
    assert refused.value.code == "last_admin"
    assert active_admins(services) == [services.admin.get_user(LOCAL_USER_ID).email]


def test_a_second_admin_with_a_new_address_can_be_created(api: TestClient, services: Services) -> None:
    """`studiolo users create-admin` for a second, new address crashed (the epoch of a row not yet inserted is
    None, and it was bumped with ``+= 1``); found while moving epoch bumps into SQL for issue 13."""
    first = services.admin.create_admin("root@example.com", STRONG, "Root", Origin())
    second = services.admin.create_admin("second@example.com", OTHER, "Second", Origin())
    assert first.id == LOCAL_USER_ID and second.id != LOCAL_USER_ID
    assert {first.role, second.role} == {"admin"}
    token = token_of(api, "second@example.com", OTHER)
    assert api.get("/api/v1/admin/users", headers=bearer(token)).status_code == 200
    # Making an existing account admin ends its earlier tokens (they carried the old role).
    create_user(services, "carl@example.com", password=STRONG)
    old_token = token_of(api, "carl@example.com")
    services.admin.create_admin("carl@example.com", STRONG, "", Origin())
    assert_error(api.get("/api/v1/auth/me", headers=bearer(old_token)), 401, "token_revoked")
