"""The gallery API: listing, filters, search, edits, files, deletion, regenerate, collections."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from studiolo.services import Services
from tests.helpers import create_user, drain

STRONG = "velvet-harbor-1937"

GEN = "/api/v1/generations"


def _generate(client: TestClient, services: Services, **body: object) -> list[str]:
    body.setdefault("prompt", "a lighthouse at dusk")
    body.setdefault("size", "64x64")
    body.setdefault("steps", 2)
    r = client.post(GEN, json=body)
    assert r.status_code == 202, r.text
    drain(services)
    job = client.get(r.json()["urls"]["get"]).json()
    assert job["status"] == "succeeded", job
    return [o["image_id"] for o in job["outputs"]]


def _pixels(client: TestClient, image_id: str) -> np.ndarray:
    data = client.get(f"/api/v1/images/{image_id}/file").content
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_list_filter_search_and_paginate(client: TestClient, services: Services) -> None:
    a = _generate(client, services, prompt="red fox in snow", style="watercolor", n=2, tags=["Animals", "winter"])
    b = _generate(client, services, prompt="neon city at night", style="cyberpunk")
    items = client.get("/api/v1/images").json()["items"]
    assert [i["id"] for i in items] == [*b, *reversed(a)]  # newest first
    first = items[-1]
    assert first["tags"] == ["animals", "winter"] and first["style"] == "watercolor" and first["model"] == "echo"
    assert set(first["urls"]["thumbnails"]) == {"150", "300", "800", "1920"}

    def ids(**params: object) -> set[str]:
        r = client.get("/api/v1/images", params=params)
        assert r.status_code == 200, r.text
        return {i["id"] for i in r.json()["items"]}

    assert ids(style="cyberpunk") == set(b)
    assert ids(model="echo") == set(a + b)
    assert ids(q="fox") == set(a)
    assert ids(q="FOX snow") == set(a)
    assert ids(q="anim") == set(a)  # prefix match, tags searched too
    assert ids(q='neon" OR fox') == set()  # FTS operators in user text are inert words, never a 500
    assert ids(q="cities") == set(b)  # stemmed alike: "cities" and "city" are both "citi"
    assert ids(q="citadel") == set()
    assert client.get("/api/v1/images", params={"q": "!!!"}).json()["error"]["code"] == "invalid_search"

    page1 = client.get("/api/v1/images", params={"limit": 2}).json()
    page2 = client.get("/api/v1/images", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    assert len(page1["items"]) == 2 and len(page2["items"]) == 1 and page2["next_cursor"] is None
    assert client.get("/api/v1/images", params={"limit": 0}).status_code == 422


def test_patch_star_tags_public(client: TestClient, services: Services) -> None:
    (image_id,) = _generate(client, services, prompt="a quiet harbour")
    r = client.patch(
        f"/api/v1/images/{image_id}", json={"starred": True, "tags": ["Boats", "boats", "sea"], "public": True}
    )
    assert r.status_code == 200
    assert (r.json()["starred"], r.json()["tags"], r.json()["public"]) == (True, ["boats", "sea"], True)
    assert {i["id"] for i in client.get("/api/v1/images", params={"starred": True}).json()["items"]} == {image_id}
    assert {i["id"] for i in client.get("/api/v1/images", params={"q": "boats"}).json()["items"]} == {image_id}
    assert client.patch(f"/api/v1/images/{image_id}", json={"tags": [""]}).status_code == 422
    assert client.patch(f"/api/v1/images/{image_id}", json={"bogus": 1}).status_code == 422


def test_files_sizes_cache_and_download(client: TestClient, services: Services) -> None:
    (image_id,) = _generate(client, services, size="512x256")
    for size, expect in [("150", (150, 75)), ("300", (300, 150)), ("800", (512, 256)), ("1920", (512, 256))]:
        r = client.get(f"/api/v1/images/{image_id}/file", params={"size": size})
        assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
        assert Image.open(io.BytesIO(r.content)).size == expect
    r = client.get(f"/api/v1/images/{image_id}/file")
    assert r.headers["cache-control"] == "private, no-cache" and r.headers["x-content-type-options"] == "nosniff"
    again = client.get(f"/api/v1/images/{image_id}/file", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    dl = client.get(f"/api/v1/images/{image_id}/file", params={"download": True})
    assert dl.headers["content-disposition"].startswith("attachment;")
    bad = client.get(f"/api/v1/images/{image_id}/file", params={"size": "999"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_size"


def test_regenerate_same_seed_reproduces_pixels(client: TestClient, services: Services) -> None:
    (image_id,) = _generate(client, services, prompt="a windmill", seed=42)
    r = client.post(f"/api/v1/images/{image_id}/regenerate", json={"seed": "same"})
    assert r.status_code == 202
    drain(services)
    job = client.get(r.json()["urls"]["get"]).json()
    (again,) = [o["image_id"] for o in job["outputs"]]
    assert again != image_id and job["seeds"] == [42]
    assert np.array_equal(_pixels(client, image_id), _pixels(client, again))

    r = client.post(f"/api/v1/images/{image_id}/regenerate", json={"seed": "new"})
    drain(services)
    new_job = client.get(r.json()["urls"]["get"]).json()
    assert new_job["seeds"] != [42]
    assert client.post(f"/api/v1/images/{image_id}/regenerate", json={"seed": "maybe"}).status_code == 422


def test_delete_removes_row_and_unshared_files(client: TestClient, services: Services) -> None:
    (keep,) = _generate(client, services, prompt="a windmill", seed=5)
    # Regenerating with the same seed makes identical pixels but a different PNG (its metadata names its job).
    (other,) = _generate(client, services, prompt="a windmill", seed=5)
    before = set(services.store.iter_keys())
    assert client.delete(f"/api/v1/images/{other}").status_code == 204  # to the Trash: every file stays
    assert set(services.store.iter_keys()) == before
    assert client.delete(f"/api/v1/images/{other}", params={"permanent": "true"}).status_code == 204
    after = set(services.store.iter_keys())
    assert len(before - after) == 2  # the PNG and one thumbnail: 64x64 is under every size, all four are one file
    assert client.get(f"/api/v1/images/{other}").status_code == 404
    assert client.get(f"/api/v1/images/{keep}/file").status_code == 200
    assert client.delete(f"/api/v1/images/{other}").status_code == 404


def test_collections_crud_and_membership(client: TestClient, services: Services) -> None:
    images = _generate(client, services, n=3)
    r = client.post("/api/v1/collections", json={"name": "  Favourites ", "description": "best"})
    assert r.status_code == 201
    cid = r.json()["id"]
    assert r.json()["name"] == "Favourites" and r.json()["image_count"] == 0
    r = client.post(f"/api/v1/collections/{cid}/images", json={"image_ids": images[:2] + images[:1]})
    assert r.status_code == 200 and r.json()["image_count"] == 2 and r.json()["cover_thumbnail_url"]
    again = client.post(f"/api/v1/collections/{cid}/images", json={"image_ids": images[:2]})
    assert again.json()["image_count"] == 2  # idempotent
    missing = client.post(f"/api/v1/collections/{cid}/images", json={"image_ids": ["nope"]})
    assert missing.status_code == 404 and missing.json()["error"]["details"]["image_ids"] == ["nope"]
    listed = {i["id"] for i in client.get("/api/v1/images", params={"collection": cid}).json()["items"]}
    assert listed == set(images[:2])
    assert client.delete(f"/api/v1/collections/{cid}/images/{images[0]}").status_code == 204
    assert client.delete(f"/api/v1/collections/{cid}/images/{images[0]}").status_code == 404
    assert client.patch(f"/api/v1/collections/{cid}", json={"name": "Best"}).json()["name"] == "Best"
    assert client.patch(f"/api/v1/collections/{cid}", json={"name": ""}).status_code == 422
    assert [c["id"] for c in client.get("/api/v1/collections").json()["items"]] == [cid]
    # A trashed image leaves the collection's count and listing; restored, it is back; purged, it is gone for good.
    client.delete(f"/api/v1/images/{images[1]}")
    assert client.get(f"/api/v1/collections/{cid}").json()["image_count"] == 0
    assert client.get("/api/v1/images", params={"collection": cid}).json()["items"] == []
    assert client.post(f"/api/v1/images/{images[1]}/restore").status_code == 200
    assert client.get(f"/api/v1/collections/{cid}").json()["image_count"] == 1
    client.delete(f"/api/v1/images/{images[1]}", params={"permanent": "true"})
    assert client.get(f"/api/v1/collections/{cid}").json()["image_count"] == 0
    # Deleting a collection keeps its images.
    assert client.delete(f"/api/v1/collections/{cid}").status_code == 204
    assert client.get(f"/api/v1/images/{images[2]}").status_code == 200
    assert client.get("/api/v1/images", params={"collection": cid}).status_code == 404


def test_regenerate_img2img_reuses_the_input_and_reports_a_lost_one(client: TestClient, services: Services) -> None:
    from tests.helpers import png_bytes

    files = {"init_image": ("in.png", png_bytes((64, 64)), "image/png")}
    r = client.post(GEN, data={"prompt": "repaint", "size": "64x64", "steps": "2", "seed": "3"}, files=files)
    drain(services)
    (image_id,) = [o["image_id"] for o in client.get(r.json()["urls"]["get"]).json()["outputs"]]
    again = client.post(f"/api/v1/images/{image_id}/regenerate", json={"seed": "same"})
    assert again.status_code == 202
    drain(services)
    job = client.get(again.json()["urls"]["get"]).json()
    assert (job["kind"], job["status"]) == ("img2img", "succeeded")
    assert np.array_equal(_pixels(client, image_id), _pixels(client, job["outputs"][0]["image_id"]))
    for key in list(services.store.iter_keys("inputs/")):
        services.store.delete(key)
    lost = client.post(f"/api/v1/images/{image_id}/regenerate", json={"seed": "same"})
    assert lost.status_code == 409 and lost.json()["error"]["code"] == "input_missing"


def test_image_files_are_revalidated_so_a_signed_out_browser_cannot_show_them(
    api: TestClient, client: TestClient, services: Services
) -> None:
    """Regression (issue 13, item 9): image files were ``private, max-age=31536000, immutable``, so after sign-out
    the browser's HTTP cache still showed them to whoever used the browser next. Now a cached copy is used only
    after asking the server (``no-cache`` + ETag: a 304 without a body while the credentials hold, a 401 after),
    and sign-out tells the browser to empty its cache."""
    create_user(services, "alice@example.com", password=STRONG)
    signed_in = api.post(
        "/api/v1/auth/login", json={"email": "alice@example.com", "password": STRONG, "use_cookies": True}
    )
    assert signed_in.status_code == 200
    csrf = {"X-CSRF-Token": api.cookies["studiolo_csrf"]}
    r = api.post(GEN, json={"prompt": "a private picture", "size": "64x64", "steps": 2}, headers=csrf)
    assert r.status_code == 202, r.text
    drain(services)
    (image_id,) = [o["image_id"] for o in api.get(r.json()["urls"]["get"]).json()["outputs"]]

    for size in ("original", "150", "800"):
        url = f"/api/v1/images/{image_id}/file?size={size}"
        first = api.get(url)
        assert first.status_code == 200
        assert first.headers["cache-control"] == "private, no-cache"  # never served from the cache unasked
        assert "max-age" not in first.headers["cache-control"] and "immutable" not in first.headers["cache-control"]
        assert first.headers["x-content-type-options"] == "nosniff"
        etag = first.headers["etag"]
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            revalidated = api.get(url, headers={"If-None-Match": header})
            assert revalidated.status_code == 304 and revalidated.content == b"", header
            assert revalidated.headers["etag"] == etag and revalidated.headers["cache-control"] == "private, no-cache"
        assert api.get(url, headers={"If-None-Match": '"other"'}).status_code == 200

    out = api.post("/api/v1/auth/logout", json={}, headers=csrf)
    assert out.status_code == 204
    assert out.headers["clear-site-data"] == '"cache"'
    assert "studiolo_access" not in api.cookies
    # What the browser sends to revalidate its copy after sign-out: refused, so the copy is never shown.
    gone = api.get(f"/api/v1/images/{image_id}/file", headers={"If-None-Match": etag})
    assert gone.status_code == 401, gone.text
    assert client.get(f"/api/v1/images/{image_id}/file").status_code == 404  # and nobody else's either


def test_deleting_the_account_also_clears_the_browser_cache(api: TestClient, services: Services) -> None:
    create_user(services, "bob@example.com", password=STRONG)
    token = api.post("/api/v1/auth/login", json={"email": "bob@example.com", "password": STRONG}).json()["access_token"]
    r = api.request(
        "DELETE", "/api/v1/auth/me", json={"password": STRONG}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 204 and r.headers["clear-site-data"] == '"cache"'
