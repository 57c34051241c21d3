"""POST /images/bulk: one action on many of the caller's images; another user's ids are simply not found."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.services import Services
from tests.helpers import auth_headers, create_user, drain, submit

BULK = "/api/v1/images/bulk"


def make_images(services: Services, owner: str = LOCAL_USER_ID, n: int = 3, **params: Any) -> list[str]:
    job_id = submit(services, owner, n=n, **params)
    drain(services)
    view = services.generation.get(owner, job_id)
    assert view.status == "succeeded", view
    return [o.image_id for o in view.outputs]


def image(client: TestClient, image_id: str) -> dict[str, Any]:
    r = client.get(f"/api/v1/images/{image_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def assert_error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert set(r.json()) == {"error", "request_id"} and r.json()["error"]["code"] == code, r.text


def test_star_unstar_and_the_not_found_list(api: TestClient, client: TestClient, services: Services) -> None:
    a, b, c = make_images(services)
    other = create_user(services, "other@example.com")
    (theirs,) = make_images(services, other, n=1)

    r = client.post(BULK, json={"action": "star", "image_ids": [b, "nope", a, theirs, b]})
    assert r.status_code == 200, r.text
    assert r.json() == {"action": "star", "done": [b, a], "not_found": ["nope", theirs]}
    assert [image(client, i)["starred"] for i in (a, b, c)] == [True, True, False]
    starred = client.get("/api/v1/images", params={"starred": True}).json()["items"]
    assert {i["id"] for i in starred} == {a, b}
    # Another user's image is neither changed nor revealed.
    other_client = auth_headers(services, other)
    assert api.get(f"/api/v1/images/{theirs}", headers=other_client).json()["starred"] is False

    r = client.post(BULK, json={"action": "unstar", "image_ids": [a, c]})
    assert r.json() == {"action": "unstar", "done": [a, c], "not_found": []}
    assert [image(client, i)["starred"] for i in (a, b, c)] == [False, True, False]

    # The other user acting on the owner's ids finds nothing and changes nothing.
    r = api.post(BULK, json={"action": "unstar", "image_ids": [b, theirs]}, headers=other_client)
    assert r.json() == {"action": "unstar", "done": [theirs], "not_found": [b]}
    assert image(client, b)["starred"] is True
    r = api.post(BULK, json={"action": "delete", "image_ids": [a, b, c]}, headers=other_client)
    assert r.json() == {"action": "delete", "done": [], "not_found": [a, b, c]}
    assert all(client.get(f"/api/v1/images/{i}").status_code == 200 for i in (a, b, c))


def test_add_and_remove_tags(client: TestClient, services: Services) -> None:
    a, b = make_images(services, n=2, prompt="a harbour", tags=["sea"])
    r = client.post(BULK, json={"action": "add_tags", "image_ids": [a, b], "tags": [" Boats ", "sea", "boats", "Dusk"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"action": "add_tags", "done": [a, b], "not_found": []}
    assert image(client, a)["tags"] == ["sea", "boats", "dusk"]  # cleaned, no repeats, order kept
    # Search follows the new tags (prompt + tags are indexed together).
    found = client.get("/api/v1/images", params={"q": "dusk"}).json()["items"]
    assert {i["id"] for i in found} == {a, b}

    r = client.post(BULK, json={"action": "remove_tags", "image_ids": [b], "tags": ["SEA", "dusk", "never-there"]})
    assert r.json() == {"action": "remove_tags", "done": [b], "not_found": []}
    assert image(client, b)["tags"] == ["boats"] and image(client, a)["tags"] == ["sea", "boats", "dusk"]
    assert {i["id"] for i in client.get("/api/v1/images", params={"q": "dusk"}).json()["items"]} == {a}


def test_adding_tags_past_the_limit_changes_nothing(client: TestClient, services: Services) -> None:
    a, b = make_images(services, n=2)
    full = [f"t{i}" for i in range(31)]
    assert client.patch(f"/api/v1/images/{a}", json={"tags": full}).status_code == 200
    r = client.post(BULK, json={"action": "add_tags", "image_ids": [a, b], "tags": ["x", "y"]})
    assert_error(r, 422, "too_many_tags")
    assert r.json()["error"]["details"] == {"image_ids": [a], "max": 32}
    assert image(client, a)["tags"] == full and image(client, b)["tags"] == []  # all or nothing
    ok = client.post(BULK, json={"action": "add_tags", "image_ids": [a, b], "tags": ["x", "t0"]})
    assert ok.status_code == 200 and len(image(client, a)["tags"]) == 32


def test_bulk_delete_removes_rows_and_files_like_the_single_delete(
    api: TestClient, client: TestClient, services: Services
) -> None:
    a, b, c = make_images(services, prompt="three boats")
    other = create_user(services, "other@example.com")
    (theirs,) = make_images(services, other, n=1)
    cid = client.post("/api/v1/collections", json={"name": "boats"}).json()["id"]
    client.post(f"/api/v1/collections/{cid}/images", json={"image_ids": [a, b, c]})
    before = set(services.store.iter_keys())

    r = client.post(BULK, json={"action": "delete", "image_ids": [a, c, theirs, "nope"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"action": "delete", "done": [a, c], "not_found": [theirs, "nope"]}
    assert set(services.store.iter_keys()) == before  # in the Trash: files stay
    assert [i["id"] for i in client.get("/api/v1/images").json()["items"]] == [b]
    assert client.get("/api/v1/collections/" + cid).json()["image_count"] == 1
    r = client.post(BULK, json={"action": "purge", "image_ids": [a, c, theirs]})
    assert r.json() == {"action": "purge", "done": [a, c], "not_found": [theirs]}
    gone = before - set(services.store.iter_keys())
    assert len(gone) == 4  # the PNG and the one shared thumbnail (64x64 is under every size) of each image
    assert all(k.startswith(("images/", "thumbs/")) for k in gone)
    for deleted in (a, c):
        assert_error(client.get(f"/api/v1/images/{deleted}"), 404, "image_not_found")
    assert client.get(f"/api/v1/images/{b}/file").status_code == 200
    assert client.get(f"/api/v1/collections/{cid}").json()["image_count"] == 1
    assert api.get(f"/api/v1/images/{theirs}/file", headers=auth_headers(services, other)).status_code == 200

    again = client.post(BULK, json={"action": "delete", "image_ids": [a, b]})
    assert again.json() == {"action": "delete", "done": [b], "not_found": [a]}
    assert client.get("/api/v1/images").json()["items"] == []
    back = client.post(BULK, json={"action": "restore", "image_ids": [b, a]})
    assert back.json() == {"action": "restore", "done": [b], "not_found": [a]}
    assert [i["id"] for i in client.get("/api/v1/images").json()["items"]] == [b]


def test_bulk_delete_keeps_files_another_row_still_uses(client: TestClient, services: Services) -> None:
    """Identical pictures share their files (content-addressed): deleting some rows must not break the others."""
    from studiolo.domain.gallery.models import Image

    (a,) = make_images(services, n=1)
    with services.db.session() as session:
        row = session.get_one(Image, a)
        twin = Image(
            owner_id=row.owner_id,
            prompt=row.prompt,
            model_id=row.model_id,
            seed=row.seed,
            steps=row.steps,
            guidance=row.guidance,
            width=row.width,
            height=row.height,
            original_key=row.original_key,
            thumbnail_keys=dict(row.thumbnail_keys),
        )
        session.add(twin)
        session.flush()
        twin_id = twin.id
    before = set(services.store.iter_keys())
    assert client.post(BULK, json={"action": "purge", "image_ids": [a]}).json()["done"] == [a]
    assert set(services.store.iter_keys()) == before
    assert client.get(f"/api/v1/images/{twin_id}/file").status_code == 200
    assert client.post(BULK, json={"action": "purge", "image_ids": [twin_id]}).json()["done"] == [twin_id]
    assert not set(services.store.iter_keys("images/"))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"action": "explode", "image_ids": ["x"]}, "invalid_input"),
        ({"image_ids": ["x"]}, "invalid_input"),
        ({"action": "star", "image_ids": []}, "invalid_input"),
        ({"action": "star", "image_ids": ["x"] * 501}, "invalid_input"),
        ({"action": "star", "image_ids": [""]}, "invalid_input"),
        ({"action": "star", "image_ids": "x"}, "invalid_input"),
        ({"action": "star", "image_ids": ["x"], "extra": 1}, "invalid_input"),
        ({"action": "add_tags", "image_ids": ["x"], "tags": [""]}, "invalid_input"),
        ({"action": "add_tags", "image_ids": ["x"], "tags": ["t"] * 33}, "invalid_input"),
        # PostgreSQL text cannot hold NUL: refused up front rather than a 500 from the database.
        ({"action": "delete", "image_ids": ["x\u0000"]}, "invalid_input"),
        ({"action": "add_tags", "image_ids": ["x"], "tags": ["a\u0000b"]}, "invalid_input"),
        ({"action": "add_tags", "image_ids": ["x"]}, "tags_required"),
        ({"action": "remove_tags", "image_ids": ["x"], "tags": []}, "tags_required"),
        ({"action": "delete", "image_ids": ["x"], "tags": ["keep"]}, "tags_not_allowed"),
    ],
)
def test_bulk_validation(client: TestClient, body: dict[str, Any], code: str) -> None:
    assert_error(client.post(BULK, json=body), 422, code)


def test_bulk_needs_a_caller_allowed_to_change_things(api: TestClient, client: TestClient, services: Services) -> None:
    (a,) = make_images(services, n=1)
    assert_error(api.post(BULK, json={"action": "delete", "image_ids": [a]}), 401, "not_authenticated")
    key = client.post("/api/v1/api-keys", json={"name": "reader", "scopes": ["read"]}).json()["key"]
    r = api.post(BULK, json={"action": "delete", "image_ids": [a]}, headers={"Authorization": f"Bearer {key}"})
    assert_error(r, 403, "insufficient_scope")
    assert client.get(f"/api/v1/images/{a}").status_code == 200
