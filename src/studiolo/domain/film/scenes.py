"""The storyboard's edits (scenes: edit, add, delete, reorder, split, merge, regenerate) and the film's characters:
the part of FilmService (service.py) that changes scenes. Every method loads the film through the owner check."""

from __future__ import annotations

import hashlib
import secrets
from abc import ABC, abstractmethod
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.film import script as sc
from studiolo.domain.film import views
from studiolo.domain.film.models import FilmCharacter, FilmProject, FilmScene
from studiolo.domain.film.scene_images import named_character, record_scene_job, submit_scene_image
from studiolo.domain.film.schemas import FilmView, SceneCreate, ScenePatch, SceneRegenerate, SceneSplit
from studiolo.domain.generation.service import GenerationService
from studiolo.errors import Conflict, InvalidInput, NotFound
from studiolo.settings import Settings
from studiolo.storage.base import ObjectNotFound, ObjectStore


class SceneOps(ABC):
    """Scene and character operations of FilmService, which gives them its owner check and its view."""

    db: Database
    settings: Settings
    store: ObjectStore
    generation: GenerationService

    @abstractmethod
    def _owned(self, session: Session, owner_id: str, film_id: str, *, for_update: bool = False) -> FilmProject:
        """The owner's film (404 film_not_found otherwise)."""

    @abstractmethod
    def _view(self, session: Session, project: FilmProject) -> FilmView:
        """The film as the API shows it."""

    # -- scenes --------------------------------------------------------------------------------
    def _scene(self, session: Session, project: FilmProject, scene_id: str) -> FilmScene:
        scene = session.get(FilmScene, scene_id)
        if scene is None or scene.project_id != project.id:
            raise NotFound(f"No scene with id '{scene_id}' in this film.", code="scene_not_found")
        return scene

    def _check_scene_text(self, text: str, *, field: str = "text") -> None:
        """Words within the limits (422 empty_script, script_too_long), and past prompt moderation (422
        content_rejected, docs/safety.md): the text is narrated and subtitled as written, not only drawn."""
        sc.validate_script(text, max_words=self.settings.film_max_words)
        if self.generation.moderator is not None:
            self.generation.moderator.check_fields([(field, text)])

    def update_scene(self, owner_id: str, film_id: str, scene_id: str, patch: ScenePatch) -> FilmView:
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            scene = self._scene(session, project, scene_id)
            if patch.text is not None and patch.text != scene.text:
                self._check_scene_text(patch.text)
                scene.text = patch.text
                scene.planned_seconds = sc.scene_seconds(patch.text, podcast=project.podcast, speed=project.speed)
                scene.narration_seconds = None
            if patch.prompt is not None:
                scene.prompt = patch.prompt.strip() or scene.prompt
            if patch.seed is not None:
                scene.seed = patch.seed
            scene.updated_at = project.updated_at = utcnow()
            return self._view(session, project)

    def add_scene(self, owner_id: str, film_id: str, req: SceneCreate) -> FilmView:
        self._check_scene_text(req.text)
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            scenes = views.load_scenes(session, project.id)
            if len(scenes) >= sc.MAX_SCENES:
                raise Conflict(
                    f"A film has at most {sc.MAX_SCENES} scenes.",
                    code="too_many_scenes",
                    details={"max": sc.MAX_SCENES},
                )
            index = 0
            if req.after is not None:
                index = next((i + 1 for i, s in enumerate(scenes) if s.id == req.after), -1)
                if index < 0:
                    raise NotFound(f"No scene with id '{req.after}' in this film.", code="scene_not_found")
            scene = FilmScene(
                project_id=project.id,
                owner_id=owner_id,
                position=index,
                text=req.text,
                prompt=req.prompt or sc.scene_prompt(req.text, podcast=project.podcast),
                seed=secrets.randbelow(2**32),
                planned_seconds=sc.scene_seconds(req.text, podcast=project.podcast, speed=project.speed),
            )
            scenes.insert(index, scene)
            session.add(scene)
            _renumber(scenes)
            project.updated_at = utcnow()
            return self._view(session, project)

    def delete_scene(self, owner_id: str, film_id: str, scene_id: str) -> FilmView:
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            scene = self._scene(session, project, scene_id)
            scenes = views.load_scenes(session, project.id)
            if len(scenes) <= 1:
                raise Conflict("A film keeps at least one scene.", code="last_scene")
            session.delete(scene)
            _renumber([s for s in scenes if s.id != scene.id])
            project.updated_at = utcnow()
            return self._view(session, project)

    def reorder_scenes(self, owner_id: str, film_id: str, scene_ids: Sequence[str]) -> FilmView:
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            scenes = {s.id: s for s in views.load_scenes(session, project.id)}
            if sorted(scene_ids) != sorted(scenes) or len(set(scene_ids)) != len(scene_ids):
                raise InvalidInput(
                    "Give every scene of the film exactly once, in the new order.",
                    code="invalid_scene_order",
                    details={"expected": sorted(scenes), "field": "scene_ids"},
                )
            _renumber([scenes[i] for i in scene_ids])
            project.updated_at = utcnow()
            return self._view(session, project)

    def split_scene(self, owner_id: str, film_id: str, scene_id: str, req: SceneSplit) -> FilmView:
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            scene = self._scene(session, project, scene_id)
            scenes = views.load_scenes(session, project.id)
            if len(scenes) >= sc.MAX_SCENES:
                raise Conflict(f"A film has at most {sc.MAX_SCENES} scenes.", code="too_many_scenes")
            try:
                first, second = sc.split_text(scene.text, req.sentence, podcast=project.podcast)
            except ValueError as exc:
                count = sc.scene_sentences(scene.text, podcast=project.podcast)
                raise InvalidInput(
                    f"This scene has {count} sentence{'s' * (count != 1)}: split it at 1..{count - 1}."
                    if count > 1
                    else "This scene has one sentence: it cannot be split.",
                    code="invalid_split",
                    details={"sentence": req.sentence, "sentences": count, "field": "sentence"},
                ) from exc
            pod, speed = project.podcast, project.speed
            scene.text, scene.narration_seconds = first, None
            scene.prompt = sc.scene_prompt(first, podcast=pod)
            scene.planned_seconds = sc.scene_seconds(first, podcast=pod, speed=speed)
            scene.updated_at = utcnow()
            new = FilmScene(
                project_id=project.id,
                owner_id=owner_id,
                position=scene.position + 1,
                text=second,
                prompt=sc.scene_prompt(second, podcast=pod),
                seed=secrets.randbelow(2**32),
                planned_seconds=sc.scene_seconds(second, podcast=pod, speed=speed),
            )
            session.add(new)
            scenes.insert([s.id for s in scenes].index(scene.id) + 1, new)
            _renumber(scenes)
            project.updated_at = utcnow()
            return self._view(session, project)

    def merge_scene(self, owner_id: str, film_id: str, scene_id: str) -> FilmView:
        """Merge the scene with the next one (its seed and image stay; the prompts are joined)."""
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            scene = self._scene(session, project, scene_id)
            scenes = views.load_scenes(session, project.id)
            index = [s.id for s in scenes].index(scene.id)
            if index == len(scenes) - 1:
                raise Conflict("This is the last scene: there is no next scene to merge it with.", code="no_next_scene")
            following = scenes[index + 1]
            pod = project.podcast
            scene.text = sc.join_texts(scene.text, following.text, podcast=pod)
            scene.prompt = sc.trim_words(f"{scene.prompt} {following.prompt}", sc.PROMPT_MAX_WORDS)
            scene.planned_seconds = sc.scene_seconds(scene.text, podcast=pod, speed=project.speed)
            scene.narration_seconds = None
            scene.updated_at = utcnow()
            session.delete(following)
            _renumber([s for s in scenes if s.id != following.id])
            project.updated_at = utcnow()
            return self._view(session, project)

    def regenerate_scene(self, owner_id: str, film_id: str, scene_id: str, req: SceneRegenerate) -> FilmView:
        """A new image for one scene now: the seed given (null: a new random one), the prompt if given."""
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            scene = self._scene(session, project, scene_id)
            scene.seed = req.seed if req.seed is not None else secrets.randbelow(2**32)
            if req.prompt is not None:
                scene.prompt = req.prompt.strip() or scene.prompt
            scene.updated_at = utcnow()
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id)
            scene = self._scene(session, project, scene_id)
            character = named_character(scene, views.load_characters(session, project.id))
            session.expunge_all()  # read only: the submit below commits its job in a transaction of its own
        job_id, wanted = submit_scene_image(self.generation, self.store, project, scene, character)
        with self.db.session() as session:
            record_scene_job(session, scene_id, job_id, wanted)
        with self.db.session() as session:
            return self._view(session, self._owned(session, owner_id, film_id))

    # -- characters ----------------------------------------------------------------------------
    def add_character(self, owner_id: str, film_id: str, name: str, data: bytes) -> FilmView:
        clean = " ".join(name.split())
        if not 1 <= len(clean) <= 80:
            raise InvalidInput("A character's name is 1-80 characters.", code="invalid_name", details={"field": "name"})
        with self.db.session() as session:
            self._owned(session, owner_id, film_id)  # 404 before reading an upload for someone else's film
        upload = self.generation.validate_upload(data, field="image")  # the gallery's upload checks and codes
        key = f"films/{owner_id}/{film_id}/characters/{hashlib.sha256(upload.png).hexdigest()}.png"
        self.store.put(key, upload.png, "image/png")
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            taken = session.scalar(
                select(FilmCharacter.id).where(
                    FilmCharacter.project_id == project.id, func.lower(FilmCharacter.name) == clean.lower()
                )
            )
            if taken is not None:
                raise Conflict(f"This film already has a character named '{clean}'.", code="character_exists")
            session.add(FilmCharacter(project_id=project.id, owner_id=owner_id, name=clean, image_key=key))
            project.updated_at = utcnow()
            return self._view(session, project)

    def _character(self, session: Session, project: FilmProject, character_id: str) -> FilmCharacter:
        character = session.get(FilmCharacter, character_id)
        if character is None or character.project_id != project.id:
            raise NotFound(f"No character with id '{character_id}' in this film.", code="character_not_found")
        return character

    def delete_character(self, owner_id: str, film_id: str, character_id: str) -> FilmView:
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            character = self._character(session, project, character_id)
            key = character.image_key
            session.delete(character)
            session.flush()
            shared = session.scalar(select(func.count()).where(FilmCharacter.image_key == key))
            project.updated_at = utcnow()
            view = self._view(session, project)
        if not shared:
            self.store.delete(key)
        return view

    def character_image(self, owner_id: str, film_id: str, character_id: str) -> bytes:
        with self.db.session() as session:
            key = self._character(session, self._owned(session, owner_id, film_id), character_id).image_key
        try:
            return self.store.get(key)
        except ObjectNotFound as exc:
            raise NotFound("This character's image is missing from storage.", code="file_missing") from exc


def _renumber(scenes: Sequence[FilmScene]) -> None:
    now = utcnow()
    for i, scene in enumerate(scenes):
        if scene.position != i:
            scene.position = i
            scene.updated_at = now
