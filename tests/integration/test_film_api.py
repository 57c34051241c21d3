# ruff: noqa: RUF001 -- request/expectation pairs read best on one line
"""The film studio's API (/api/v1/films): projects and their storyboard, scene edits, characters, quotes, render
requests through the billing gate, cancel, the Trash, share links, files with Range requests, and bad input.
The render itself (the worker's pipeline) is tested with the pipeline."""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from studiolo.db.base import utcnow
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.billing import cost
from studiolo.domain.film.models import FILM_MODEL_ID, FilmProject
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.services import Services
from tests.helpers import app_with, auth_headers, create_user, drain, png_bytes

FILMS = "/api/v1/films"
SCRIPT = (
    "The lighthouse keeper woke before dawn. He climbed the spiral stairs with a lamp in his hand.\n\n"
    "Outside, the storm had passed. The sea was calm and grey, and gulls circled the rocks below.\n\n"
    "Dr. Ada Reyes arrived by boat at 7.30 in the morning. She carried a small wooden box."
)


@pytest.fixture
def films(client: TestClient) -> TestClient:
    """The signed-in client; the voices are the real speech catalog's (espeak-ng)."""
    return client


def error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body: dict[str, Any] = r.json()["error"]
    assert body["code"] == code, body
    return body


def create(client: TestClient, **fields: Any) -> dict[str, Any]:
    r = client.post(FILMS, json={"title": "Keeper", "script": SCRIPT, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def bomb_png(side: int = 20000) -> bytes:
    """A PNG whose header declares side x side pixels (its data is one pixel): refused before decoding."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    raw[16:24] = side.to_bytes(4, "big") + side.to_bytes(4, "big")
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")
    return bytes(raw)


def test_voices_options_and_a_voice_sample(films: TestClient, services: Services) -> None:
    voices = films.get(f"{FILMS}/voices").json()
    ids = [v["id"] for v in voices["voices"]]
    assert voices["default"] in ids
    assert all({"name", "language", "gender", "age", "engine", "quality"} <= v.keys() for v in voices["voices"])
    options = films.get(f"{FILMS}/options").json()
    assert "calm" in options["moods"] and options["aspects"] == ["16:9", "9:16", "1:1"]
    assert options["resolutions"] == ["720p", "1080p"] and "cinematic" in options["styles"]
    assert options["max_words"] == 500 and options["target_seconds"] == {"min": 60, "max": 300}

    r = films.get(f"{FILMS}/voices/{voices['default']}/sample", params={"text": "Hello there."})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert r.content[:4] == b"RIFF" and r.content[8:12] == b"WAVE" and len(r.content) > 1000
    cached = list(services.store.iter_keys("films/voice-samples/"))
    assert len(cached) == 1 and services.store.get(cached[0]) == r.content
    assert films.get(f"{FILMS}/voices/{voices['default']}/sample", params={"text": "Hello there."}).content == r.content
    error(films.get(f"{FILMS}/voices/nobody:xx/sample"), 422, "unknown_voice")
    error(
        films.get(f"{FILMS}/voices/{voices['default']}/sample", params={"text": "東京へ行った。"}),
        422,
        "unsupported_language",
    )


def test_create_splits_the_storyboard_and_reads_back(films: TestClient) -> None:
    film = create(films, target_seconds=60, aspect="9:16", music="dramatic", seed=42, style="cinematic")
    assert film["status"] == "draft" and film["render"] is None and film["outputs"] is None
    assert (film["width"], film["height"]) == (720, 1280)
    assert film["voice"] == films.get(f"{FILMS}/voices").json()["default"]
    scenes = film["scenes"]
    assert 2 <= len(scenes) <= 10
    assert [s["position"] for s in scenes] == list(range(len(scenes)))
    # every sentence is in exactly one scene, in order; "Dr." and "7.30" did not end a sentence
    assert " ".join(s["text"] for s in scenes) == " ".join(SCRIPT.split())
    assert any("Dr. Ada Reyes arrived by boat at 7.30 in the morning." in s["text"] for s in scenes)
    assert all(s["image_state"] == "none" and s["image_url"] is None for s in scenes)
    assert [s["seed"] for s in scenes] == [(42 + 1 + i) % 2**32 for i in range(len(scenes))]
    assert film["words"] == len(SCRIPT.split()) and film["max_words"] == 500
    assert film["planned_seconds"] == pytest.approx(sum(s["planned_seconds"] for s in scenes), abs=0.05)
    collection = films.get(f"/api/v1/collections/{film['collection_id']}").json()
    assert collection["name"] == "Film: Keeper"

    assert films.get(f"{FILMS}/{film['id']}").json() == film
    page = films.get(FILMS).json()
    assert [f["id"] for f in page["items"]] == [film["id"]] and page["next_cursor"] is None
    assert page["items"][0]["scene_count"] == len(scenes) and page["items"][0]["status"] == "draft"

    patched = films.patch(f"{FILMS}/{film['id']}", json={"title": "The Keeper", "speed": 1.5, "music": "none"}).json()
    assert (patched["title"], patched["speed"], patched["music"]) == ("The Keeper", 1.5, "none")
    # no resplit asked: the storyboard stays, its estimates following the faster narration
    assert [(s["id"], s["text"]) for s in patched["scenes"]] == [(s["id"], s["text"]) for s in scenes]
    for now, before in zip(patched["scenes"], scenes, strict=True):
        assert now["planned_seconds"] == pytest.approx(max(1.0, before["planned_seconds"] / 1.5), abs=0.02)
    assert films.get(f"/api/v1/collections/{film['collection_id']}").json()["name"] == "Film: The Keeper"
    resplit = films.patch(f"{FILMS}/{film['id']}", json={"script": "One line only.", "resplit": True}).json()
    assert [s["text"] for s in resplit["scenes"]] == ["One line only."]
    error(films.patch(f"{FILMS}/{film['id']}", json={"music": "polka"}), 422, "unknown_music")
    error(films.patch(f"{FILMS}/{film['id']}", json={"aspect": "4:3"}), 422, "invalid_input")
    second = create(films, title="Second")
    page1 = films.get(FILMS, params={"limit": 1}).json()
    assert [f["id"] for f in page1["items"]] == [second["id"]]
    page2 = films.get(FILMS, params={"limit": 1, "cursor": page1["next_cursor"]}).json()
    assert [f["id"] for f in page2["items"]] == [film["id"]] and page2["next_cursor"] is None


def test_podcast_lines_become_scenes_per_speaker(films: TestClient) -> None:
    default = films.get(f"{FILMS}/voices").json()["default"]
    script = "ALICE: Welcome to the show.\nBOB: Thanks for having me.\nIt is good to be here.\nALICE: Let us start."
    film = create(films, script=script, podcast=True, speaker_voices={"ALICE": default, "BOB": default})
    assert [s["text"] for s in film["scenes"]] == [
        "ALICE: Welcome to the show.",
        "BOB: Thanks for having me. It is good to be here.",
        "ALICE: Let us start.",
    ]
    assert film["scenes"][1]["prompt"] == "Thanks for having me. It is good to be here."
    bad = films.post(FILMS, json={"title": "x", "script": script, "podcast": True, "speaker_voices": {"BOB": "no:pe"}})
    error(bad, 422, "unknown_voice")


def test_scene_operations(films: TestClient) -> None:
    film = create(films, script="One. Two. Three.", target_seconds=60)
    base = f"{FILMS}/{film['id']}/scenes"
    assert [s["text"] for s in film["scenes"]] == ["One. Two. Three."]
    first = film["scenes"][0]["id"]

    split = films.post(f"{base}/{first}/split", json={"sentence": 1})
    assert split.status_code == 200, split.text
    assert [s["text"] for s in split.json()["scenes"]] == ["One.", "Two. Three."]
    second = split.json()["scenes"][1]["id"]
    error(films.post(f"{base}/{second}/split", json={"sentence": 2}), 422, "invalid_split")
    error(films.post(f"{base}/{second}/split", json={"sentence": 0}), 422, "invalid_input")

    added = films.post(base, json={"after": first, "text": "Inserted here.", "prompt": "a red door"})
    assert added.status_code == 201, added.text
    scenes = added.json()["scenes"]
    assert [s["text"] for s in scenes] == ["One.", "Inserted here.", "Two. Three."]
    assert scenes[1]["prompt"] == "a red door" and scenes[1]["planned_seconds"] >= 1
    top = films.post(base, json={"after": None, "text": "Opening."}).json()["scenes"]
    assert [s["text"] for s in top] == ["Opening.", "One.", "Inserted here.", "Two. Three."]
    assert top[0]["prompt"] == "Opening."
    error(films.post(base, json={"after": "nope", "text": "x"}), 404, "scene_not_found")
    error(films.post(base, json={"text": "..."}), 422, "empty_script")

    inserted = scenes[1]["id"]
    edited = films.patch(f"{base}/{inserted}", json={"text": "Edited words here.", "seed": 5}).json()
    scene = next(s for s in edited["scenes"] if s["id"] == inserted)
    assert (scene["text"], scene["seed"], scene["prompt"]) == ("Edited words here.", 5, "a red door")

    ids = [s["id"] for s in edited["scenes"]]
    reordered = films.post(f"{base}/reorder", json={"scene_ids": ids[::-1]}).json()
    assert [s["id"] for s in reordered["scenes"]] == ids[::-1]
    assert [s["position"] for s in reordered["scenes"]] == [0, 1, 2, 3]
    error(films.post(f"{base}/reorder", json={"scene_ids": ids[:2]}), 422, "invalid_scene_order")
    error(films.post(f"{base}/reorder", json={"scene_ids": [ids[0]] * 4}), 422, "invalid_scene_order")

    order = [s["id"] for s in reordered["scenes"]]
    merged = films.post(f"{base}/{order[0]}/merge").json()
    assert merged["scenes"][0]["text"] == "Two. Three. Edited words here."
    error(films.post(f"{base}/{order[-1]}/merge"), 409, "no_next_scene")

    for s in merged["scenes"][1:]:
        assert films.delete(f"{base}/{s['id']}").status_code == 200
    last = films.get(f"{FILMS}/{film['id']}").json()["scenes"]
    assert len(last) == 1
    error(films.delete(f"{base}/{last[0]['id']}"), 409, "last_scene")
    error(films.patch(f"{base}/missing", json={"text": "x"}), 404, "scene_not_found")


def test_regenerate_a_scene_makes_its_image_in_the_gallery(films: TestClient, services: Services) -> None:
    film = create(films, script="A lighthouse at dusk. Waves on the rocks.", aspect="1:1")
    scene = film["scenes"][0]
    r = films.post(f"{FILMS}/{film['id']}/scenes/{scene['id']}/regenerate", json={"seed": 7})
    assert r.status_code == 202, r.text
    queued = r.json()["scenes"][0]
    assert queued["image_state"] == "queued" and queued["seed"] == 7 and queued["image_job_id"]
    job = films.get(f"/api/v1/jobs/{queued['image_job_id']}").json()
    assert (job["kind"], job["params"]["prompt"], job["seeds"]) == ("txt2img", scene["prompt"], [7])
    assert job["params"]["tags"] == ["film"] and job["params"]["width"] == job["params"]["height"]
    assert films.get(f"{FILMS}/{film['id']}/quote").json()["images"]["count"] == 0  # queued: already paid for

    drain(services)
    ready = films.get(f"{FILMS}/{film['id']}").json()["scenes"][0]
    assert ready["image_state"] == "ready" and ready["image_id"]
    assert films.get(ready["image_url"]).status_code == 200

    stale = films.patch(f"{FILMS}/{film['id']}/scenes/{scene['id']}", json={"prompt": "a lighthouse at noon"}).json()
    assert stale["scenes"][0]["image_state"] == "stale"
    assert films.get(f"{FILMS}/{film['id']}/quote").json()["images"]["count"] == 1
    again = films.post(f"{FILMS}/{film['id']}/scenes/{scene['id']}/regenerate", json={"seed": None}).json()
    assert again["scenes"][0]["image_state"] == "queued" and again["scenes"][0]["image_job_id"] != ready["image_job_id"]


def test_characters(films: TestClient, services: Services) -> None:
    film = create(films, script="Ada walks to the shore. The sea is calm.")
    url = f"{FILMS}/{film['id']}/characters"
    r = films.post(url, data={"name": "Ada"}, files={"image": ("ada.png", png_bytes((64, 96)), "image/png")})
    assert r.status_code == 201, r.text
    (character,) = r.json()["characters"]
    assert character["name"] == "Ada"
    image = films.get(character["image_url"])
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size == (64, 96)

    # The scene that names Ada starts from her picture (img2img).
    scene = r.json()["scenes"][0]
    assert "Ada" in scene["text"]
    regen = films.post(f"{FILMS}/{film['id']}/scenes/{scene['id']}/regenerate", json={"seed": 1}).json()
    job = films.get(f"/api/v1/jobs/{regen['scenes'][0]['image_job_id']}").json()
    assert job["kind"] == "img2img"

    error(
        films.post(url, data={"name": "ada"}, files={"image": ("a.png", png_bytes(), "image/png")}),
        409,
        "character_exists",
    )
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'></svg>"
    error(
        films.post(url, data={"name": "Bo"}, files={"image": ("b.svg", svg, "image/svg+xml")}),
        415,
        "unsupported_media_type",
    )
    error(
        films.post(url, data={"name": "Bo"}, files={"image": ("b.png", bomb_png(), "image/png")}),
        413,
        "image_too_large",
    )
    error(
        films.post(url, data={"name": "Bo"}, files={"image": ("b.png", png_bytes()[:-30], "image/png")}),
        422,
        "image_corrupt",
    )
    error(
        films.post(url, data={"name": " "}, files={"image": ("b.png", png_bytes(), "image/png")}), 422, "invalid_name"
    )
    error(films.post(url, json={"name": "Bo"}), 415, "unsupported_content_type")

    after = films.delete(f"{url}/{character['id']}").json()
    assert after["characters"] == []
    error(films.delete(f"{url}/{character['id']}"), 404, "character_not_found")
    # the scene's image now comes from its prompt alone: the queued img2img job no longer makes the image it needs
    assert after["scenes"][0]["image_state"] == "none"
    assert films.get(f"{FILMS}/{film['id']}/quote").json()["images"]["count"] == len(after["scenes"])


def test_quote_and_render_request(films: TestClient, services: Services) -> None:
    film = create(films, seed=9)
    n = len(film["scenes"])
    quote = films.get(f"{FILMS}/{film['id']}/quote").json()
    probe = GenerationParams(prompt="x", aspect_ratio="16:9")
    job_params, _, _ = services.generation.prepare(LOCAL_USER_ID, probe, "txt2img")
    each = cost.image_credits(job_params["width"], job_params["height"], job_params["steps"])
    assert quote["images"] == {"count": n, "credits": n * each}
    assert quote["video"]["seconds"] == pytest.approx(film["planned_seconds"], abs=0.05)
    assert quote["video"]["credits"] == cost.film_credits(quote["video"]["seconds"], 6)
    assert quote["credits"] == quote["images"]["credits"] + quote["video"]["credits"]

    r = films.post(f"{FILMS}/{film['id']}/render", headers={"Idempotency-Key": "render-1"})
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["film_id"] == film["id"] and accepted["quote"] == quote
    assert accepted["events_url"] == f"/api/v1/jobs/{accepted['job_id']}/events"
    with services.db.session() as session:
        job = session.get_one(Job, accepted["job_id"])
        assert (job.kind, job.model_id, job.status, job.seeds) == ("film", FILM_MODEL_ID, "queued", [9])
        assert job.params["film_id"] == film["id"] and job.params["credits"] == quote["video"]["credits"]
        assert job.params["prompt"] == "Film: Keeper" and (job.params["width"], job.params["height"]) == (1280, 720)
    replay = films.post(f"{FILMS}/{film['id']}/render", headers={"Idempotency-Key": "render-1"})
    assert replay.status_code == 202 and replay.json()["job_id"] == accepted["job_id"]
    error(films.post(f"{FILMS}/{film['id']}/render"), 409, "film_rendering")
    rendering = films.get(f"{FILMS}/{film['id']}").json()
    assert rendering["status"] == "rendering" and rendering["render"]["job_id"] == accepted["job_id"]

    canceled = films.post(f"{FILMS}/{film['id']}/cancel").json()
    assert canceled["status"] == "canceled"
    assert films.get(f"/api/v1/jobs/{accepted['job_id']}").json()["status"] == "canceled"
    again = films.post(f"{FILMS}/{film['id']}/render")
    assert again.status_code == 202 and again.json()["job_id"] != accepted["job_id"]


def test_render_is_charged_and_plan_gated(settings_factory: Callable[..., Any]) -> None:
    with app_with(settings_factory, billing="quotas") as (services, client):
        admin = auth_headers(services, create_user(services, "boss@example.com", role="admin"))
        free = auth_headers(services, create_user(services, "free@example.com"))
        payer_id = create_user(services, "basic@example.com")
        payer = auth_headers(services, payer_id)
        assert (
            client.put(f"/api/v1/admin/users/{payer_id}/plan", json={"plan": "basic"}, headers=admin).status_code == 200
        )

        film = client.post(FILMS, json={"title": "Free", "script": SCRIPT}, headers=free).json()
        body = error(client.post(f"{FILMS}/{film['id']}/render", headers=free), 403, "plan_forbids")
        assert body["details"]["field"] == "kind"
        assert client.get(f"{FILMS}/{film['id']}", headers=free).json()["status"] == "draft"

        film = client.post(FILMS, json={"title": "Paid", "script": SCRIPT}, headers=payer).json()
        before = client.get("/api/v1/billing", headers=payer).json()
        r = client.post(f"{FILMS}/{film['id']}/render", headers=payer)
        assert r.status_code == 202, r.text
        credits = r.json()["quote"]["video"]["credits"]
        held = client.get("/api/v1/billing", headers=payer).json()
        assert held["held"] - before["held"] == credits
        client.post(f"{FILMS}/{film['id']}/cancel", headers=payer)
        released = client.get("/api/v1/billing", headers=payer).json()
        assert released["held"] == before["held"]
        assert released["balance"] == before["balance"]


def test_trash_restore_and_purge(films: TestClient, services: Services) -> None:
    film = create(films)
    fid = film["id"]
    services.store.put(f"films/{LOCAL_USER_ID}/{fid}/cache/narration.wav", b"RIFF....", "audio/wav")
    error(films.delete(f"{FILMS}/{fid}/purge"), 409, "film_not_in_trash")
    assert films.delete(f"{FILMS}/{fid}").status_code == 204
    assert films.get(FILMS).json()["items"] == []
    trashed = films.get(FILMS, params={"trashed": True}).json()["items"]
    assert [f["id"] for f in trashed] == [fid] and trashed[0]["deleted_at"]
    error(films.post(f"{FILMS}/{fid}/render"), 409, "film_in_trash")
    restored = films.post(f"{FILMS}/{fid}/restore").json()
    assert restored["deleted_at"] is None and [f["id"] for f in films.get(FILMS).json()["items"]] == [fid]
    assert films.delete(f"{FILMS}/{fid}").status_code == 204
    assert films.delete(f"{FILMS}/{fid}/purge").status_code == 204
    error(films.get(f"{FILMS}/{fid}"), 404, "film_not_found")
    assert list(services.store.iter_keys(f"films/{LOCAL_USER_ID}/{fid}/")) == []
    assert films.get(f"/api/v1/collections/{film['collection_id']}").status_code == 200  # the gallery keeps its own


def _rendered(services: Services, film_id: str, video: bytes) -> None:
    """What the pipeline leaves after a render: the files in the store and their keys on the project."""
    prefix = f"films/{LOCAL_USER_ID}/{film_id}"
    services.store.put(f"{prefix}/film.mp4", video, "video/mp4")
    services.store.put(f"{prefix}/film.srt", b"1\n00:00:00,000 --> 00:00:01,000\nHello\n", "application/x-subrip")
    services.store.put(f"{prefix}/thumbnail.jpg", b"\xff\xd8\xff\xe0jpeg", "image/jpeg")
    with services.db.session() as session:
        project = session.get_one(FilmProject, film_id)
        project.outputs = {
            "mp4": f"{prefix}/film.mp4",
            "srt": f"{prefix}/film.srt",
            "thumb": f"{prefix}/thumbnail.jpg",
            "duration": 12.5,
            "width": 1280,
            "height": 720,
            "bytes": len(video),
        }


def test_files_answer_range_requests_and_share_links(films: TestClient, api: TestClient, services: Services) -> None:
    film = create(films)
    fid = film["id"]
    error(films.get(f"{FILMS}/{fid}/files/film.mp4"), 404, "no_render")
    error(films.get(f"{FILMS}/{fid}/files/secrets.txt"), 404, "file_not_found")
    video = bytes(range(256)) * 64
    _rendered(services, fid, video)
    outputs = films.get(f"{FILMS}/{fid}").json()["outputs"]
    assert outputs["video_url"] == f"{FILMS}/{fid}/files/film.mp4" and outputs["vtt_url"] is None
    assert outputs["duration"] == 12.5

    whole = films.get(outputs["video_url"])
    assert whole.status_code == 200 and whole.content == video and whole.headers["content-type"] == "video/mp4"
    assert whole.headers.get("accept-ranges") == "bytes"
    part = films.get(outputs["video_url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == video[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(video)}"
    tail = films.get(outputs["video_url"], headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == video[-10:]
    srt = films.get(outputs["srt_url"], params={"download": True})
    assert srt.content.startswith(b"1\n") and srt.headers["content-disposition"].startswith("attachment;")
    error(films.get(f"{FILMS}/{fid}/files/film.vtt"), 404, "no_render")

    public = films.patch(f"{FILMS}/{fid}", json={"public": True}).json()
    token = public["share_url"].rsplit("/", 1)[-1]
    assert public["share_url"] == f"{FILMS}/shared/{token}"
    shared = api.get(public["share_url"])  # no credentials
    assert shared.status_code == 200 and shared.json()["title"] == "Keeper"
    shared_video = shared.json()["outputs"]["video_url"]
    assert shared_video == f"{FILMS}/shared/{token}/files/film.mp4"
    assert api.get(shared_video, headers={"Range": "bytes=0-9"}).content == video[:10]
    assert "script" not in shared.json()

    private = films.post(f"{FILMS}/{fid}/restore").json()  # (a film not in the Trash is returned as it is)
    assert private["public"] is True
    assert films.patch(f"{FILMS}/{fid}", json={"public": False}).json()["share_url"] is None
    error(api.get(public["share_url"]), 404, "film_not_found")
    error(api.get(shared_video), 404, "film_not_found")
    again = films.patch(f"{FILMS}/{fid}", json={"public": True}).json()
    assert again["share_url"] != public["share_url"]  # the old link stays dead
    films.delete(f"{FILMS}/{fid}")
    error(api.get(again["share_url"]), 404, "film_not_found")  # not while in the Trash


def test_bad_input(films: TestClient) -> None:
    def post(**fields: Any) -> Any:
        return films.post(FILMS, json={"title": "Bad", "script": SCRIPT, **fields})

    error(post(script=""), 422, "empty_script")
    error(post(script="   \n\n  "), 422, "empty_script")
    error(post(script="... !!! — ?! ..."), 422, "empty_script")
    body = error(post(script=" ".join(["word"] * 5000)), 422, "script_too_long")
    assert body["details"]["words"] == 5000 and body["details"]["max_words"] == 500
    error(post(voice="nobody:nowhere"), 422, "unknown_voice")
    default = films.get(f"{FILMS}/voices").json()["default"]
    error(post(script="東京へ行った。とても楽しかった！", voice=default), 422, "unsupported_language")
    error(post(music="polka"), 422, "unknown_music")
    error(post(style="no-such-style"), 422, "unknown_style")
    error(post(aspect="4:3"), 422, "invalid_input")
    error(post(target_seconds=30), 422, "invalid_input")
    error(post(speed=3.0), 422, "invalid_input")
    error(films.post(FILMS, json={"title": "", "script": SCRIPT}), 422, "invalid_input")
    assert films.get(FILMS).json()["items"] == []  # nothing was created by any of them


def test_another_users_film_is_not_found(films: TestClient, services: Services) -> None:
    film = create(films)
    fid, sid = film["id"], film["scenes"][0]["id"]
    intruder = auth_headers(services, create_user(services, "intruder@example.com"))
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"{FILMS}/{fid}", {}),
        ("PATCH", f"{FILMS}/{fid}", {"json": {"title": "mine"}}),
        ("DELETE", f"{FILMS}/{fid}", {}),
        ("POST", f"{FILMS}/{fid}/restore", {}),
        ("DELETE", f"{FILMS}/{fid}/purge", {}),
        ("POST", f"{FILMS}/{fid}/scenes", {"json": {"text": "Mine now."}}),
        ("PATCH", f"{FILMS}/{fid}/scenes/{sid}", {"json": {"text": "Mine."}}),
        ("DELETE", f"{FILMS}/{fid}/scenes/{sid}", {}),
        ("POST", f"{FILMS}/{fid}/scenes/reorder", {"json": {"scene_ids": [sid]}}),
        ("POST", f"{FILMS}/{fid}/scenes/{sid}/split", {"json": {"sentence": 1}}),
        ("POST", f"{FILMS}/{fid}/scenes/{sid}/merge", {}),
        ("POST", f"{FILMS}/{fid}/scenes/{sid}/regenerate", {"json": {"seed": 1}}),
        (
            "POST",
            f"{FILMS}/{fid}/characters",
            {"files": {"image": ("a.png", png_bytes(), "image/png")}, "data": {"name": "X"}},
        ),
        ("GET", f"{FILMS}/{fid}/quote", {}),
        ("POST", f"{FILMS}/{fid}/render", {}),
        ("POST", f"{FILMS}/{fid}/cancel", {}),
        ("GET", f"{FILMS}/{fid}/files/film.mp4", {}),
    ]
    for method, url, kwargs in calls:
        r = films.request(method, url, headers=intruder, **kwargs)
        error(r, 404, "film_not_found")
    assert films.get(FILMS, headers=intruder).json()["items"] == []
    mine = films.get(f"{FILMS}/{fid}").json()
    assert mine == film  # nothing changed


def test_a_re_render_is_quoted_for_what_it_redoes(films: TestClient, services: Services) -> None:
    film = create(films, script="One boat. Two boats.", seed=3)
    fid = film["id"]
    after = film["scenes"][0]["id"]
    film = films.post(f"{FILMS}/{fid}/scenes", json={"after": after, "text": "Three gulls. Four gulls."}).json()
    assert len(film["scenes"]) == 2
    for scene in film["scenes"]:
        assert films.post(f"{FILMS}/{fid}/scenes/{scene['id']}/regenerate", json={"seed": 1}).status_code == 202
    drain(services)
    quote = films.get(f"{FILMS}/{fid}/quote").json()
    assert quote["images"]["count"] == 0 and quote["video"]["seconds"] == pytest.approx(
        film["planned_seconds"], abs=0.05
    )
    job_id = films.post(f"{FILMS}/{fid}/render").json()["job_id"]
    with services.db.session() as session:  # what the worker's pipeline leaves after a successful render
        job = session.get_one(Job, job_id)
        job.status = "succeeded"
        project = session.get_one(FilmProject, fid)
        project.status, project.rendered_at = "rendered", utcnow()
        project.outputs = {"mp4": f"films/{LOCAL_USER_ID}/{fid}/film.mp4"}
    assert films.get(f"{FILMS}/{fid}").json()["status"] == "rendered"
    assert films.get(f"{FILMS}/{fid}/quote").json() == {
        "credits": 0,
        "images": {"count": 0, "credits": 0},
        "video": {"seconds": 0.0, "credits": 0},
    }
    second = film["scenes"][1]
    edited = films.patch(f"{FILMS}/{fid}/scenes/{second['id']}", json={"text": "Five gulls. Six gulls."}).json()
    quote = films.get(f"{FILMS}/{fid}/quote").json()
    assert quote["images"]["count"] == 0  # the text changed, not the prompt: the image stays
    assert quote["video"]["seconds"] == pytest.approx(edited["scenes"][1]["planned_seconds"])
    films.patch(f"{FILMS}/{fid}", json={"music": "epic"})  # a film-wide change: every clip again
    assert films.get(f"{FILMS}/{fid}/quote").json()["video"]["seconds"] == pytest.approx(
        sum(s["planned_seconds"] for s in edited["scenes"])
    )
