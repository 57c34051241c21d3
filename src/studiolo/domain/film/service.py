"""The film studio's service: projects, their storyboard (scenes) and characters, quotes, renders, sharing, files.

A render is one job row of kind "film" (the pipeline, pipeline.py, runs it in a worker); every scene image is an
ordinary generation job (``submit_scene_image``), so it shows in the gallery and is charged as an image. Every query
is scoped to the owner: another user's film is 404 ``film_not_found`` (tests/integration/test_film_api.py and the
OpenAPI walk of tests/integration/test_isolation.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.billing import cost
from studiolo.domain.billing.gate import BillingGate
from studiolo.domain.film import script as sc
from studiolo.domain.film import views
from studiolo.domain.film.models import FILM_MODEL_ID, FilmProject, FilmScene
from studiolo.domain.film.motion import KEN_BURNS
from studiolo.domain.film.prompter import ScenePrompter, storyboard_prompts
from studiolo.domain.film.scenes import SceneOps
from studiolo.domain.film.schemas import (
    ASPECTS,
    RESOLUTIONS,
    TARGET_SECONDS_MAX,
    TARGET_SECONDS_MIN,
    FilmCreate,
    FilmOptions,
    FilmPage,
    FilmPatch,
    FilmQuote,
    FilmRenderAccepted,
    FilmView,
    QuoteImages,
    QuoteVideo,
    SharedFilmView,
    TargetRange,
    VoiceList,
    VoiceView,
)
from studiolo.domain.film.speech_port import SpeechPort, VoiceInfo, guess_language, sample_text
from studiolo.domain.gallery.schemas import CollectionCreate, CollectionPatch
from studiolo.domain.gallery.service import GalleryService
from studiolo.domain.generation.events import EventBus
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.queue import JobQueue
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.domain.generation.service import GenerationService
from studiolo.domain.generation.submission import check_idempotency_key, queued_row, submit_hash
from studiolo.domain.ownership import get_owned
from studiolo.engines.image_to_video import motion_models
from studiolo.engines.wavcodec import encode_wav
from studiolo.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from studiolo.settings import Settings
from studiolo.storage.base import ObjectNotFound, ObjectStore


@dataclass(frozen=True)
class FilmFile:
    """Where a film's file is: a local path the API streams (Range requests), or a presigned URL (S3)."""

    key: str
    content_type: str
    filename: str
    local_path: Path | None
    url: str | None


def _settings_fingerprint(p: FilmProject) -> str:
    """What, changed, makes every clip of a film render again (the quote's whole-film case)."""
    what = [p.aspect, p.resolution, p.voice, p.speed, p.music, p.podcast, p.speaker_voices, p.burn_subtitles]
    what += [p.seed, p.motion]
    return hashlib.sha256(repr(what).encode()).hexdigest()[:32]


def _split(p: FilmProject) -> list[sc.SceneDraft]:
    return sc.split_script(p.script, target_seconds=p.target_seconds, podcast=p.podcast, speed=p.speed)


class FilmService(SceneOps):
    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        store: ObjectStore,
        generation: GenerationService,
        gallery: GalleryService,
        queue: JobQueue,
        speech: SpeechPort,
        music_moods: Sequence[str],
        events: EventBus,
        prompter: ScenePrompter | None = None,
    ):
        self.db = db
        self.settings = settings
        self.store = store
        self.generation = generation
        self.gallery = gallery
        self.queue = queue
        self.speech = speech
        self.music_moods = tuple(music_moods)
        self.events = events
        self.prompter = prompter  # an optional chat provider for the storyboard's image prompts (prompter.py)

    # -- catalogue -----------------------------------------------------------------------------
    def _speech(self) -> SpeechPort:
        return self.speech

    def voices(self) -> VoiceList:
        voices = list(self.speech.voices())
        default = self.speech.default_voice("en").id if voices else None
        return VoiceList(voices=[_voice_view(v) for v in voices], default=default)

    def options(self, owner_id: str) -> FilmOptions:
        styles = [s.slug for s in self.generation.style_catalog(owner_id).styles]
        return FilmOptions(
            moods=list(self.music_moods),
            motions=[KEN_BURNS, *(m.id for m in motion_models(self.generation.catalog))],
            aspects=list(ASPECTS),
            resolutions=list(RESOLUTIONS),
            styles=styles,
            max_words=self.settings.film_max_words,
            target_seconds=TargetRange(min=TARGET_SECONDS_MIN, max=TARGET_SECONDS_MAX),
        )

    def voice_sample(self, voice_id: str, text: str | None = None) -> bytes:
        """A WAV of the voice speaking ``text`` (default: a sentence in its language), cached in the store."""
        speech = self._speech()
        voice = speech.get(voice_id)
        words = (text or "").strip() or sample_text(voice.language)
        speech.check_text(voice.id, words)
        digest = hashlib.sha256(voice.id.encode() + b"\x1f" + words.encode()).hexdigest()
        key = f"films/voice-samples/{digest}.wav"
        try:
            return self.store.get(key)
        except ObjectNotFound:
            pass
        spoken = speech.synthesize(words, voice.id)
        data = encode_wav(spoken.samples, spoken.sample_rate)
        self.store.put(key, data, "audio/wav", durable=False)  # made again when missing
        return data

    # -- checks --------------------------------------------------------------------------------
    def _check_music(self, music: str) -> None:
        if music != "none" and music not in self.music_moods:
            raise InvalidInput(
                f"Unknown music '{music}': use one of {', '.join(self.music_moods)} or none.",
                code="unknown_music",
                details={"music": music, "moods": list(self.music_moods), "field": "music"},
            )

    def _check_motion(self, motion: str) -> None:
        """Ken Burns, or an image-to-video model installed here (422 unknown_motion)."""
        models = [m.id for m in motion_models(self.generation.catalog)]
        if motion != KEN_BURNS and motion not in models:
            raise InvalidInput(
                f"Unknown motion '{motion}': use kenburns or an installed image-to-video model.",
                code="unknown_motion",
                details={"motion": motion, "motions": [KEN_BURNS, *models], "field": "motion"},
            )

    def _check_look(self, owner_id: str, style: str | None, model: str | None, aspect: str) -> None:
        """An unknown style (422 unknown_style) or model (409 model_unavailable) is refused now, not at render."""
        probe = GenerationParams(prompt="film", style=style, model=model, aspect_ratio=aspect)
        self.generation.prepare(owner_id, probe, "txt2img")

    def _check_voices(self, p: FilmProject) -> None:
        """Every voice exists (400 unknown_voice) and can speak its lines (unsupported_language)."""
        speech = self._speech()
        speech.get(p.voice)
        voices = dict(p.speaker_voices or {})
        for voice_id in voices.values():
            speech.get(voice_id)
        if not p.podcast:
            speech.check_text(p.voice, sc.spoken_text(p.script, podcast=False))
            return
        said: dict[str, list[str]] = {}
        for line in sc.parse_lines(p.script, podcast=True):
            voice = voices.get(line.speaker or "", p.voice)
            said.setdefault(voice, []).append(line.text)
        for voice_id, lines in said.items():
            speech.check_text(voice_id, " ".join(lines))

    # -- projects ------------------------------------------------------------------------------
    def _owned(self, session: Session, owner_id: str, film_id: str, *, for_update: bool = False) -> FilmProject:
        return get_owned(session, FilmProject, film_id, owner_id, what="film", for_update=for_update)

    def _view(self, session: Session, project: FilmProject) -> FilmView:
        session.flush()
        return views.film_view(session, project, max_words=self.settings.film_max_words)

    def create(self, owner_id: str, data: FilmCreate) -> FilmView:
        self._check_scene_text(data.script, field="script")
        self._check_music(data.music)
        self._check_motion(data.motion)
        self._check_look(owner_id, data.style, data.model, data.aspect)
        voice = data.voice or self._speech().default_voice(guess_language(data.script)).id
        project = FilmProject(
            owner_id=owner_id,
            title=data.title.strip() or data.title,
            script=data.script,
            style=data.style,
            model_id=data.model,
            aspect=data.aspect,
            resolution=data.resolution,
            target_seconds=data.target_seconds,
            voice=voice,
            speed=data.speed,
            music=data.music,
            podcast=data.podcast,
            speaker_voices=dict(data.speaker_voices),
            burn_subtitles=data.burn_subtitles,
            motion=data.motion,
            seed=data.seed if data.seed is not None else secrets.randbelow(2**32),
            status="draft",
            render_state={},
            outputs={},
            timeline={},
        )
        self._check_voices(project)
        asked = self._ask_prompts(project)
        collection = self.gallery.create_collection(owner_id, CollectionCreate(name=f"Film: {project.title}"[:120]))
        project.collection_id = collection.id
        with self.db.session() as session:
            session.add(project)
            session.flush()
            self._storyboard(session, project, asked)
            return self._view(session, project)

    def _ask_prompts(self, project: FilmProject) -> tuple[list[str], list[str]] | None:
        """(scene texts, the chat provider's prompts for them), or None: asked outside any transaction (an HTTP
        call must not hold a write lock), never failing (prompter.storyboard_prompts)."""
        texts = [d.text for d in _split(project)]
        prompts = storyboard_prompts(self.prompter, texts, style=project.style, title=project.title)
        return (texts, prompts) if prompts is not None else None

    def _storyboard(self, session: Session, project: FilmProject, asked: tuple[list[str], list[str]] | None) -> None:
        """The scenes split from the script (replacing any), their seeds following the film's seed; their prompts
        the provider's when it was asked about these very scene texts, else the rule-based ones."""
        for old in views.load_scenes(session, project.id):
            session.delete(old)
        session.flush()
        drafts = _split(project)
        prompts = asked[1] if asked and asked[0] == [d.text for d in drafts] else [d.prompt for d in drafts]
        for i, (draft, prompt) in enumerate(zip(drafts, prompts, strict=True)):
            session.add(
                FilmScene(
                    project_id=project.id,
                    owner_id=project.owner_id,
                    position=i,
                    text=draft.text,
                    prompt=prompt,
                    seed=(int(project.seed) + 1 + i) % 2**32,
                    planned_seconds=draft.planned_seconds,
                )
            )

    def list(self, owner_id: str, *, limit: int = 50, cursor: str | None = None, trashed: bool = False) -> FilmPage:
        with self.db.session() as session:
            stmt = select(FilmProject).where(FilmProject.owner_id == owner_id)
            stmt = stmt.where(FilmProject.deleted_at.is_not(None) if trashed else FilmProject.deleted_at.is_(None))
            if cursor:
                stmt = stmt.where(FilmProject.id < cursor)
            rows = list(session.scalars(stmt.order_by(FilmProject.id.desc()).limit(limit + 1)))
            page = rows[:limit]
            counts = {
                pid: (int(n), float(s or 0.0))
                for pid, n, s in session.execute(
                    select(FilmScene.project_id, func.count(), func.sum(FilmScene.planned_seconds))
                    .where(FilmScene.project_id.in_([p.id for p in page]))
                    .group_by(FilmScene.project_id)
                )
            }
            items = [views.film_summary(session, p, [counts[p.id]] if p.id in counts else []) for p in page]
        return FilmPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    def status_of(self, session: Session, project: FilmProject) -> str:
        """draft|rendering|rendered|failed|canceled, from the render job's row when there is one (views.status_of)."""
        return views.status_of(session, project)

    def require(self, owner_id: str, film_id: str) -> None:
        """404 film_not_found unless the film is the owner's (checked before a route reads an upload)."""
        with self.db.session() as session:
            self._owned(session, owner_id, film_id)

    def get(self, owner_id: str, film_id: str) -> FilmView:
        with self.db.session() as session:
            return self._view(session, self._owned(session, owner_id, film_id))

    def update(self, owner_id: str, film_id: str, patch: FilmPatch) -> FilmView:
        fields = patch.model_dump(exclude_unset=True)
        public = fields.pop("public", None)
        resplit = bool(fields.pop("resplit", False))
        if "script" in fields and fields["script"] is not None:
            self._check_scene_text(fields["script"], field="script")
        if fields.get("music") is not None:
            self._check_music(fields["music"])
        if fields.get("motion") is not None:
            self._check_motion(fields["motion"])
        asked = None
        if resplit:  # the storyboard's inputs as the patch leaves them, read (no lock) to ask the provider first
            with self.db.session() as session:
                current = self._owned(session, owner_id, film_id)
                keys = ("script", "target_seconds", "podcast", "speed", "title")
                probe = FilmProject(**{k: v if (v := fields.get(k)) is not None else getattr(current, k) for k in keys})
                probe.style = fields.get("style", current.style)  # null: the default style
            asked = self._ask_prompts(probe)
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            renamed = "title" in fields and fields["title"] is not None and fields["title"] != project.title
            for name, value in fields.items():
                if value is None and name not in ("style", "model", "seed"):
                    continue  # null leaves a required field as it is; style/model null: the default
                if name == "seed" and value is None:
                    continue
                setattr(project, "model_id" if name == "model" else name, value)
            if {"style", "model", "aspect"} & fields.keys():
                self._check_look(owner_id, project.style, project.model_id, project.aspect)
            if {"voice", "script", "podcast", "speaker_voices"} & fields.keys():
                self._check_voices(project)
            if public is not None:
                _set_public(project, public)
            if not resplit and {"speed", "podcast"} & fields.keys():
                for scene in views.load_scenes(session, project.id):  # their estimates follow the narration speed
                    scene.planned_seconds = sc.scene_seconds(scene.text, podcast=project.podcast, speed=project.speed)
            if resplit:
                self._storyboard(session, project, asked)
            project.updated_at = utcnow()
            view = self._view(session, project)
            collection_id, title = project.collection_id, project.title
        if renamed and collection_id:
            # The owner may have deleted the film's collection: the film keeps no other tie to it.
            with contextlib.suppress(NotFound):
                self.gallery.update_collection(owner_id, collection_id, CollectionPatch(name=f"Film: {title}"[:120]))
        return view

    # -- quote and render ----------------------------------------------------------------------
    def _quote(self, session: Session, owner_id: str, project: FilmProject) -> FilmQuote:
        scenes = views.load_scenes(session, project.id)
        characters = views.load_characters(session, project.id)
        images = views.scene_images(session, project, scenes, characters)
        due = [s for s in scenes if images[s.id].state in ("none", "stale", "failed")]
        image_credits = 0
        if due:
            probe = GenerationParams(
                prompt="film", style=project.style, model=project.model_id, aspect_ratio=project.aspect
            )
            params, model_id, _ = self.generation.prepare(owner_id, probe, "txt2img")
            gate = self.queue.gate
            factor = gate.factors.get(model_id, 1.0) if isinstance(gate, BillingGate) else 1.0
            each = cost.image_credits(int(params["width"]), int(params["height"]), int(params["steps"]), factor)
            image_credits = each * len(due)
        # The last finished render's settings are on its job row (params["settings"]): the same, and only what was
        # edited since or needs its image redoes its clip; else (or never rendered) every clip does.
        last = session.get(Job, project.render_job_id) if project.render_job_id else None
        same = (
            last is not None
            and last.status == "succeeded"
            and (last.params or {}).get("settings") == _settings_fingerprint(project)
            and project.rendered_at is not None
        )
        if same:
            at = project.rendered_at
            redo = [s for s in scenes if s in due or (at is not None and s.updated_at > at)]
        else:
            redo = scenes
        seconds = round(sum(s.planned_seconds for s in redo), 2)
        video = cost.film_credits(seconds, self.settings.film_credits_per_minute) if seconds > 0 else 0
        return FilmQuote(
            credits=image_credits + video,
            images=QuoteImages(count=len(due), credits=image_credits),
            video=QuoteVideo(seconds=seconds, credits=video),
        )

    def quote(self, owner_id: str, film_id: str) -> FilmQuote:
        with self.db.session() as session:
            return self._quote(session, owner_id, self._owned(session, owner_id, film_id))

    def _check_can_render(self) -> None:
        if not self.settings.film_enabled:
            raise ServiceUnavailable(
                "Film rendering is turned off here (STUDIOLO_FILM_ENABLED).", code="ffmpeg_missing"
            )

    def render(self, owner_id: str, film_id: str, *, idempotency_key: str | None = None) -> FilmRenderAccepted:
        """Queue the film's render: one job row of kind "film" through the billing gate (402/403 refusals as for
        images), holding the quote's video credits; 409 film_rendering while a render of it is queued or running."""
        gen = self.generation
        request_hash = None
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
            request_hash = submit_hash("film", {"film_id": film_id}, {})
            existing = gen.replay(owner_id, [idempotency_key], request_hash)
            if existing:
                with self.db.session() as session:
                    quote = self._quote(session, owner_id, self._owned(session, owner_id, film_id))
                return _accepted(film_id, existing[0].id, quote)
        self._check_can_render()
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            if project.deleted_at is not None:
                raise Conflict("This film is in the Trash: restore it to render it.", code="film_in_trash")
            if views.status_of(session, project) == "rendering":
                raise Conflict(
                    "This film is being rendered; cancel that render first or wait for it.",
                    code="film_rendering",
                    details={"job_id": project.render_job_id},
                )
            quote = self._quote(session, owner_id, project)
            params = {
                "film_id": project.id,
                "title": project.title,
                "prompt": f"Film: {project.title}",
                "negative_prompt": "",
                "final_prompt": f"Film: {project.title}",
                "final_negative_prompt": "",
                "width": views.frame_size(project.aspect, project.resolution)[0],
                "height": views.frame_size(project.aspect, project.resolution)[1],
                "steps": 1,
                "guidance": 0.0,
                "sampler": None,
                "strength": None,
                "n": 1,
                "tags": [],
                "seed": int(project.seed),
                "credits": quote.video.credits,
                "settings": _settings_fingerprint(project),  # what the next quote compares with (_quote)
            }
            row = queued_row(
                owner_id,
                "film",
                params,
                FILM_MODEL_ID,
                [int(project.seed)],
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                input_keys={},
                max_attempts=self.settings.max_attempts,
                now=utcnow(),
            )
            previous = (project.render_job_id, project.status, dict(project.render_state or {}))
            # Claimed first, under the row lock, so a second render request meets film_rendering (not a second job).
            project.render_job_id = row["id"]
            project.status = "rendering"
            project.render_state = {"job_id": row["id"], "stage": None, "stages": {}}
            project.error_code = project.error_message = None
        try:
            accepted, created = gen.insert_queued(owner_id, [row])
        except BaseException:
            with self.db.session() as session:
                project = self._owned(session, owner_id, film_id, for_update=True)
                if project.render_job_id == row["id"]:
                    project.render_job_id, project.status, project.render_state = previous
            raise
        if not created:  # an idempotent replay that raced: the other request's job is the render
            with self.db.session() as session:
                project = self._owned(session, owner_id, film_id, for_update=True)
                project.render_job_id = accepted[0].id
        return _accepted(film_id, accepted[0].id, quote)

    def cancel(self, owner_id: str, film_id: str) -> FilmView:
        """Cancel the film's render (queued: at once; running: at its next safe point) and its scenes' queued
        image jobs."""
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id)
            job_ids = [project.render_job_id] if project.render_job_id else []
            scene_jobs = [s.image_job_id for s in views.load_scenes(session, project.id) if s.image_job_id]
            if scene_jobs:
                live = session.scalars(select(Job.id).where(Job.id.in_(scene_jobs), Job.status == "queued"))
                job_ids += list(live)
        for job_id in job_ids:
            self.generation.cancel(owner_id, job_id)
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            if project.status == "rendering" and views.status_of(session, project) != "rendering":
                project.status = "canceled"
            return self._view(session, project)

    # -- Trash and sharing ---------------------------------------------------------------------
    def delete(self, owner_id: str, film_id: str) -> None:
        """To the Trash (idempotent); a render in progress is canceled."""
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            if project.deleted_at is None:
                project.deleted_at = utcnow()
            rendering = views.status_of(session, project) == "rendering"
        if rendering:
            self.cancel(owner_id, film_id)

    def restore(self, owner_id: str, film_id: str) -> FilmView:
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            project.deleted_at = None
            return self._view(session, project)

    def purge(self, owner_id: str, film_id: str) -> None:
        """Delete a film in the Trash for good: its rows and every object under ``films/<owner>/<film>/`` (its scene
        images stay in the gallery, where they are the owner's images)."""
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            if project.deleted_at is None:
                raise Conflict("Move the film to the Trash before deleting it for good.", code="film_not_in_trash")
            if views.status_of(session, project) == "rendering":
                raise Conflict("This film is being rendered; cancel it first.", code="film_rendering")
            session.delete(project)
        for key in list(self.store.iter_keys(f"films/{owner_id}/{film_id}/")):
            self.store.delete(key)
        self.db.checkpoint()

    def set_public(self, owner_id: str, film_id: str, public: bool) -> FilmView:
        with self.db.session() as session:
            project = self._owned(session, owner_id, film_id, for_update=True)
            _set_public(project, public)
            project.updated_at = utcnow()
            return self._view(session, project)

    def _shared(self, session: Session, token: str) -> FilmProject:
        project = session.scalar(select(FilmProject).where(FilmProject.share_token == token))
        if project is None or not project.public or project.deleted_at is not None:
            raise NotFound("No public film at this link.", code="film_not_found")
        return project

    def shared(self, token: str) -> SharedFilmView:
        with self.db.session() as session:
            project = self._shared(session, token)
            status = views.status_of(session, project)
            return SharedFilmView(
                title=project.title,
                status=status,
                aspect=project.aspect,
                outputs=views.outputs_view(project.outputs or {}, views.share_url(token) or ""),
                rendered_at=project.rendered_at,
            )

    # -- files ---------------------------------------------------------------------------------
    def _file(self, project: FilmProject, name: str) -> FilmFile:
        if name not in views.FILES:
            raise NotFound(
                f"No file '{name}': a film has {', '.join(views.FILES)}.",
                code="file_not_found",
                details={"name": name, "files": list(views.FILES)},
            )
        out_key, content_type = views.FILES[name]
        key = (project.outputs or {}).get(out_key)
        if not key:
            raise NotFound("This film has not been rendered yet.", code="no_render", details={"name": name})
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in project.title)[:60].strip("-") or "film"
        filename = f"{safe}{Path(name).suffix}" if name != "thumbnail.jpg" else f"{safe}-thumbnail.jpg"
        url = self.store.presigned_url(key, self.settings.s3_presign_seconds, filename)
        path = None if url is not None else self.store.local_path(key)
        return FilmFile(key=key, content_type=content_type, filename=filename, local_path=path, url=url)

    def file(self, owner_id: str, film_id: str, name: str) -> FilmFile:
        with self.db.session() as session:
            return self._file(self._owned(session, owner_id, film_id), name)

    def shared_file(self, token: str, name: str) -> FilmFile:
        with self.db.session() as session:
            return self._file(self._shared(session, token), name)

    def read(self, key: str) -> bytes:
        try:
            return self.store.get(key)
        except ObjectNotFound as exc:
            raise NotFound("This file of the film is missing from storage.", code="file_missing") from exc


def _voice_view(v: VoiceInfo) -> VoiceView:
    return VoiceView(
        id=v.id, name=v.name, language=v.language, gender=v.gender, age=v.age, engine=v.engine, quality=v.quality
    )


def _set_public(project: FilmProject, public: bool) -> None:
    """Public: a share link (a new one each time it is made public, so an old link stays dead); private: none."""
    if public and not project.public:
        project.share_token = secrets.token_urlsafe(24)
    elif not public:
        project.share_token = None
    project.public = public


def _accepted(film_id: str, job_id: str, quote: FilmQuote) -> FilmRenderAccepted:
    return FilmRenderAccepted(film_id=film_id, job_id=job_id, quote=quote, events_url=f"/api/v1/jobs/{job_id}/events")
