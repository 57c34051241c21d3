"""Deleted data leaves the SQLite files: no email, prompt or tag of a deleted account (nor the row of a deleted
image) stays readable in ``studiolo.db`` or its write-ahead log. SQLite only: these are its files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from studiolo.app import create_app
from studiolo.db.base import utcnow
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.services import Services, build_services
from tests.helpers import auth_headers, create_user, drain, submit

EMAIL = "zelda.quixotic@example.com"
PASSWORD = "a long enough password"
PROMPT = "xylophonic marmalade zeppelinwords"
TAG = "quetzalcoatlus"
STEM = "quetzalcoatlu"


@pytest.fixture
def sqlite_services(settings_factory: Callable[..., Any]) -> Iterator[Services]:
    svc = build_services(settings_factory(database_url=""), upgrade_db=False)
    yield svc
    svc.close(timeout=10)


def found(services: Services, *needles: bytes) -> dict[str, list[str]]:
    """Which of ``needles`` each database file holds (the database, its log and the log's index)."""
    hits: dict[str, list[str]] = {}
    for path in sorted(services.settings.data_dir.glob("studiolo.db*")):
        data = path.read_bytes()
        held = [n.decode() for n in needles if n in data]
        if held:
            hits[path.name] = held
    return hits


def found_anywhere(services: Services, *needles: bytes) -> set[str]:
    return {needle for held in found(services, *needles).values() for needle in held}


def make_gallery(services: Services, client: TestClient, owner: str, headers: dict[str, str]) -> dict[str, Any]:
    """Three pictures; the first listed is tagged, and returned."""
    for i in range(3):
        submit(services, owner=owner, prompt=f"{PROMPT} number {i}")
    drain(services)
    images = client.get("/api/v1/images", headers=headers).json()["items"]
    assert len(images) == 3
    r = client.patch(f"/api/v1/images/{images[0]['id']}", json={"tags": [TAG]}, headers=headers)
    assert r.status_code == 200, r.text
    tagged: dict[str, Any] = r.json()
    return tagged


def test_a_deleted_account_leaves_nothing_readable(sqlite_services: Services) -> None:
    services = sqlite_services
    user_id = create_user(services, EMAIL, password=PASSWORD)
    headers = auth_headers(services, user_id)
    with TestClient(create_app(services=services, start_workers=False)) as client:
        make_gallery(services, client, user_id, headers)
        # A mistyped password: the audit log keeps the address that was typed.
        assert client.post("/api/v1/auth/login", json={"email": EMAIL, "password": "wrong"}).status_code == 401
        needles = (EMAIL.split("@")[0].encode(), b"xylophonic", b"zeppelinwords", TAG.encode())
        assert found_anywhere(services, *needles) == {n.decode() for n in needles}

        r = client.request("DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=headers)
        assert r.status_code == 204, r.text

    assert found(services, *needles) == {}
    assert (services.settings.data_dir / "studiolo.db-wal").stat().st_size == 0  # the log was emptied
    # The audit trail keeps the events, without the address.
    actions = [e.action for e in services.admin.audit_log(limit=100).items]
    assert "login_failed" in actions and "account_deleted" in actions


@pytest.mark.parametrize("how", ["one", "bulk", "empty_trash", "housekeeping"])
def test_a_purged_image_leaves_nothing_readable(sqlite_services: Services, how: str) -> None:
    """Purged (deleted at once, in bulk, by emptying the Trash or by housekeeping): the row is overwritten, the log
    emptied, and the full-text index merged, so not even the bare words of its tag stay in the files."""
    services = sqlite_services
    headers = auth_headers(services)
    with TestClient(create_app(services=services, start_workers=False)) as client:
        image = make_gallery(services, client, LOCAL_USER_ID, headers)
        # Only this image holds the tag: in its row (as JSON, and in the search text joining prompt and tag) and in
        # the full-text index (its stem, as the porter tokenizer stores it: "quetzalcoatlu").
        needles = (f'"{TAG}"'.encode(), f"{image['prompt']} {TAG}".encode(), STEM.encode())
        assert found_anywhere(services, *needles) == {n.decode() for n in needles}

        # To the Trash first: nothing is deleted yet, the image is only out of the gallery.
        assert client.delete(f"/api/v1/images/{image['id']}", headers=headers).status_code == 204
        assert found_anywhere(services, *needles) == {n.decode() for n in needles}
        if how == "one":
            r = client.delete(f"/api/v1/images/{image['id']}", params={"permanent": "true"}, headers=headers)
            assert r.status_code == 204, r.text
        elif how == "bulk":
            body = {"action": "purge", "image_ids": [image["id"]]}
            r = client.post("/api/v1/images/bulk", json=body, headers=headers)
            assert r.status_code == 200 and r.json()["done"] == [image["id"]], r.text
        elif how == "empty_trash":
            r = client.post("/api/v1/images/trash/empty", headers=headers)
            assert r.status_code == 200 and r.json() == {"purged": 1}, r.text
        else:
            assert services.gallery.purge_due(utcnow() + timedelta(days=services.settings.trash_days)) == 1

    assert found(services, *needles) == {}
    assert (services.settings.data_dir / "studiolo.db-wal").stat().st_size == 0


@pytest.mark.parametrize("what", ["style", "collection"])
def test_a_deleted_style_or_collection_leaves_no_copy_in_the_log(sqlite_services: Services, what: str) -> None:
    services = sqlite_services
    headers = auth_headers(services)
    secret_text = "obsidian heliotrope whisperings"
    with TestClient(create_app(services=services, start_workers=False)) as client:
        if what == "style":
            body = {"slug": "mine", "name": "Mine", "prompt_template": f"{{prompt}}, {secret_text}"}
            assert client.post("/api/v1/styles", json=body, headers=headers).status_code == 201
        else:
            r = client.post("/api/v1/collections", json={"name": "Mine", "description": secret_text}, headers=headers)
            assert r.status_code == 201, r.text
        assert found_anywhere(services, secret_text.encode())
        url = "/api/v1/styles/mine" if what == "style" else f"/api/v1/collections/{r.json()['id']}"
        assert client.delete(url, headers=headers).status_code == 204

    assert found(services, secret_text.encode()) == {}
