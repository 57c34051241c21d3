"""Prompt moderation through the API (issue 17): a refused prompt is 422 content_rejected naming its category and
field, never the matched word, and nothing is queued or charged — for /generations, batches, styles, upscales and the
hosted /moderations check (a local server), whose outage lets prompts through or refuses them (fail closed)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.film import pipeline
from studiolo.domain.film.schemas import ScenePatch
from studiolo.services import Services
from tests.film_checks import make_film, run_until_done
from tests.helpers import app_with, auth_headers, drain, job_count
from tests.moderation_server import ModerationServer

GENERATE = "/api/v1/generations"
BLOCKED = "grawlix"


def _body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "size": "64x64", "steps": 2, **extra}


@pytest.fixture
def blocklist(tmp_path: Path) -> Path:
    path = tmp_path / "blocklist.txt"
    path.write_text(f"# this install's words\n{BLOCKED}\n/zap\\d+/i\n", encoding="utf-8")
    return path


@pytest.fixture
def moderated(settings_factory: Any, blocklist: Path) -> Iterator[tuple[Services, TestClient]]:
    with app_with(settings_factory, moderation_blocklist_file=blocklist) as (services, client):
        client.headers.update(auth_headers(services))
        yield services, client


def _refused(response: Any, category: str, field: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "content_rejected"
    assert error["details"]["category"] == category and error["details"]["field"] == field
    assert BLOCKED not in response.text.lower()  # the matched word is never echoed
    return error


def test_a_blocked_prompt_or_negative_prompt_is_refused_and_nothing_is_queued(
    moderated: tuple[Services, TestClient],
) -> None:
    services, client = moderated
    _refused(client.post(GENERATE, json=_body("a Gr4wl1x at dusk")), "blocklist", "prompt")
    _refused(
        client.post(GENERATE, json=_body("a fox", negative_prompt="ZAP42, blurry")), "blocklist", "negative_prompt"
    )
    # A style the user wrote is text they wrote too: the prompt is checked as the model would receive it.
    assert (
        client.post(
            "/api/v1/styles", json={"slug": "mine", "name": "Mine", "prompt_template": f"{{prompt}}, {BLOCKED}"}
        ).status_code
        == 201
    )
    _refused(client.post(GENERATE, json=_body("a fox", style="mine")), "blocklist", "prompt")
    # A batch is all or none, and the refused item names itself.
    batch = {"generations": [_body("a fox"), _body(f"a {BLOCKED}")]}
    error = _refused(client.post(f"{GENERATE}/batch", json=batch), "blocklist", "prompt")
    assert error["details"]["index"] == 1
    assert job_count(services) == 0
    assert client.post(GENERATE, json=_body("a fox in the snow")).status_code == 202


def test_an_upscale_carries_its_sources_prompt_and_is_checked_like_a_new_request(
    moderated: tuple[Services, TestClient], blocklist: Path
) -> None:
    services, client = moderated
    job = client.post(GENERATE, json=_body("a zorp in the garden")).json()
    drain(services)
    image_id = client.get(job["urls"]["get"]).json()["outputs"][0]["image_id"]
    blocklist.write_text("zorp\n", encoding="utf-8")  # the administrator adds a word: no restart
    os.utime(blocklist, ns=(10**9, 10**9))
    _refused(client.post(f"/api/v1/images/{image_id}/upscale", json={"factor": 2}), "blocklist", "prompt")
    assert job_count(services) == 1


def test_the_packaged_profanity_model_refuses_abuse_once_turned_on(client: TestClient, settings_factory: Any) -> None:
    # Off by default (it would refuse "a stupid dog"): the same prompt is accepted ...
    assert client.post(GENERATE, json=_body("fuck you all")).status_code == 202
    with app_with(settings_factory, moderation_profanity_threshold=0.9) as (services, on):
        on.headers.update(auth_headers(services))
        before = job_count(services)
        _refused(on.post(GENERATE, json=_body("fuck you all")), "profanity", "prompt")  # ... and refused when on
        assert job_count(services) == before


def test_the_hosted_check_refuses_flagged_prompts_and_counts_refusals(settings_factory: Any) -> None:
    with ModerationServer(api_key="sk-mod") as server:
        overrides = {"moderation_api_base": f"{server.url}/v1", "moderation_api_key": "sk-mod"}
        with app_with(settings_factory, **overrides) as (services, client):
            client.headers.update(auth_headers(services))
            error = _refused(client.post(GENERATE, json=_body("a massacre at the gates")), "violence", "prompt")
            assert "moderation service" in error["message"]
            # Negative prompts name what to steer away from: the category check does not read them.
            assert client.post(GENERATE, json=_body("a castle", negative_prompt="explicit, gore")).status_code == 202
            assert [r["json"]["input"] for r in server.requests] == ["a massacre at the gates", "a castle"]
            metrics = client.get("/metrics", headers={"Authorization": ""}).text
            assert 'studiolo_prompts_rejected_total{category="violence",field="prompt"} 1.0' in metrics
            server.mode = "error"  # fail open by default: the prompt goes through, the failure is counted
            assert client.post(GENERATE, json=_body("a tower")).status_code == 202
            metrics = client.get("/metrics", headers={"Authorization": ""}).text
            assert 'studiolo_moderation_api_failures_total{reason="http_5xx"} 1.0' in metrics
        with app_with(settings_factory, moderation_api_fail_closed=True, **overrides) as (services, client):
            client.headers.update(auth_headers(services))
            response = client.post(GENERATE, json=_body("a lighthouse"))
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "moderation_unavailable"
            assert job_count(services) == 2  # the two accepted above, none from this refusal


def test_a_films_script_and_scene_text_are_checked_when_written_and_its_prompts_when_drawn(
    moderated: tuple[Services, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    services, client = moderated
    monkeypatch.setattr(pipeline, "IMAGE_POLL_SECONDS", 0.05)
    body = {"title": "Keeper", "script": f"The keeper climbed the stairs.\n\nA {BLOCKED} on the wall.", "music": "none"}
    _refused(client.post("/api/v1/films", json=body), "blocklist", "script")  # narrated as written
    film_id = make_film(services, script="The keeper climbed the stairs at dusk.\n\nThe lamp room was cold.")
    _refused(client.patch(f"/api/v1/films/{film_id}", json={"script": f"A {BLOCKED}."}), "blocklist", "script")
    _refused(client.post(f"/api/v1/films/{film_id}/scenes", json={"text": f"Then a {BLOCKED}."}), "blocklist", "text")
    # A scene's image prompt is checked when its image is asked for: the render fails with the code.
    scene = services.film.get(LOCAL_USER_ID, film_id).scenes[1]
    services.film.update_scene(LOCAL_USER_ID, film_id, scene.id, ScenePatch(prompt=f"a {BLOCKED} on the wall"))
    job = run_until_done(services, services.film.render(LOCAL_USER_ID, film_id).job_id)
    assert job.status == "failed" and job.error is not None
    assert job.error.code == "content_rejected"
    assert "scene 2" in job.error.message and BLOCKED not in job.error.message.lower()
