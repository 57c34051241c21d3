"""The output check's review queue (issue 17), on SQLite and PostgreSQL, with the real open_nsfw classifier.

A threshold of 0 makes every output "flagged" whatever the classifier says (it scores 0..1), so these tests hold a
picture back without a picture that deserves it: the echo engine's outputs, the real model scoring them. Then: the
owner sees blurred thumbnails and no original, the administrator approves (original visible, thumbnails redrawn
unblurred), rejects (the owner sees the reason) or bans (the owner is suspended), each audited; "block" stores
nothing and a film whose scene image is blocked or held fails with a clear code instead of waiting for it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy import select

from studiolo.app import create_app
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_ID, AuditEvent, User
from studiolo.domain.billing.plans import PlanPatch
from studiolo.domain.film import pipeline
from studiolo.domain.gallery.models import Image
from studiolo.domain.generation.models import Job
from studiolo.services import Services, build_services
from tests.film_checks import make_film, run_until_done
from tests.helpers import auth_headers, create_user, drain, submit, wait_terminal


def assert_error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["error"]["code"] == code, r.text


@pytest.fixture
def held(settings_factory: Any) -> Iterator[Services]:
    """Services whose output check holds every image for review (threshold 0, policy blur)."""
    svc = build_services(settings_factory(nsfw_check=True, nsfw_threshold=0.0, nsfw_policy="blur"), upgrade_db=False)
    yield svc
    svc.close(timeout=10)


@pytest.fixture
def admin(held: Services) -> Iterator[TestClient]:
    """The install's local owner, an administrator."""
    with TestClient(create_app(services=held, start_workers=False)) as c:
        c.headers.update(auth_headers(held))
        yield c


def _user_client(services: Services, user_id: str) -> TestClient:
    c = TestClient(create_app(services=services, start_workers=False))
    c.headers.update(auth_headers(services, user_id))
    return c


def _make_images(services: Services, owner: str, count: int) -> list[str]:
    """``count`` held images of ``owner`` (one job each, so their ids are in the order they were made)."""
    job_ids = [submit(services, owner, prompt=f"a red lighthouse number {k}", seed=100 + k) for k in range(count)]
    drain(services)
    ids: list[str] = []
    for job_id in job_ids:
        view = wait_terminal(services, job_id, owner=owner)
        assert view.status == "succeeded", view
        ids.extend(o.image_id for o in view.outputs)
    return ids


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def test_a_held_image_is_private_until_an_administrator_approves_it(held: Services, admin: TestClient) -> None:
    bob = create_user(held, "bob@example.com")
    [image_id] = _make_images(held, bob, 1)
    with _user_client(held, bob) as owner:
        view = owner.get(f"/api/v1/images/{image_id}").json()
        assert view["review_state"] == "pending"
        assert 0.0 <= view["nsfw_score"] <= 1.0
        assert view["metadata"]["safety"]["nsfw_classifier"] == "open_nsfw"
        # The original (and its download) is refused; the thumbnails are served, blurred.
        assert_error(owner.get(f"/api/v1/images/{image_id}/file"), 403, "under_review")
        assert_error(owner.get(f"/api/v1/images/{image_id}/file?download=true"), 403, "under_review")
        assert_error(owner.post(f"/api/v1/images/{image_id}/upscale", json={"factor": 2}), 403, "under_review")
        blurred_thumb = owner.get(f"/api/v1/images/{image_id}/file?size=300")
        assert blurred_thumb.status_code == 200
        # Nor is the review API theirs.
        assert_error(owner.get("/api/v1/admin/reviews"), 403, "admin_required")
        assert_error(
            owner.post(f"/api/v1/admin/reviews/{image_id}", json={"decision": "approve"}), 403, "admin_required"
        )

        # The administrator sees it in the queue, with its owner, and may fetch the original to judge it.
        page = admin.get("/api/v1/admin/reviews").json()
        [item] = page["items"]
        assert item["image"]["id"] == image_id and item["owner_email"] == "bob@example.com"
        assert item["nsfw_score"] == view["nsfw_score"]
        original = admin.get(item["urls"]["original"])
        assert original.status_code == 200 and original.headers["content-type"] == "image/png"
        assert "no-store" in original.headers["cache-control"]
        sharp = _pixels(original.content)
        # The held thumbnail really is blurred: far from the original's pixels.
        assert np.abs(_pixels(blurred_thumb.content) - sharp).mean() > 3.0

        r = admin.post(f"/api/v1/admin/reviews/{image_id}", json={"decision": "approve", "reason": "a lighthouse"})
        assert r.status_code == 200, r.text
        assert r.json()["review_state"] == "approved"
        assert admin.get("/api/v1/admin/reviews").json()["items"] == []
        assert [i["image"]["id"] for i in admin.get("/api/v1/admin/reviews?state=approved").json()["items"]] == [
            image_id
        ]

        # Now the owner has the original, and thumbnails redrawn from it without the blur.
        r = owner.get(f"/api/v1/images/{image_id}/file")
        assert r.status_code == 200 and r.content == original.content
        thumb = owner.get(f"/api/v1/images/{image_id}/file?size=300").content
        assert np.abs(_pixels(thumb) - sharp).mean() < 3.0
        approved = owner.get(f"/api/v1/images/{image_id}").json()
        assert approved["review_state"] == "approved"
        # Same keys, new bytes: the thumbnails' URLs change, so no browser or service worker shows its blurred copy.
        assert approved["urls"]["thumbnails"]["300"] != view["urls"]["thumbnails"]["300"]
        assert owner.get(approved["urls"]["thumbnails"]["300"]).content == thumb
        assert "reason" not in approved["metadata"]["review"]  # an approval's note is the administrators' own

    with held.db.session() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "image_reviewed")).one()
        assert event.target_id == bob
        assert event.details["image_id"] == image_id
        assert event.details["decision"] == "approve" and event.details["previous"] == "pending"


def test_a_rejection_tells_the_owner_why_and_a_ban_suspends_them(held: Services, admin: TestClient) -> None:
    bob = create_user(held, "bob@example.com")
    first, second = _make_images(held, bob, 2)
    with _user_client(held, bob) as owner:
        r = admin.post(f"/api/v1/admin/reviews/{first}", json={"decision": "reject", "reason": "No nudity here."})
        assert r.status_code == 200 and r.json()["review_state"] == "rejected"
        view = owner.get(f"/api/v1/images/{first}").json()
        assert view["review_state"] == "rejected"
        assert view["metadata"]["review"]["reason"] == "No nudity here."
        assert_error(owner.get(f"/api/v1/images/{first}/file"), 403, "under_review")

        r = admin.post(f"/api/v1/admin/reviews/{second}", json={"decision": "ban", "reason": "Repeated abuse."})
        assert r.status_code == 200, r.text
        assert r.json()["review_state"] == "rejected" and r.json()["owner_status"] == "suspended"
        # The suspension ended their session at once, and they are told why.
        r = owner.get(f"/api/v1/images/{second}")
        assert_error(r, 403, "account_suspended")
        assert r.json()["error"]["details"]["reason"] == "Repeated abuse."

    with held.db.session() as session:
        assert session.get_one(User, bob).status == "suspended"
        actions = list(
            session.scalars(select(AuditEvent.action).where(AuditEvent.target_id == bob).order_by(AuditEvent.id))
        )
        assert actions == ["image_reviewed", "image_reviewed", "user_suspended"]
        assert {i.review_state for i in session.scalars(select(Image).where(Image.owner_id == bob))} == {"rejected"}


def test_the_queue_is_oldest_first_in_pages_and_refuses_what_it_cannot_do(held: Services, admin: TestClient) -> None:
    bob = create_user(held, "bob@example.com")
    ids = _make_images(held, bob, 3)
    page = admin.get("/api/v1/admin/reviews?limit=2").json()
    assert [i["image"]["id"] for i in page["items"]] == ids[:2]
    rest = admin.get(f"/api/v1/admin/reviews?limit=2&cursor={page['next_cursor']}").json()
    assert [i["image"]["id"] for i in rest["items"]] == ids[2:] and rest["next_cursor"] is None

    assert_error(admin.post("/api/v1/admin/reviews/nope", json={"decision": "approve"}), 404, "image_not_found")
    assert_error(admin.post(f"/api/v1/admin/reviews/{ids[0]}", json={"decision": "delete"}), 422, "invalid_input")
    too_long = {"decision": "reject", "reason": "x" * 501}
    assert_error(admin.post(f"/api/v1/admin/reviews/{ids[0]}", json=too_long), 422, "invalid_input")
    assert_error(admin.get("/api/v1/admin/reviews?state=lost"), 422, "invalid_input")
    assert_error(admin.get(f"/api/v1/admin/reviews/{ids[0]}/file?size=7"), 422, "invalid_size")
    # The administrator's own held image can be rejected, not banned: nobody suspends themselves.
    [own] = _make_images(held, LOCAL_USER_ID, 1)
    assert_error(admin.post(f"/api/v1/admin/reviews/{own}", json={"decision": "ban"}), 409, "cannot_suspend_self")
    # An image never held is not the review API's: neither a decision nor its file.
    with held.db.session() as session:
        session.get_one(Image, ids[2]).review_state = None
    assert_error(admin.post(f"/api/v1/admin/reviews/{ids[2]}", json={"decision": "reject"}), 409, "not_under_review")
    assert_error(admin.get(f"/api/v1/admin/reviews/{ids[2]}/file"), 404, "image_not_found")


def test_a_plan_can_block_what_the_check_flags(settings_factory: Any) -> None:
    """Billing on: the free plan blocks, so a flagged image is never stored and the job says how many were."""
    svc = build_services(
        settings_factory(nsfw_check=True, nsfw_threshold=0.0, nsfw_policy="allow", billing="quotas"), upgrade_db=False
    )
    try:
        plan = svc.billing.update_plan("free", PlanPatch(nsfw_policy="block"), actor_id=LOCAL_USER_ID, origin=Origin())
        assert plan.nsfw_policy == "block"
        assert svc.billing.get_plan("basic").nsfw_policy is None  # the install's policy
        bob = create_user(svc, "bob@example.com")
        job_id = submit(svc, bob)
        drain(svc)
        view = wait_terminal(svc, job_id, owner=bob)
        assert view.status == "succeeded" and view.outputs == []
        with svc.db.session() as session:
            assert session.get_one(Job, job_id).blocked_outputs == 1
            assert session.scalars(select(Image).where(Image.owner_id == bob)).all() == []
    finally:
        svc.close(timeout=10)


@pytest.mark.parametrize(("policy", "code"), [("block", "content_blocked"), ("blur", "content_under_review")])
def test_a_film_whose_scene_image_is_stopped_fails_with_a_clear_code(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch, policy: str, code: str
) -> None:
    monkeypatch.setattr(pipeline, "IMAGE_POLL_SECONDS", 0.05)
    svc = build_services(settings_factory(nsfw_check=True, nsfw_threshold=0.0, nsfw_policy=policy), upgrade_db=False)
    try:
        film_id = make_film(svc, script="The lighthouse keeper climbed the stairs at dusk.")
        accepted = svc.film.render(LOCAL_USER_ID, film_id)
        job = run_until_done(svc, accepted.job_id, timeout=60)
        assert job.status == "failed"
        assert job.error is not None and job.error.code == code, job
        film = svc.film.get(LOCAL_USER_ID, film_id)
        assert film.status == "failed" and film.error is not None and film.error.code == code
    finally:
        svc.close(timeout=10)
