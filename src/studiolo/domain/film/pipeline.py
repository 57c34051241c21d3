"""The film render (issue 16): one durable job of kind "film", run by the worker through ``FilmRenderer``.

Stages, in order: images -> narration -> music -> mix -> motion -> subtitles -> encode -> thumbnail -> check.

Every artefact a stage makes is stored under a key that is the hash of what decides it (the sentence and voice for a
narrated sentence, the image and motion and timing for a clip, ...), in the film's cache folder of the object store.
A stage whose object exists is not redone. So a crash, a SIGKILLed worker or a restart resumes where it stopped (the
job is retried by the queue; tests/integration/test_film_pipeline.py counts the engine calls of the second run),
and an edit redoes only what it changed: a new image for scene k re-renders clips k-1 and k, re-narrates nothing.

Scene images are generation jobs of their own (scene_images.py): the render queues those still missing and gives
its worker back (handlers.Waiting) until they are made, so even a single worker never waits on itself.

Timeline: scene k owns a slot [T_k, T_k+1) of whole frames. Its narration starts LEAD seconds in; the slot ends
TAIL seconds after the narration (the crossfade into the next scene happens in those last seconds), and lasts at
least MIN_SLOT. The film lasts exactly the sum of the slots, which the final check verifies with ffprobe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.film import render, script, subtitles
from studiolo.domain.film.models import FilmCharacter, FilmProject, FilmScene
from studiolo.domain.film.motion import KEN_BURNS, Motion
from studiolo.domain.film.scene_images import (
    image_state,
    named_character,
    record_scene_job,
    scene_image_hash,
    submit_scene_image,
)
from studiolo.domain.film.stages import Stages
from studiolo.domain.film.timeline import (
    LEAD,
    SAMPLE_RATE,
    SENTENCE_PAUSE,
    SPEAKER_PAUSE,
    NarratedScene,
    Timeline,
    plan_timeline,
    resample,
)
from studiolo.domain.gallery.models import Image
from studiolo.domain.generation.catalog import ModelCatalog
from studiolo.domain.generation.handlers import JobContext, Waiting
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.service import GenerationService
from studiolo.engines import ffmpeg as ff_engine
from studiolo.engines.base import EngineError, GenerationCanceled
from studiolo.engines.image_to_video import ImageToVideo, MotionModel, motion_models
from studiolo.engines.music import MusicEngine, MusicSpec
from studiolo.engines.speech import SpeechCatalog
from studiolo.errors import NotFound, StudioloError
from studiolo.settings import Settings
from studiolo.storage.base import ObjectStore

log = logging.getLogger(__name__)

CROSSFADE = 0.5
THUMBNAIL_AT = 3.0
IMAGE_POLL_SECONDS = 1.0  # how soon a render waiting for its scene images looks again
# Bumped when the pipeline's own output for the same inputs changes, so old cached artefacts are not reused.
PIPELINE_VERSION = "1"


def _sha(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class FilmRenderer:
    """The worker's handler of "film" jobs (handlers.KindHandler)."""

    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        store: ObjectStore,
        generation: GenerationService,
        speech: SpeechCatalog,
        music: MusicEngine,
        find_ffmpeg: Callable[[], ff_engine.FFmpeg | None],
        catalog: ModelCatalog,
        motion: ImageToVideo | None = None,
    ):
        self.db = db
        self.settings = settings
        self.store = store
        self.generation = generation
        self.speech = speech
        self.music = music
        # Looked for on first use, not when the services are built: every process (API, CLI, tests) builds them,
        # and only workers that render a film need ffmpeg (the search runs it once or twice).
        self._find_ffmpeg = find_ffmpeg
        self.catalog = catalog
        self.motion = motion  # image-to-video for films whose motion names a model (motion.py)

    @cached_property
    def ffmpeg(self) -> ff_engine.FFmpeg | None:
        """The ffmpeg this worker renders with; None where none runs (or films are disabled)."""
        return self._find_ffmpeg()

    # -- the handler --------------------------------------------------------------------------------------------

    def run(self, job: Job, ctx: JobContext) -> Waiting | None:
        if self.ffmpeg is None:
            raise EngineError(
                "This worker found no ffmpeg, so it cannot render films (see docs/film.md).",
                code="ffmpeg_missing",
                retryable=False,
            )
        # Short transactions only: the scene images are submitted (their own transactions) between them, and on
        # SQLite a write held open across those would wait on itself.
        with self.db.session() as session:
            previous = dict(self._project(session, job).render_state or {})
        stages = Stages(self.db, job.params["film_id"], job.id, ctx, previous)
        waiting = self._images(job, stages, ctx)
        if waiting is not None:
            return waiting
        with self.db.session() as session:
            project = self._project(session, job)
            scenes = self._scenes(session, project)
            images = self._image_keys(session, scenes)
            session.expunge_all()
        with self._workdir() as work:
            result = self._render(project, scenes, images, stages, ctx, work)
        self._commit(job, project, scenes, result, stages)
        return None

    def ended(self, job_id: str, status: str, code: str | None, message: str | None) -> None:
        """A failed or canceled render: its scenes' images still queued are canceled with it."""
        with self.db.session() as session:
            project = session.scalar(select(FilmProject).where(FilmProject.render_job_id == job_id))
            if project is None:
                return
            project.error_code, project.error_message = code, message
            owner_id = project.owner_id
            pending = session.scalars(
                select(Job.id).where(
                    Job.id.in_(select(FilmScene.image_job_id).where(FilmScene.project_id == project.id)),
                    Job.status.in_(("queued", "running")),
                )
            ).all()
        if status == "canceled":
            for image_job in pending:
                with contextlib.suppress(StudioloError):  # it ended meanwhile
                    self.generation.cancel(owner_id, image_job)

    # -- reading the project ----------------------------------------------------------------------------------

    def _project(self, session: Any, job: Job) -> FilmProject:
        project: FilmProject | None = session.get(FilmProject, job.params["film_id"])
        if project is None or project.owner_id != job.owner_id or project.deleted_at is not None:
            raise EngineError("The film was deleted before it was rendered.", code="film_not_found", retryable=False)
        return project

    @staticmethod
    def _scenes(session: Any, project: FilmProject) -> list[FilmScene]:
        scenes = list(
            session.scalars(
                select(FilmScene).where(FilmScene.project_id == project.id).order_by(FilmScene.position, FilmScene.id)
            )
        )
        if not scenes:
            raise EngineError("The film has no scenes to render.", code="empty_script", retryable=False)
        return scenes

    @staticmethod
    def _image_keys(session: Any, scenes: list[FilmScene]) -> dict[str, str]:
        """Scene id -> the object key of its image (all ready: _images made sure)."""
        ids = [s.image_id for s in scenes]
        keys = dict(session.execute(select(Image.id, Image.original_key).where(Image.id.in_(ids))).all())
        return {s.id: keys[s.image_id] for s in scenes}

    # -- stage 1: images -------------------------------------------------------------------------------------

    def _images(self, job: Job, stages: Stages, ctx: JobContext) -> Waiting | None:
        """Make sure every scene has its image: record those made, queue those missing or stale; Waiting while any
        is still being made."""
        with self.db.session() as session:
            project = self._project(session, job)
            scenes = self._scenes(session, project)
            characters = list(session.scalars(select(FilmCharacter).where(FilmCharacter.project_id == project.id)))
            todo: list[tuple[FilmScene, FilmCharacter | None]] = []
            ready: list[str] = []
            for scene in scenes:
                character = named_character(scene, characters)
                state = image_state(session, project, scene, scene_image_hash(project, scene, character))
                if state.state == "ready" and state.image_id:
                    ready.append(state.image_id)
                elif state.state == "failed":
                    raise EngineError(
                        f"The image of scene {scene.position + 1} failed: {state.error}",
                        code=state.code or "scene_image_failed",
                        retryable=False,
                    )
                elif state.state in ("none", "stale"):
                    todo.append((scene, character))
            session.flush()
            session.expunge_all()
        stages.begin("images", len(scenes))
        stages.step("images", len(ready))
        for scene, character in todo:
            if ctx.should_stop():
                raise GenerationCanceled()
            try:
                job_id, wanted = submit_scene_image(self.generation, self.store, project, scene, character)
            except StudioloError as exc:  # a billing refusal, a model gone: the render cannot go on
                raise EngineError(
                    f"The image of scene {scene.position + 1} could not be queued: {exc.message}",
                    code=exc.code or "scene_image_failed",
                    retryable=False,
                ) from exc
            with self.db.session() as session:
                record_scene_job(session, scene.id, job_id, wanted)
        if len(ready) < len(scenes):
            return Waiting(IMAGE_POLL_SECONDS, f"scene images: {len(ready)} of {len(scenes)} ready")
        stages.end("images")
        if project.collection_id:
            # The owner may have deleted the film's collection (or trashed an image just now): the images stay in
            # the gallery either way.
            with contextlib.suppress(NotFound):
                self.generation.gallery.add_to_collection(project.owner_id, project.collection_id, ready)
        return None

    # -- the media stages -------------------------------------------------------------------------------------

    def _cache_key(self, project: FilmProject, kind: str, digest: str, ext: str) -> str:
        return f"films/{project.owner_id}/{project.id}/cache/{kind}-{digest}.{ext}"

    def _fetch(self, key: str, work: Path, name: str) -> Path:
        """A local path to the stored object ``key`` (the store's own file when it has one)."""
        local = self.store.local_path(key)
        if local is not None and local.exists():
            return local
        path = work / name
        path.write_bytes(self.store.get(key))
        return path

    def _put_file(self, key: str, path: Path, content_type: str) -> None:
        self.store.put(key, path.read_bytes(), content_type)

    def _narrate(
        self, project: FilmProject, scenes: list[FilmScene], stages: Stages, ctx: JobContext, work: Path
    ) -> list[NarratedScene]:
        stages.begin("narration", len(scenes))
        voices = dict(project.speaker_voices or {})
        narrated: list[NarratedScene] = []
        for i, scene in enumerate(scenes):
            parts: list[np.ndarray] = []
            cues: list[subtitles.Cue] = []
            t = 0.0
            previous_speaker: str | None = None
            for line_no, line in enumerate(script.parse_lines(scene.text, podcast=project.podcast)):
                voice = voices.get(line.speaker or "", project.voice) if line.speaker else project.voice
                for sentence in script.sentences(line.text):
                    if ctx.should_stop():
                        raise GenerationCanceled()
                    if parts:
                        pause = SPEAKER_PAUSE if (line_no and line.speaker != previous_speaker) else SENTENCE_PAUSE
                        parts.append(np.zeros(round(pause * SAMPLE_RATE), dtype=np.float32))
                        t += pause
                    samples = self._sentence(project, voice, sentence, work)
                    parts.append(samples)
                    seconds = len(samples) / SAMPLE_RATE
                    cues.extend(subtitles.split_cue(t, t + seconds, sentence))
                    t += seconds
                    previous_speaker = line.speaker
            audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
            narrated.append(NarratedScene(audio, cues))
            stages.step("narration", i + 1)
        stages.end("narration")
        return narrated

    def _sentence(self, project: FilmProject, voice: str, sentence: str, work: Path) -> np.ndarray:
        """One sentence spoken (SAMPLE_RATE mono), from the cache when it was spoken before with the same voice."""
        key = self._cache_key(project, "tts", _sha(PIPELINE_VERSION, voice, project.speed, sentence), "wav")
        if self.store.exists(key):
            samples, rate = ff_engine.read_wav(self._fetch(key, work, "tts.wav"))
            return resample(samples, rate)
        speech = self.speech.synthesize(sentence, voice, speed=project.speed)
        samples = resample(speech.samples, speech.sample_rate)
        path = work / "tts-new.wav"
        ff_engine.write_wav(path, samples, SAMPLE_RATE)
        self._put_file(key, path, "audio/wav")
        # What a later render reads from the cache (16-bit), not the float samples: the narration track, and so the
        # mix's cache key, must come out the same whether the sentence was spoken now or before.
        stored, _ = ff_engine.read_wav(path)
        return stored

    def _render(
        self,
        project: FilmProject,
        scenes: list[FilmScene],
        images: dict[str, str],
        stages: Stages,
        ctx: JobContext,
        work: Path,
    ) -> _Result:
        assert self.ffmpeg is not None
        ff = self.ffmpeg
        stop = ctx.should_stop
        frame = render.frame_for(project.aspect, project.resolution)
        narrated = self._narrate(project, scenes, stages, ctx, work)
        timeline = plan_timeline(narrated, frame.fps)
        seconds = timeline.seconds

        # The narration track on the film's clock.
        track = np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)
        for start, scene_audio in zip(timeline.starts, narrated, strict=True):
            at = round((start + LEAD) * SAMPLE_RATE)
            end = min(len(track), at + len(scene_audio.samples))
            track[at:end] = scene_audio.samples[: end - at]
        narration_path = work / "narration.wav"
        ff_engine.write_wav(narration_path, track, SAMPLE_RATE)
        narration_digest = hashlib.sha256(narration_path.read_bytes()).hexdigest()

        # Music.
        music_path: Path | None = None
        music_digest = "none"
        if project.music != "none":
            stages.begin("music", 1)
            music = MusicSpec(mood=project.music, seconds=seconds, seed=project.seed)
            music_digest = _sha(PIPELINE_VERSION, self.music.name, music.mood, round(seconds, 3), music.seed)
            key = self._cache_key(project, "music", music_digest, "wav")
            if self.store.exists(key):
                music_path = self._fetch(key, work, "music.wav")
                stages.end("music", "cached")
            else:
                music_path = work / "music.wav"
                ff_engine.write_wav(music_path, self.music.render(music, SAMPLE_RATE), SAMPLE_RATE)
                self._put_file(key, music_path, "audio/wav")
                stages.end("music")
        else:
            stages.begin("music", 0)
            stages.end("music", "skipped")
        if stop():
            raise GenerationCanceled()

        # Mix.
        stages.begin("mix", 1)
        mix_digest = _sha(PIPELINE_VERSION, narration_digest, music_digest, round(seconds, 3))
        mix_key = self._cache_key(project, "mix", mix_digest, "m4a")
        if self.store.exists(mix_key):
            stages.end("mix", "cached")
        else:
            out = work / "mix.m4a"
            render.mix(ff, narration_path, music_path, seconds, out, should_stop=stop)
            self._put_file(mix_key, out, "audio/mp4")
            stages.end("mix")

        # Motion: one clip per scene slot, crossfades inside (render.py).
        shots: list[render.Shot] = []
        for scene, start, slot, cues in zip(scenes, timeline.starts, timeline.slots, timeline.cues, strict=True):
            image_path = self._fetch(images[scene.id], work, f"scene-{scene.id}.png")
            shots.append(
                render.Shot(
                    image=image_path,
                    image_hash=images[scene.id],  # content-addressed already: the key names the bytes
                    seconds=slot,
                    motion_seed=(int(scene.seed) ^ int(project.seed)) % 2**32,
                    cues=tuple(subtitles.Cue(c.start - start, c.end - start, c.text) for c in cues),
                )
            )
        motion = Motion(ff, frame, work, engine=self.motion, model=self._motion_model(project), should_stop=stop)
        specs = motion.plan(shots, crossfade=CROSSFADE, burn=project.burn_subtitles)
        stages.begin("motion", len(specs))
        clip_keys: list[str] = []
        made = 0
        for i, spec in enumerate(specs):
            if stop():
                raise GenerationCanceled()
            key = self._cache_key(project, "clip", _sha(PIPELINE_VERSION, spec.key()), "mp4")
            if not self.store.exists(key):
                out = work / f"clip-{i}.mp4"
                motion.render_clip(spec, out)
                self._put_file(key, out, "video/mp4")
                made += 1
            clip_keys.append(key)
            stages.step("motion", i + 1)
        stages.end("motion", "done" if made else "cached")

        # Subtitles.
        stages.begin("subtitles", 1)
        all_cues = [c for cues in timeline.cues for c in cues]
        srt_text, vtt_text = subtitles.to_srt(all_cues), subtitles.to_vtt(all_cues)
        srt_key = self._cache_key(project, "srt", _sha(srt_text), "srt")
        vtt_key = self._cache_key(project, "vtt", _sha(vtt_text), "vtt")
        self.store.put(srt_key, srt_text.encode(), "application/x-subrip")
        self.store.put(vtt_key, vtt_text.encode(), "text/vtt")
        stages.end("subtitles")

        # Encode: the clips joined without re-encoding, the mix and the soft subtitles muxed in.
        stages.begin("encode", 1)
        film_digest = _sha(PIPELINE_VERSION, clip_keys, mix_key, srt_key)
        mp4_key = self._cache_key(project, "film", film_digest, "mp4")
        mp4_path = work / "film.mp4"
        if self.store.exists(mp4_key):
            mp4_path = self._fetch(mp4_key, work, "film.mp4")
            stages.end("encode", "cached")
        else:
            clips = [self._fetch(k, work, f"clip-in-{i}.mp4") for i, k in enumerate(clip_keys)]
            silent = work / "video.mp4"
            render.concat(ff, clips, silent)
            if stop():
                raise GenerationCanceled()
            srt_path = work / "film.srt"
            srt_path.write_text(srt_text, encoding="utf-8")
            render.mux(ff, silent, self._fetch(mix_key, work, "mix-in.m4a"), mp4_path, subtitles=srt_path)
            self._put_file(mp4_key, mp4_path, "video/mp4")
            stages.end("encode")

        # Thumbnail.
        stages.begin("thumbnail", 1)
        thumb_key = self._cache_key(project, "thumb", film_digest, "jpg")
        if self.store.exists(thumb_key):
            stages.end("thumbnail", "cached")
        else:
            thumb = work / "thumbnail.jpg"
            render.thumbnail(ff, mp4_path, thumb, at=min(THUMBNAIL_AT, seconds / 2))
            self._put_file(thumb_key, thumb, "image/jpeg")
            stages.end("thumbnail")

        # Check: what ffprobe says of the MP4 is what was planned.
        stages.begin("check", 1)
        probe = render.quality_check(ff, mp4_path, seconds=seconds, frame=frame)
        stages.end("check")
        return _Result(
            timeline=timeline,
            narration_seconds=[n.seconds for n in narrated],
            outputs={
                "mp4": mp4_key,
                "srt": srt_key,
                "vtt": vtt_key,
                "thumb": thumb_key,
                "duration": round(probe.duration, 3),
                "width": probe.width,
                "height": probe.height,
                "bytes": mp4_path.stat().st_size,
            },
            keep={*clip_keys, mix_key, srt_key, vtt_key, mp4_key, thumb_key},
        )

    def _motion_model(self, project: FilmProject) -> MotionModel | None:
        """The image-to-video model the film's motion names; None for Ken Burns."""
        if project.motion == KEN_BURNS:
            return None
        found = {m.id: m for m in motion_models(self.catalog)}.get(project.motion)
        if found is None or self.motion is None:
            raise EngineError(
                f"The motion model '{project.motion}' is not installed on this worker; choose another motion or "
                "Ken Burns.",
                code="motion_model_unavailable",
                retryable=False,
            )
        return found

    # -- the end ----------------------------------------------------------------------------------------------

    def _commit(self, job: Job, project: FilmProject, scenes: list[FilmScene], result: _Result, stages: Stages) -> None:
        with self.db.session() as session:
            row = session.get(FilmProject, project.id)
            if row is None or row.render_job_id != job.id:
                return  # another render of it started meanwhile: that one's result counts
            row.outputs = result.outputs
            row.timeline = result.timeline.as_dict([s.id for s in scenes])
            row.status = "rendered"
            row.rendered_at = utcnow()
            row.error_code = row.error_message = None
            row.render_state = {"job_id": job.id, "stage": None, "stages": stages.stages}
            for scene, seconds in zip(scenes, result.narration_seconds, strict=True):
                live = session.get(FilmScene, scene.id)
                if live is not None:
                    live.narration_seconds = round(seconds, 3)
        self._prune(project, result.keep)

    def _prune(self, project: FilmProject, keep: set[str]) -> None:
        """Delete the film's cached clips, mixes and old outputs this render no longer uses (narrated sentences and
        music stay: an edit usually reuses them)."""
        prefix = f"films/{project.owner_id}/{project.id}/cache/"
        for key in list(self.store.iter_keys(prefix)):
            kind = key[len(prefix) :].split("-", 1)[0]
            if kind in ("tts", "music") or key in keep:
                continue
            try:
                self.store.delete(key)
            except Exception:  # a leftover costs disk, not correctness
                log.warning("could not delete an old film artefact %s", key, exc_info=True)

    @contextmanager
    def _workdir(self) -> Iterator[Path]:
        base = self.settings.data_dir / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="film-", dir=base))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class _Result:
    timeline: Timeline
    narration_seconds: list[float]
    outputs: dict[str, Any]
    keep: set[str]
