"""How film rows read in the API: FilmView, its scenes' image states, the render's status from its job row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from studiolo.domain.film.models import FilmCharacter, FilmProject, FilmScene
from studiolo.domain.film.scene_images import named_character, scene_image_hash
from studiolo.domain.film.schemas import (
    CharacterView,
    FilmError,
    FilmSummary,
    FilmView,
    OutputsView,
    RenderView,
    SceneView,
    StageView,
)
from studiolo.domain.film.script import count_words
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.service import image_urls
from studiolo.domain.generation.models import Job

API = "/api/v1"
# The frame of each aspect and resolution (the video helper's render.frame_for gives the same sizes).
_FRAMES = {
    ("16:9", "720p"): (1280, 720),
    ("9:16", "720p"): (720, 1280),
    ("1:1", "720p"): (720, 720),
    ("16:9", "1080p"): (1920, 1080),
    ("9:16", "1080p"): (1080, 1920),
    ("1:1", "1080p"): (1080, 1080),
}
# outputs keys (what the pipeline writes) of the files GET /films/{id}/files/{name} serves.
FILES: dict[str, tuple[str, str]] = {
    "film.mp4": ("mp4", "video/mp4"),
    "film.srt": ("srt", "application/x-subrip"),
    "film.vtt": ("vtt", "text/vtt"),
    "thumbnail.jpg": ("thumb", "image/jpeg"),
}
_JOB_STATUS = {"queued": "rendering", "running": "rendering", "succeeded": "rendered", "failed": "failed"}


def frame_size(aspect: str, resolution: str) -> tuple[int, int]:
    return _FRAMES[(aspect, resolution)]


def film_url(film_id: str) -> str:
    return f"{API}/films/{film_id}"


def share_url(token: str | None) -> str | None:
    return f"{API}/films/shared/{token}" if token else None


def status_of(session: Session, project: FilmProject) -> str:
    """draft|rendering|rendered|failed|canceled: the render job's row decides when there is one (a dead-lettered or
    canceled job shows so without anyone updating the project)."""
    if project.render_job_id:
        status = session.scalar(select(Job.status).where(Job.id == project.render_job_id))
        if status is not None:
            return _JOB_STATUS.get(status, "canceled")
    return project.status if project.status in ("draft", "rendered", "failed", "canceled") else "draft"


def load_scenes(session: Session, project_id: str) -> list[FilmScene]:
    return list(
        session.scalars(select(FilmScene).where(FilmScene.project_id == project_id).order_by(FilmScene.position))
    )


def load_characters(session: Session, project_id: str) -> list[FilmCharacter]:
    return list(
        session.scalars(
            select(FilmCharacter).where(FilmCharacter.project_id == project_id).order_by(FilmCharacter.name)
        )
    )


class SceneImage:
    """A scene's image as the storyboard shows it: which gallery image, and whether it is current."""

    def __init__(self, image_id: str | None, state: str):
        self.image_id = image_id
        self.state = state


def scene_images(
    session: Session, project: FilmProject, scenes: Sequence[FilmScene], characters: Sequence[FilmCharacter]
) -> dict[str, SceneImage]:
    """Each scene's image and state, as scene_images.image_state reads them but without writing anything (a GET
    changes nothing): ``stale`` when the scene's prompt/seed/style/model/aspect/character changed since its image
    (``none`` if it has none), else ``ready`` with its image (or the one its finished job made), ``queued`` or
    ``running`` while its job is, ``failed`` when the job ended without one, ``none`` before any."""
    job_ids = [s.image_job_id for s in scenes if s.image_job_id]
    jobs: dict[str, str] = {}
    made: dict[str, str] = {}
    if job_ids:
        jobs = {
            job_id: status for job_id, status in session.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids)))
        }
        for job_id, made_id in session.execute(
            select(Image.job_id, Image.id)
            .where(Image.job_id.in_(job_ids), Image.owner_id == project.owner_id, Image.trashed_at.is_(None))
            .order_by(Image.id)
        ):
            if job_id is not None and job_id not in made:
                made[job_id] = made_id
    shown = [s.image_id for s in scenes if s.image_id]
    alive = (
        set(
            session.scalars(
                select(Image.id).where(
                    Image.id.in_(shown), Image.owner_id == project.owner_id, Image.trashed_at.is_(None)
                )
            )
        )
        if shown
        else set()
    )
    out: dict[str, SceneImage] = {}
    for scene in scenes:
        wanted = scene_image_hash(project, scene, named_character(scene, list(characters)))
        own = scene.image_id if scene.image_id in alive else None
        job_status = jobs.get(scene.image_job_id) if scene.image_job_id else None
        job_image = made.get(scene.image_job_id) if scene.image_job_id and job_status == "succeeded" else None
        if scene.image_hash != wanted:
            image_id = own or job_image
            out[scene.id] = SceneImage(image_id, "stale" if image_id else "none")
        elif own is not None:
            out[scene.id] = SceneImage(own, "ready")
        elif scene.image_id is not None or job_status is None:
            out[scene.id] = SceneImage(None, "none")  # its image went to the Trash, or nothing was asked yet
        elif job_status in ("queued", "running"):
            out[scene.id] = SceneImage(None, job_status)
        elif job_image is not None:
            out[scene.id] = SceneImage(job_image, "ready")
        else:
            out[scene.id] = SceneImage(None, "failed" if job_status in ("failed", "canceled") else "none")
    return out


def outputs_view(outputs: dict[str, Any], base: str) -> OutputsView | None:
    if not outputs.get("mp4"):
        return None
    urls = {name: f"{base}/files/{name}" if outputs.get(key) else None for name, (key, _) in FILES.items()}
    return OutputsView(
        video_url=urls["film.mp4"],
        srt_url=urls["film.srt"],
        vtt_url=urls["film.vtt"],
        thumbnail_url=urls["thumbnail.jpg"],
        duration=outputs.get("duration"),
        width=outputs.get("width"),
        height=outputs.get("height"),
        bytes=outputs.get("bytes"),
    )


def _render_view(project: FilmProject) -> RenderView | None:
    if not project.render_job_id:
        return None
    state = project.render_state or {}
    stages = {
        str(name): StageView(
            state=str(s.get("state", "")),
            done=int(s.get("done") or 0),
            total=int(s.get("total") or 0),
            seconds=s.get("seconds"),
        )
        for name, s in (state.get("stages") or {}).items()
        if isinstance(s, dict)
    }
    return RenderView(job_id=project.render_job_id, stage=state.get("stage"), stages=stages)


def _error(session: Session, project: FilmProject, status: str) -> FilmError | None:
    if status not in ("failed", "canceled"):
        return None
    if project.render_job_id:
        job = session.get(Job, project.render_job_id)
        if job is not None and job.error_code:
            return FilmError(code=job.error_code, message=job.error_message or "")
    if project.error_code:
        return FilmError(code=project.error_code, message=project.error_message or "")
    return None


def film_view(session: Session, project: FilmProject, *, max_words: int) -> FilmView:
    scenes = load_scenes(session, project.id)
    characters = load_characters(session, project.id)
    images = scene_images(session, project, scenes, characters)
    width, height = frame_size(project.aspect, project.resolution)
    status = status_of(session, project)
    base = film_url(project.id)
    return FilmView(
        id=project.id,
        title=project.title,
        script=project.script,
        style=project.style,
        model=project.model_id,
        aspect=project.aspect,
        resolution=project.resolution,
        width=width,
        height=height,
        target_seconds=project.target_seconds,
        voice=project.voice,
        speed=project.speed,
        music=project.music,
        podcast=project.podcast,
        speaker_voices=dict(project.speaker_voices or {}),
        burn_subtitles=project.burn_subtitles,
        motion=project.motion,
        seed=int(project.seed),
        public=project.public,
        share_url=share_url(project.share_token) if project.public else None,
        collection_id=project.collection_id,
        status=status,
        error=_error(session, project, status),
        render=_render_view(project),
        outputs=outputs_view(project.outputs or {}, base),
        scenes=[
            SceneView(
                id=s.id,
                position=s.position,
                text=s.text,
                prompt=s.prompt,
                seed=int(s.seed),
                planned_seconds=s.planned_seconds,
                narration_seconds=s.narration_seconds,
                image_id=images[s.id].image_id,
                image_url=image_urls(i).thumbnails["800"] if (i := images[s.id].image_id) else None,
                image_job_id=s.image_job_id,
                image_state=images[s.id].state,
            )
            for s in scenes
        ],
        characters=[
            CharacterView(id=c.id, name=c.name, image_url=f"{base}/characters/{c.id}/image") for c in characters
        ],
        words=count_words(project.script),
        max_words=max_words,
        planned_seconds=round(sum(s.planned_seconds for s in scenes), 2),
        created_at=project.created_at,
        updated_at=project.updated_at,
        rendered_at=project.rendered_at,
        deleted_at=project.deleted_at,
    )


def film_summary(session: Session, project: FilmProject, scenes: Sequence[tuple[int, float]]) -> FilmSummary:
    """``scenes``: (count, planned seconds) of the film's scenes."""
    outputs = outputs_view(project.outputs or {}, film_url(project.id))
    count, planned = scenes[0] if scenes else (0, 0.0)
    return FilmSummary(
        id=project.id,
        title=project.title,
        status=status_of(session, project),
        aspect=project.aspect,
        resolution=project.resolution,
        scene_count=count,
        planned_seconds=round(planned, 2),
        duration=outputs.duration if outputs else None,
        thumbnail_url=outputs.thumbnail_url if outputs else None,
        public=project.public,
        created_at=project.created_at,
        updated_at=project.updated_at,
        rendered_at=project.rendered_at,
        deleted_at=project.deleted_at,
    )
