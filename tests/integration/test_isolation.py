"""Per-user isolation: every route of the OpenAPI schema, called by a second user on the first user's
resources, answers 404 (never 403, never data); list routes never show the first user's rows."""

from __future__ import annotations

from fastapi.testclient import TestClient

from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.billing.models import Payment
from studiolo.domain.film.models import FilmPublication
from studiolo.services import Services
from tests.helpers import auth_headers, create_user, drain, png_bytes

BODIES: dict[str, object] = {
    "/api/v1/images/{image_id}": {"starred": True},
    "/api/v1/images/{image_id}/regenerate": {"seed": "same"},
    "/api/v1/images/{image_id}/upscale": {"factor": 2},
    "/api/v1/collections/{collection_id}": {"name": "mine now"},
    "/api/v1/collections/{collection_id}/images": {"image_ids": ["x"]},
    "/api/v1/films/{film_id}": {"title": "mine now"},
    "/api/v1/films/{film_id}/scenes": {"text": "Mine now."},
    "/api/v1/films/{film_id}/scenes/{scene_id}": {"text": "Mine now."},
    "/api/v1/films/{film_id}/scenes/reorder": {"scene_ids": ["x"]},
    "/api/v1/films/{film_id}/scenes/{scene_id}/split": {"sentence": 1},
    "/api/v1/films/{film_id}/youtube": {"privacy": "private"},
    "/api/v1/webhooks/endpoints/{endpoint_id}": {"enabled": False},
}
# Routes with a path parameter that names nobody's resource: the same answer for every user (a voice's sample).
NOBODYS = ("/api/v1/films/voices/{voice_id}/sample", "/v1/models/{model_id}")
# Routes whose permission is a signature, not the caller (issue 18's signed image links: tests/integration/
# test_signed_links.py refuses forged, foreign and expired ones alike).
SIGNED = ("/api/v1/links/images/{image_id}",)
# Routes that need a Google OAuth client, which this install has none of: 404 youtube_not_configured.
NOT_CONFIGURED = ("/api/v1/auth/google/youtube", "/api/v1/auth/oauth/google/youtube/callback")


def test_every_route_denies_another_users_resources(client: TestClient, services: Services) -> None:
    job = client.post("/api/v1/generations", json={"prompt": "private", "size": "64x64", "steps": 2}).json()
    drain(services)
    image_id = client.get(job["urls"]["get"]).json()["outputs"][0]["image_id"]
    collection_id = client.post("/api/v1/collections", json={"name": "secret"}).json()["id"]
    client.post(f"/api/v1/collections/{collection_id}/images", json={"image_ids": [image_id]})
    # A second picture in the owner's Trash: the intruder must not see, restore or purge it (the walk below calls
    # every route on image_id; this checks the Trash's own list and "Empty trash", which take no id).
    trash_job = client.post("/api/v1/generations", json={"prompt": "binned", "size": "64x64", "steps": 2}).json()
    drain(services)
    trashed_id = client.get(trash_job["urls"]["get"]).json()["outputs"][0]["image_id"]
    assert client.delete(f"/api/v1/images/{trashed_id}").status_code == 204
    client.post("/api/v1/styles", json={"slug": "house-style", "name": "House", "prompt_template": "{prompt}, teal"})
    key_id = client.post("/api/v1/api-keys", json={"name": "script"}).json()["id"]
    session_id = client.get("/api/v1/auth/sessions").json()[0]["id"]
    # Billing (issue 15): the owner's ledger and payments must not show in the intruder's /billing lists.
    entry_id = services.billing.adjust_credits(LOCAL_USER_ID, 5, reason="mine", actor_id=None, origin=Origin()).id
    with services.db.session() as session:
        payment = Payment(
            user_id=LOCAL_USER_ID, kind="credits", stripe_object_id="cs_owner", amount_cents=500, status="paid"
        )
        session.add(payment)
        session.flush()
        payment_id = payment.id
    assert (
        entry_id in client.get("/api/v1/billing/ledger").text
        and payment_id in client.get("/api/v1/billing/payments").text
    )
    # The film studio (issue 16): a film with a scene and a character, and a share link it no longer has.
    film = client.post("/api/v1/films", json={"title": "Secret film", "script": "A private story. It goes on."}).json()
    character = client.post(
        f"/api/v1/films/{film['id']}/characters",
        data={"name": "Ada"},
        files={"image": ("ada.png", png_bytes(), "image/png")},
    ).json()["characters"][0]
    old_link = client.patch(f"/api/v1/films/{film['id']}", json={"public": True}).json()["share_url"]
    client.patch(f"/api/v1/films/{film['id']}", json={"public": False})
    with services.db.session() as session:  # and its YouTube publication
        publication = FilmPublication(
            project_id=film["id"], owner_id=LOCAL_USER_ID, title="Secret film", media_key="films/x/film.mp4"
        )
        session.add(publication)
        session.flush()
        publication_id = publication.id
    # Photo to character (issue 17): a description and its photo.
    description = client.post(
        "/api/v1/describe", files={"photo": ("me.png", png_bytes(), "image/png")}, data={"template": "portrait"}
    ).json()
    # Webhooks (issue 18): an endpoint and a message in its delivery log.
    endpoint = client.post("/api/v1/webhooks/endpoints", json={"url": "https://hooks.example.com/studiolo"}).json()
    message = client.post(f"/api/v1/webhooks/endpoints/{endpoint['id']}/test").json()
    owned = {
        "endpoint_id": endpoint["id"],
        "message_id": message["id"],
        "description_id": description["id"],
        "film_id": film["id"],
        "publication_id": publication_id,
        "scene_id": film["scenes"][0]["id"],
        "character_id": character["id"],
        "name": "film.mp4",
        "token": old_link.rsplit("/", 1)[-1],
        "ledger_entry_id": entry_id,  # named by no path: only looked for in the lists
        "payment_id": payment_id,
        "job_id": job["id"],
        "image_id": image_id,
        "collection_id": collection_id,
        "slug": "house-style",
        "key_id": key_id,
        "session_id": session_id,
        "user_id": LOCAL_USER_ID,
        "provider": "google",  # public sign-in routes: not configured here, so 404 oauth_provider_not_found
    }

    # The intruder is a real, signed-in second account (a real session, a real Bearer token).
    owner_headers = dict(client.headers)
    intruder = create_user(services, "intruder@example.test")
    client.headers.update(auth_headers(services, intruder))

    schema = client.get("/openapi.json").json()
    checked = 0
    for path, ops in schema["paths"].items():
        for method in ops:
            if path in NOBODYS or path in SIGNED:
                continue
            if "{" in path:
                url = path
                for name, value in owned.items():
                    url = url.replace("{" + name + "}", value)
                if "{" in url:  # a path parameter that names no owned resource (e.g. a nested image id)
                    url = url.replace("{image_id}", image_id)
                assert "{" not in url, f"no test value for a parameter of {path}"
                r = client.request(method, url, json=BODIES.get(path))
                if path.startswith("/api/v1/admin/"):  # not theirs to administer: refused by role
                    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required", (path, r.text)
                else:
                    assert r.status_code == 404, (method, path, r.status_code, r.text)
                    assert r.json()["error"]["code"].endswith("not_found")
            else:
                if method != "get":
                    continue
                r = client.get(path)
                if path.startswith("/api/v1/admin/"):
                    assert r.status_code == 403, (path, r.status_code)
                    continue
                if path in NOT_CONFIGURED:
                    assert r.status_code == 404 and r.json()["error"]["code"] == "youtube_not_configured"
                    continue
                assert r.status_code in (200, 503), (path, r.status_code)
                for value in owned.values():
                    if value != "house-style" or path != "/api/v1/styles":
                        assert value not in r.text, (path, value)
                if path == "/api/v1/styles":
                    assert "house-style" not in r.text
            checked += 1
    assert checked >= 20
    assert trashed_id not in client.get("/api/v1/images", params={"trash": "true"}).text
    assert client.post("/api/v1/images/trash/empty").json() == {"purged": 0}

    # And the owner still has everything.
    assert client.get("/api/v1/auth/me").json()["id"] == intruder
    client.headers.update(owner_headers)
    assert client.get("/api/v1/auth/me").json()["id"] == LOCAL_USER_ID
    assert [k["id"] for k in client.get("/api/v1/api-keys").json()] == [key_id]
    assert client.get(f"/api/v1/images/{image_id}").status_code == 200
    assert [i["id"] for i in client.get("/api/v1/images", params={"trash": "true"}).json()["items"]] == [trashed_id]
    assert client.get(f"/api/v1/collections/{collection_id}").json()["image_count"] == 1
    assert client.get(job["urls"]["get"]).json()["status"] == "succeeded"
    mine = client.get(f"/api/v1/films/{film['id']}").json()
    assert (mine["title"], mine["deleted_at"], len(mine["characters"])) == ("Secret film", None, 1)
    assert client.get(f"/api/v1/describe/{description['id']}/photo").status_code == 200
    assert client.get(f"/api/v1/webhooks/endpoints/{endpoint['id']}").json()["enabled"] is True
