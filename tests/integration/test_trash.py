"""The Trash (issue 14): DELETE moves an image there, restore brings it back, purge and "Empty trash" delete it for
good (files too), housekeeping purges what has waited STUDIOLO_TRASH_DAYS; listings, search, collections and counts
leave trashed images out; another user can neither see, restore nor purge them."""

from __future__ import annotations

import unittest.mock
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from studiolo.db.base import utcnow
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.gallery import trash
from studiolo.domain.gallery.models import Image
from studiolo.services import Services, build_services
from studiolo.settings import Settings
from tests.helpers import auth_headers, create_user
from tests.integration.test_bulk_images import make_images

IMAGES = "/api/v1/images"


def listed(client: TestClient, **params: Any) -> list[str]:
    r = client.get(IMAGES, params=params)
    assert r.status_code == 200, r.text
    return [i["id"] for i in r.json()["items"]]


def files_of(services: Services, image_id: str) -> set[str]:
    with services.db.session() as session:
        img = session.get_one(Image, image_id)
        return {img.original_key, *img.thumbnail_keys.values()}


def set_trashed_at(services: Services, image_id: str, days_ago: float) -> None:
    with services.db.session() as session:
        session.get_one(Image, image_id).trashed_at = utcnow() - timedelta(days=days_ago)


def test_delete_moves_to_the_trash_and_restore_brings_it_back(client: TestClient, services: Services) -> None:
    a, b, c = make_images(services, prompt="a red fox in the snow")
    keys = set(services.store.iter_keys())

    assert client.delete(f"{IMAGES}/{b}").status_code == 204
    assert listed(client) == [c, a]
    assert listed(client, trash="true") == [b]
    assert listed(client, q="fox") == [c, a]  # search leaves the Trash out ...
    assert listed(client, q="fox", trash="true") == [b]  # ... and searches it when asked
    assert set(services.store.iter_keys()) == keys  # nothing deleted yet
    # The owner still sees it (the Trash view shows it), with when it goes for good.
    view = client.get(f"{IMAGES}/{b}").json()
    assert view["trashed_at"] is not None
    assert view["purge_at"] is not None
    assert client.get(f"{IMAGES}/{b}/file").status_code == 200
    assert client.get(f"{IMAGES}/{b}/file", params={"size": "300"}).status_code == 200

    # Deleting again is a no-op: the time it was trashed (and so its purge date) is kept.
    assert client.delete(f"{IMAGES}/{b}").status_code == 204
    assert client.get(f"{IMAGES}/{b}").json()["trashed_at"] == view["trashed_at"]

    r = client.post(f"{IMAGES}/{b}/restore")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == b and r.json()["trashed_at"] is None and r.json()["purge_at"] is None
    assert listed(client) == [c, b, a]
    assert listed(client, trash="true") == []
    # Restoring an image that is not in the Trash changes nothing.
    again = client.post(f"{IMAGES}/{b}/restore")
    assert again.status_code == 200 and again.json() == r.json()


def test_purge_at_is_trashed_at_plus_the_configured_days(settings_factory: Any) -> None:
    services = build_services(settings_factory(trash_days=7), upgrade_db=False)
    try:
        (a,) = make_images(services, n=1)
        services.gallery.delete(LOCAL_USER_ID, a)
        view = services.gallery.get(LOCAL_USER_ID, a)
        assert view.trashed_at is not None
        assert view.purge_at == view.trashed_at + timedelta(days=7)
    finally:
        services.close()


def test_files_go_only_when_purged(client: TestClient, services: Services) -> None:
    a, b, c = make_images(services)
    before = set(services.store.iter_keys())
    client.delete(f"{IMAGES}/{a}")
    client.delete(f"{IMAGES}/{b}")
    assert set(services.store.iter_keys()) == before

    # Purging one at once (permanent=true) works on a trashed image and on one still in the gallery alike.
    c_files = files_of(services, c)
    assert client.delete(f"{IMAGES}/{c}", params={"permanent": "true"}).status_code == 204
    assert set(services.store.iter_keys()) == before - c_files
    assert client.get(f"{IMAGES}/{c}").status_code == 404

    gone = files_of(services, a) | files_of(services, b)
    r = client.post(f"{IMAGES}/trash/empty")
    assert r.status_code == 200 and r.json() == {"purged": 2}
    assert set(services.store.iter_keys()) == before - c_files - gone
    assert not set(services.store.iter_keys("images/"))
    for image_id in (a, b):
        assert client.get(f"{IMAGES}/{image_id}").status_code == 404
        assert client.post(f"{IMAGES}/{image_id}/restore").status_code == 404
    assert client.post(f"{IMAGES}/trash/empty").json() == {"purged": 0}


def test_empty_trash_purges_in_batches(client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = make_images(services, n=5)
    monkeypatch.setattr(trash, "TRASH_PURGE_BATCH", 2)
    batches: list[int] = []
    real = trash.next_batch

    def counting(*args: Any) -> list[Image]:
        rows = real(*args)
        batches.append(len(rows))
        return rows

    monkeypatch.setattr(trash, "next_batch", counting)
    client.post(f"{IMAGES}/bulk", json={"action": "delete", "image_ids": ids[:4]})
    assert client.post(f"{IMAGES}/trash/empty").json() == {"purged": 4}
    assert batches == [2, 2, 0]  # a transaction per batch; the gallery image was never a candidate
    assert listed(client) == [ids[4]]


def test_bulk_delete_restore_and_purge(client: TestClient, services: Services) -> None:
    a, b, c = make_images(services)
    bulk = f"{IMAGES}/bulk"
    assert client.post(bulk, json={"action": "delete", "image_ids": [a, b]}).json()["done"] == [a, b]
    assert listed(client) == [c]
    assert listed(client, trash="true") == [b, a]
    assert client.post(bulk, json={"action": "restore", "image_ids": [a]}).json()["done"] == [a]
    assert listed(client) == [c, a]
    r = client.post(bulk, json={"action": "purge", "image_ids": [b, c]})
    assert r.json() == {"action": "purge", "done": [b, c], "not_found": []}
    assert listed(client) == [a] and listed(client, trash="true") == []
    r = client.post(bulk, json={"action": "restore", "image_ids": [b]})
    assert r.json() == {"action": "restore", "done": [], "not_found": [b]}
    r = client.post(bulk, json={"action": "purge", "image_ids": [a], "tags": ["x"]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "tags_not_allowed"


def test_another_user_can_neither_see_restore_nor_purge(
    api: TestClient, client: TestClient, services: Services
) -> None:
    a, b = make_images(services, n=2)
    client.delete(f"{IMAGES}/{a}")
    intruder = create_user(services, "intruder@example.test")
    (theirs,) = make_images(services, intruder, n=1)
    headers = auth_headers(services, intruder)
    api.delete(f"{IMAGES}/{theirs}", headers=headers)

    assert [i["id"] for i in api.get(IMAGES, params={"trash": "true"}, headers=headers).json()["items"]] == [theirs]
    for method, url, params in [
        ("GET", f"{IMAGES}/{a}", None),
        ("GET", f"{IMAGES}/{a}/file", None),
        ("POST", f"{IMAGES}/{a}/restore", None),
        ("DELETE", f"{IMAGES}/{a}", None),
        ("DELETE", f"{IMAGES}/{a}", {"permanent": "true"}),
        ("DELETE", f"{IMAGES}/{b}", {"permanent": "true"}),
    ]:
        r = api.request(method, url, params=params, headers=headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "image_not_found", (method, url, r.text)
    bulk = {"image_ids": [a, b], "action": "purge"}
    assert api.post(f"{IMAGES}/bulk", json=bulk, headers=headers).json()["not_found"] == [a, b]
    bulk = {"image_ids": [a], "action": "restore"}
    assert api.post(f"{IMAGES}/bulk", json=bulk, headers=headers).json()["not_found"] == [a]
    # Emptying their Trash purges only theirs.
    assert api.post(f"{IMAGES}/trash/empty", headers=headers).json() == {"purged": 1}
    assert listed(client, trash="true") == [a]
    assert listed(client) == [b]


def test_counts_and_stats_leave_the_trash_out(client: TestClient, services: Services) -> None:
    a, b, c = make_images(services)
    client.patch(f"{IMAGES}/{a}", json={"starred": True})
    client.patch(f"{IMAGES}/{b}", json={"starred": True})
    cid = client.post("/api/v1/collections", json={"name": "all"}).json()["id"]
    client.post(f"/api/v1/collections/{cid}/images", json={"image_ids": [a, b, c]})
    client.delete(f"{IMAGES}/{a}")

    stats = client.get("/api/v1/stats").json()
    assert stats["images"] == 2 and stats["starred"] == 1
    assert sum(d["images"] for d in stats["per_day"]) == 2
    admin = client.get("/api/v1/admin/analytics").json()
    assert admin["totals"]["images"] == 2
    collection = client.get(f"/api/v1/collections/{cid}").json()
    assert collection["image_count"] == 2
    assert a not in (collection["cover_thumbnail_url"] or "")
    assert listed(client, collection=cid) == [c, b]
    assert listed(client, collection=cid, trash="true") == [a]
    # A trashed image cannot be added to a collection (it would sit there unseen).
    other = client.post("/api/v1/collections", json={"name": "new"}).json()["id"]
    r = client.post(f"/api/v1/collections/{other}/images", json={"image_ids": [a]})
    assert r.status_code == 404 and r.json()["error"]["details"]["image_ids"] == [a]

    client.post(f"{IMAGES}/{a}/restore")
    assert client.get("/api/v1/stats").json()["images"] == 3
    assert client.get(f"/api/v1/collections/{cid}").json()["image_count"] == 3


def test_housekeeping_purges_after_the_configured_days(services: Services) -> None:
    a, b, c = make_images(services)
    for image_id in (a, b):
        services.gallery.delete(LOCAL_USER_ID, image_id)
    set_trashed_at(services, a, days_ago=30)
    set_trashed_at(services, b, days_ago=29)
    a_files = files_of(services, a)
    now = utcnow()

    assert services.settings.trash_days == 30
    assert services.gallery.purge_due(now - timedelta(days=1)) == 0  # a day earlier, nothing was due yet
    assert services.gallery.purge_due(now) == 1
    assert not a_files & set(services.store.iter_keys())
    assert [i.id for i in services.gallery.list(LOCAL_USER_ID, trashed=True).items] == [b]
    assert services.gallery.purge_due(now + timedelta(days=1)) == 1
    assert services.gallery.list(LOCAL_USER_ID, trashed=True).items == []
    # Gallery images are never due, however old.
    assert services.gallery.purge_due(now + timedelta(days=3650)) == 0
    assert [i.id for i in services.gallery.list(LOCAL_USER_ID).items] == [c]


def test_housekeeping_is_batch_limited(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = make_images(services, n=5)
    for image_id in ids:
        services.gallery.delete(LOCAL_USER_ID, image_id)
    monkeypatch.setattr(trash, "TRASH_PURGE_BATCH", 2)
    later = utcnow() + timedelta(days=31)
    assert services.gallery.purge_due(later, max_batches=1) == 2  # the rest waits for the next run
    assert services.gallery.purge_due(later, max_batches=1) == 2
    assert services.gallery.purge_due(later) == 1
    assert services.gallery.list(LOCAL_USER_ID, trashed=True).items == []


def test_trash_days_zero_purges_at_the_next_run_of_the_worker_pool(settings_factory: Any) -> None:
    """The pool's housekeeping (run by `studiolo serve` and every `studiolo worker`) is what purges."""
    services = build_services(settings_factory(trash_days=0), upgrade_db=False)
    try:
        a, b = make_images(services, n=2)
        services.gallery.delete(LOCAL_USER_ID, a)
        # No claim loops and a long period: the test runs the pass itself, without waiting for the thread.
        pool = services.start_workers(1, claim_loops=False)
        assert pool.purge_trash_once() == 1
        assert [i.id for i in services.gallery.list(LOCAL_USER_ID).items] == [b]
        assert services.gallery.list(LOCAL_USER_ID, trashed=True).items == []
        assert pool.purge_trash_once() == 0
    finally:
        services.close()


def test_a_restore_racing_a_purge_keeps_the_image_and_its_files(services: Services) -> None:
    """The purge re-checks that the row is still in the Trash as it deletes it (trash.delete_statement)."""
    (a,) = make_images(services, n=1)
    services.gallery.delete(LOCAL_USER_ID, a)
    keys = set(services.store.iter_keys())
    real = trash.next_batch

    def restored_meanwhile(*args: Any) -> list[Image]:
        rows = real(*args)
        with services.db.session() as other:  # another request restores it between the read and the delete
            other.get_one(Image, a).trashed_at = None
        return rows

    with unittest.mock.patch.object(trash, "next_batch", restored_meanwhile):
        assert services.gallery.empty_trash(LOCAL_USER_ID) == 0
    assert set(services.store.iter_keys()) == keys
    assert services.gallery.get(LOCAL_USER_ID, a).trashed_at is None


def test_deleting_an_account_removes_its_trash_too(client: TestClient, services: Services) -> None:
    user = create_user(services, "leaving@example.test")
    a, b = make_images(services, user, n=2)
    services.gallery.delete(user, a)
    keys = files_of(services, a) | files_of(services, b)
    admin = create_user(services, "boss@example.test", role="admin")
    r = client.delete(f"/api/v1/admin/users/{user}", headers=auth_headers(services, admin))
    assert r.status_code == 204, r.text
    assert not keys & set(services.store.iter_keys())
    with services.db.session() as session:
        assert session.query(Image).filter(Image.owner_id == user).count() == 0


@pytest.mark.parametrize("days", [-1, "soon"])
def test_trash_days_is_validated(days: object, tmp_path: Any) -> None:
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, trash_days=days)
