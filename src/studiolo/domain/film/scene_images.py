"""A scene's image is an ordinary generation job (issue 16): queued like any image, made by whichever worker serves
the model, charged through the billing gate, kept in the gallery and in the film's collection.

Which image a scene needs is named by a hash of everything that decides its pixels (views.scene_image_hash: prompt,
seed, style, model, aspect, character image): a scene whose hash differs from its image's needs a new one. The service
(regenerate now) and the pipeline (images still missing at render time) both go through ``submit_scene_image``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.domain.film.models import FilmCharacter, FilmProject, FilmScene
from studiolo.domain.gallery.models import Image
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.domain.generation.service import GenerationService
from studiolo.domain.safety.outputs import REVIEW_PENDING, REVIEW_REJECTED
from studiolo.storage.base import ObjectStore

# The image tags of every scene image (the gallery's search finds them).
FILM_TAG = "film"
# A render's error codes for a scene image the output check stopped (issue 17).
CONTENT_BLOCKED = "content_blocked"
CONTENT_UNDER_REVIEW = "content_under_review"


def named_character(scene: FilmScene, characters: list[FilmCharacter]) -> FilmCharacter | None:
    """The character the scene's text names first (whole words, any case), if any."""
    best: tuple[int, FilmCharacter] | None = None
    for character in characters:
        match = re.search(rf"(?<!\w){re.escape(character.name)}(?!\w)", scene.text, flags=re.IGNORECASE)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), character)
    return best[1] if best else None


def scene_image_hash(project: FilmProject, scene: FilmScene, character: FilmCharacter | None) -> str:
    """What decides the scene's image; the image is stale when this differs from ``scene.image_hash``."""
    decided = {
        "prompt": scene.prompt,
        "seed": int(scene.seed),
        "style": project.style,
        "model": project.model_id,
        "aspect": project.aspect,
        "character": character.image_key if character else None,
    }
    return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class SceneImageState:
    """Where a scene's image stands: ready (``image_id``), queued/running (its job), failed (its job), stale, none."""

    state: str
    image_id: str | None = None
    job_id: str | None = None
    error: str | None = None
    code: str | None = None  # a failed one's error code, when it says more than "scene_image_failed"


def image_state(session: Session, project: FilmProject, scene: FilmScene, wanted_hash: str) -> SceneImageState:
    """The state of ``scene``'s image for ``wanted_hash``; records the image of a finished job on the scene."""
    if scene.image_hash != wanted_hash:
        return SceneImageState("stale" if scene.image_id else "none")
    if scene.image_id is not None:
        alive = session.execute(
            select(Image.id, Image.review_state).where(
                Image.id == scene.image_id, Image.owner_id == project.owner_id, Image.trashed_at.is_(None)
            )
        ).first()
        if alive:
            held = _held(alive.review_state, scene.image_id)
            return held or SceneImageState("ready", image_id=scene.image_id)
        scene.image_id = None  # moved to the Trash or purged since: a new one is made
        scene.image_hash = None
        return SceneImageState("none")
    if scene.image_job_id is None:
        return SceneImageState("none")
    job = session.get(Job, scene.image_job_id)
    if job is None or job.owner_id != project.owner_id:
        scene.image_job_id = scene.image_hash = None
        return SceneImageState("none")
    if job.status in ("queued", "running"):
        return SceneImageState(job.status, job_id=job.id)
    if job.status == "succeeded":
        made = session.execute(
            select(Image.id, Image.review_state)
            .where(Image.job_id == job.id, Image.owner_id == project.owner_id)
            .order_by(Image.id)
        ).first()
        if made is not None:
            scene.image_id = made.id
            return _held(made.review_state, made.id) or SceneImageState("ready", image_id=made.id, job_id=job.id)
        if job.blocked_outputs:
            # The output check refused to store it (issue 17): queuing it again would make the same picture (same
            # prompt and seed), and the idempotent submit would only find this job again, so the render stops here.
            return SceneImageState(
                "failed", job_id=job.id, error="the output check blocked it as not safe for work", code=CONTENT_BLOCKED
            )
        return SceneImageState("none")
    return SceneImageState("failed", job_id=job.id, error=job.error_message or job.status)


def _held(review_state: str | None, image_id: str) -> SceneImageState | None:
    """A scene image the output check held for review, or that a review rejected, cannot go into a film: the film
    would show (and its share link publish) what the gallery keeps private (issue 17)."""
    if review_state == REVIEW_PENDING:
        return SceneImageState(
            "failed", image_id=image_id, error="it is held for review by an administrator", code=CONTENT_UNDER_REVIEW
        )
    if review_state == REVIEW_REJECTED:
        return SceneImageState("failed", image_id=image_id, error="a review rejected it", code=CONTENT_BLOCKED)
    return None


def scene_params(project: FilmProject, scene: FilmScene) -> GenerationParams:
    """The generation request of a scene's image: its prompt and seed, the film's style, model and aspect."""
    return GenerationParams(
        prompt=scene.prompt,
        style=project.style,
        model=project.model_id,
        aspect_ratio=project.aspect,
        seed=scene.seed,
        tags=[FILM_TAG],
    )


def submit_scene_image(
    generation: GenerationService,
    store: ObjectStore,
    project: FilmProject,
    scene: FilmScene,
    character: FilmCharacter | None,
) -> tuple[str, str]:
    """Queue the scene's image (img2img from the character image when the scene names one); returns (job id, image
    hash). The caller records both on the scene, in a transaction of its own: this submit commits its job first.

    The submit is idempotent per scene and hash, so a render that crashed between queuing the image and recording
    it finds the same job again instead of paying for a second image. Billing refusals propagate (402/403)."""
    params = scene_params(project, scene)
    wanted = scene_image_hash(project, scene, character)
    key = f"film-scene:{scene.id}:{wanted[:32]}"
    if character is not None:
        init = generation.validate_upload(store.get(character.image_key), field="image")
        accepted, _ = generation.submit(project.owner_id, params, kind="img2img", init_image=init, idempotency_key=key)
    else:
        accepted, _ = generation.submit(project.owner_id, params, idempotency_key=key)
    return accepted.id, wanted


def record_scene_job(session: Session, scene_id: str, job_id: str, image_hash: str) -> None:
    """The scene's image is now being made by ``job_id`` for ``image_hash``."""
    scene = session.get(FilmScene, scene_id)
    if scene is not None:
        scene.image_job_id = job_id
        scene.image_id = None
        scene.image_hash = image_hash
        scene.updated_at = utcnow()
