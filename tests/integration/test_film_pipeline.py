"""The film render end to end (issue 16), on SQLite and PostgreSQL: a 3-scene script becomes an MP4 whose streams,
duration, resolution, pictures and subtitles are what the storyboard planned; an edit re-renders only what it
changed; a canceled render gives its credits back. Real espeak-ng narration, real ffmpeg, scene images from the echo
engine (queued as ordinary generation jobs, so they land in the gallery and the film's collection)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.billing.plans import PlanSpec
from studiolo.domain.film import pipeline, render
from studiolo.domain.film.models import FilmProject, FilmScene
from studiolo.domain.film.schemas import ScenePatch
from studiolo.domain.film.subtitles import parse_srt, parse_vtt
from studiolo.domain.film.timeline import LEAD
from studiolo.domain.gallery.models import CollectionItem, Image
from studiolo.domain.generation.models import Job
from studiolo.engines.ffmpeg import probe
from studiolo.engines.image_to_video import SVDImageToVideo
from studiolo.errors import InvalidInput
from studiolo.services import Services, build_services
from tests.film_checks import cover, distance, ffmpeg, frame_at, make_film, run_until_done
from tests.helpers import create_user
from tests.tiny_svd import make_tiny_svd_pipeline

pytestmark = pytest.mark.usefixtures("fast_image_polls")


@pytest.fixture
def fast_image_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    # A render waiting for its scene images looks again soon (not at once: it would stay ahead of them in its
    # owner's queue): drain() runs everything in this thread.
    monkeypatch.setattr(pipeline, "IMAGE_POLL_SECONDS", 0.05)


class Counting:
    """Counts the calls of one method of an object (the speech catalog's synthesize, render.render_clip)."""

    def __init__(self) -> None:
        self.calls = 0

    def wrap(self, fn: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return fn(*args, **kwargs)

        return counted


@pytest.fixture
def film_services(settings_factory: Any) -> Iterator[Services]:
    svc = build_services(settings_factory(), upgrade_db=False)
    yield svc
    svc.close(timeout=10)


def _stored(services: Services, key: str, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(services.store.get(key))
    return path


def test_a_three_scene_script_becomes_the_planned_film(film_services: Services, tmp_path: Path) -> None:
    svc = film_services
    film_id = make_film(svc)
    accepted = svc.film.render(LOCAL_USER_ID, film_id)
    job = run_until_done(svc, accepted.job_id)
    assert job.status == "succeeded", job.error

    view = svc.film.get(LOCAL_USER_ID, film_id)
    assert view.status == "rendered"
    assert [s.state for s in view.render.stages.values()] == ["done"] * 9  # type: ignore[union-attr]
    with svc.db.session() as session:
        project = session.get(FilmProject, film_id)
        assert project is not None
        outputs, timeline = dict(project.outputs), dict(project.timeline)
        scenes = session.scalars(
            select(FilmScene).where(FilmScene.project_id == film_id).order_by(FilmScene.position)
        ).all()
        image_keys = [session.scalar(select(Image.original_key).where(Image.id == scene.image_id)) for scene in scenes]
        # The scene images are gallery images, in the film's collection.
        in_collection = session.scalar(
            select(func.count())
            .select_from(CollectionItem)
            .where(CollectionItem.collection_id == project.collection_id)
        )
    assert len(scenes) == 3 and in_collection == 3
    assert all(s.narration_seconds and s.narration_seconds > 1.0 for s in scenes)

    mp4 = _stored(svc, outputs["mp4"], tmp_path, "film.mp4")
    info = probe(ffmpeg(), mp4)
    assert info.has_video and info.has_audio and info.subtitle_streams == 1
    assert (info.width, info.height) == (1280, 720)
    assert abs(info.duration - timeline["seconds"]) <= 0.5

    # The picture at each scene's middle is that scene's image (closer to it than to any other scene's image).
    frame = render.frame_for("16:9", "720p")
    images = [
        cover(PILImage.open(io.BytesIO(svc.store.get(k))).convert("RGB"), frame.width, frame.height)  # type: ignore[arg-type]
        for k in image_keys
    ]
    for k, placed in enumerate(timeline["scenes"]):
        shown = frame_at(mp4, placed["start"] + placed["seconds"] / 2)
        distances = [distance(shown, image) for image in images]
        assert distances.index(min(distances)) == k, (k, distances)

    # Subtitles parse back, in order, each inside its scene's narration and together saying the whole script.
    srt = parse_srt(svc.store.get(outputs["srt"]).decode())
    vtt = parse_vtt(svc.store.get(outputs["vtt"]).decode())
    assert [(c.start, c.end, c.text) for c in srt] == [(c.start, c.end, c.text) for c in vtt]
    starts = [c.start for c in srt]
    assert starts == sorted(starts) and all(c.end > c.start for c in srt)
    for placed in timeline["scenes"]:
        for cue in placed["cues"]:
            assert placed["start"] + LEAD - 0.01 <= cue["start"] < cue["end"] <= placed["start"] + placed["seconds"]
    said = " ".join(c.text.replace("\n", " ") for c in srt)
    assert said.split() == " ".join(s.text for s in scenes).split()
    last_cue = timeline["scenes"][-1]["cues"][-1]
    assert last_cue["end"] == pytest.approx(srt[-1].end, abs=0.002)


def test_a_one_scene_edit_redoes_only_that_scene(film_services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = film_services
    film_id = make_film(svc, music="none")
    run_until_done(svc, svc.film.render(LOCAL_USER_ID, film_id).job_id)
    renderer = svc.runner.handlers["film"]
    speech, clips = Counting(), Counting()
    monkeypatch.setattr(renderer.speech, "synthesize", speech.wrap(renderer.speech.synthesize))  # type: ignore[attr-defined]
    monkeypatch.setattr(render, "render_clip", clips.wrap(render.render_clip))

    view = svc.film.get(LOCAL_USER_ID, film_id)
    last = view.scenes[-1]
    svc.film.update_scene(LOCAL_USER_ID, film_id, last.id, ScenePatch(prompt=last.prompt + ", at sunrise"))
    quote = svc.film.quote(LOCAL_USER_ID, film_id)
    assert quote.images.count == 1  # only the edited scene needs a new image
    with svc.db.session() as session:
        images_before = session.scalar(select(func.count()).select_from(Job).where(Job.kind == "txt2img"))
    job = run_until_done(svc, svc.film.render(LOCAL_USER_ID, film_id).job_id)
    assert job.status == "succeeded", job.error
    with svc.db.session() as session:
        images_after = session.scalar(select(func.count()).select_from(Job).where(Job.kind == "txt2img"))
    assert images_after == images_before + 1
    assert speech.calls == 0  # nothing re-narrated: the text did not change
    assert clips.calls == 2  # the edited last scene's clip and the one that crossfades into it
    stages = svc.film.get(LOCAL_USER_ID, film_id).render.stages  # type: ignore[union-attr]
    assert stages["narration"].state == "done" and stages["music"].state == "skipped"


def test_canceling_a_render_midway_gives_its_credits_back(settings_factory: Any) -> None:
    svc = build_services(settings_factory(billing="quotas"), upgrade_db=False)
    try:
        plan = PlanSpec(slug="films", name="Films", monthly_images=100, monthly_credits=0)
        svc.billing.create_plan(plan, actor_id=LOCAL_USER_ID, origin=Origin())
        user = create_user(svc, "director@example.com")
        svc.billing.assign_plan(user, plan.slug, actor_id=LOCAL_USER_ID, origin=Origin())
        svc.billing.adjust_credits(user, 200, reason="test", actor_id=LOCAL_USER_ID, origin=Origin())
        film_id = make_film(svc, owner=user)
        before = svc.billing.summary(user).balance
        accepted = svc.film.render(user, film_id)
        video_credits = accepted.quote.video.credits
        assert video_credits >= 1
        summary = svc.billing.summary(user)
        assert (summary.balance, summary.held) == (before - video_credits, video_credits)

        def cancel_when_narrating(event: dict[str, Any]) -> None:
            if event.get("type") == "stage" and event.get("stage") == "narration":
                svc.film.cancel(user, film_id)

        unsubscribe = svc.events.subscribe(accepted.job_id, cancel_when_narrating)
        try:
            job = run_until_done(svc, accepted.job_id, owner=user)
        finally:
            unsubscribe()
        assert job.status == "canceled"
        summary = svc.billing.summary(user)
        # The render's hold is released; the three scene images it had made are charged as the images they are.
        image_credits = accepted.quote.images.credits
        assert summary.held == 0
        assert summary.balance == before - image_credits
        assert svc.film.get(user, film_id).status == "canceled"
    finally:
        svc.close(timeout=10)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_a_film_can_move_with_an_image_to_video_model(
    film_services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = film_services
    with pytest.raises(InvalidInput) as refused:
        make_film(svc, motion="no-such-model")
    assert refused.value.code == "unknown_motion"

    svc.catalog.import_path(make_tiny_svd_pipeline(tmp_path / "tiny-svd"), model_id="tiny-svd")
    assert svc.film.options(LOCAL_USER_ID).motions == ["kenburns", "tiny-svd"]
    renderer = svc.runner.handlers["film"]
    engine, made = SVDImageToVideo(device="cpu", steps=2, threads=1), Counting()  # a quick run
    monkeypatch.setattr(engine, "frames", made.wrap(engine.frames))
    monkeypatch.setattr(renderer, "motion", engine)
    film_id = make_film(svc, music="none", motion="tiny-svd", script="The sea. The storm came in at night.")
    job = run_until_done(svc, svc.film.render(LOCAL_USER_ID, film_id).job_id)
    assert job.status == "succeeded", job.error
    with svc.db.session() as session:
        project = session.get(FilmProject, film_id)
        assert project is not None
        outputs, timeline = dict(project.outputs), dict(project.timeline)
    assert made.calls == len(timeline["scenes"])  # each scene's motion made once, shared by the clips showing it
    mp4 = _stored(svc, outputs["mp4"], tmp_path, "moving.mp4")
    info = probe(ffmpeg(), mp4)
    assert info.has_video and info.has_audio and abs(info.duration - timeline["seconds"]) <= 0.5
    first = timeline["scenes"][0]
    early, late = frame_at(mp4, first["start"] + 0.2), frame_at(mp4, first["start"] + first["seconds"] * 0.6)
    assert distance(early, late, (32, 18)) > 0.5  # the picture moves: the model's frames, not a still
