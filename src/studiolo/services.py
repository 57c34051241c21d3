"""The service graph, built once per process and shared by the API, the workers and the CLI."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from studiolo.datadir import secure_data_dir
from studiolo.db import migrate
from studiolo.db.session import Database
from studiolo.dispatch.base import JobDispatch
from studiolo.dispatch.inline import InlineDispatch
from studiolo.domain.accounts.admin import AdminService
from studiolo.domain.accounts.authn import Authenticator
from studiolo.domain.accounts.keys import ApiKeyService
from studiolo.domain.accounts.mail import Mailer, MailOutbox, build_mailer
from studiolo.domain.accounts.oauth import OAuthService
from studiolo.domain.accounts.passwords import PasswordHashing
from studiolo.domain.accounts.ratelimit import RateLimiter
from studiolo.domain.accounts.service import AccountService
from studiolo.domain.accounts.tokens import TokenCodec, load_secret_key
from studiolo.domain.adapters.catalog import AdapterCatalog
from studiolo.domain.billing.service import BillingService
from studiolo.domain.film.models import FILM_MODEL_ID
from studiolo.domain.film.pipeline import FilmRenderer
from studiolo.domain.film.prompter import build_scene_prompter
from studiolo.domain.film.service import FilmService
from studiolo.domain.film.youtube import YouTubeService
from studiolo.domain.gallery.service import GalleryService
from studiolo.domain.generation.admin import JobAdminService
from studiolo.domain.generation.analytics import AnalyticsService
from studiolo.domain.generation.catalog import ModelCatalog
from studiolo.domain.generation.events import EventBus
from studiolo.domain.generation.pool import WorkerPool
from studiolo.domain.generation.queue import JobQueue
from studiolo.domain.generation.served import ServedModels
from studiolo.domain.generation.service import GenerationService
from studiolo.domain.generation.upscale import UpscaleService
from studiolo.domain.generation.worker import JobRunner
from studiolo.domain.safety import invisible
from studiolo.domain.safety.nsfw import build_nsfw_classifier
from studiolo.domain.safety.outputs import OutputGuard
from studiolo.domain.safety.prompts import build_prompt_moderator
from studiolo.domain.safety.provenance import build_credentials
from studiolo.domain.safety.terms import owner_terms
from studiolo.domain.safety.visible import visible_mark
from studiolo.domain.understanding.service import DescribeService, build_describer
from studiolo.domain.webhooks.service import WebhookService
from studiolo.domain.webhooks.signing import SecretBox
from studiolo.engines.base import Engine
from studiolo.engines.ffmpeg import find_ffmpeg
from studiolo.engines.image_to_video import SVDImageToVideo
from studiolo.engines.music import MOODS, build_music_engine
from studiolo.engines.speech import build_speech_catalog
from studiolo.errors import StudioloError
from studiolo.settings import Settings
from studiolo.storage.base import ObjectStore
from studiolo.storage.factory import build_object_store

if TYPE_CHECKING:
    from studiolo.dispatch.redis_events import RedisEventRelay
    from studiolo.domain.webhooks.deliverer import Deliverer

log = logging.getLogger(__name__)


def default_engines(settings: Settings) -> dict[str, Engine]:
    """The engines this process offers. Importing the diffusers engine does not import torch."""
    from studiolo.engines.diffusers_engine import DiffusersEngine
    from studiolo.engines.threads import quiet_openmp_waits

    # Before any engine imports torch: its OpenMP threads then sleep, not spin, between operations, so they
    # take no core from the API's event loop or other processes (issue 13, engines/threads.py).
    quiet_openmp_waits()

    engines: dict[str, Engine] = {
        "diffusers": DiffusersEngine(
            device=settings.device,
            memory_budget_bytes=settings.model_memory_budget_mb * 2**20,
            cpu_accel=settings.cpu_accel,
            accel_cache_dir=settings.accel_cache_dir,
            threads=settings.torch_threads,
            gpu_compile=settings.gpu_compile,
        )
    }
    if settings.enable_echo_engine:
        from studiolo.engines.echo import EchoEngine

        engines["echo"] = EchoEngine(step_delay=settings.echo_step_delay)
    # The built-in demo model's engine (issue 6): cheap to construct, it loads its weights on first use,
    # and the catalog only offers the model when the packaged weights exist.
    from studiolo.engines.demo import DemoEngine

    engines["demo"] = DemoEngine(threads=settings.demo_threads)
    # The built-in upscaler (Pillow only), offered by GET /upscalers and never listed with the models.
    from studiolo.engines.upscale import LanczosUpscaleEngine

    engines[LanczosUpscaleEngine.name] = LanczosUpscaleEngine()
    # ESRGAN-family upscaler files (engines/esrgan.py); torch is imported only when one is loaded.
    from studiolo.engines.esrgan import EsrganUpscaleEngine

    engines[EsrganUpscaleEngine.name] = EsrganUpscaleEngine(device=settings.device)
    # Hosted providers whose settings offer them (issue 18, engines/remote): imported only when offered.
    from studiolo.engines.remote import remote_engines

    engines.update(remote_engines(settings))
    return engines


def build_dispatch(settings: Settings) -> JobDispatch:
    if settings.dispatch == "celery":
        from studiolo.dispatch.celery import CeleryDispatch

        return CeleryDispatch(settings)
    return InlineDispatch()


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ObjectStore
    dispatch: JobDispatch
    events: EventBus
    engines: dict[str, Engine]
    catalog: ModelCatalog
    adapters: AdapterCatalog
    queue: JobQueue
    gallery: GalleryService
    generation: GenerationService
    runner: JobRunner
    codec: TokenCodec
    authenticator: Authenticator
    limiter: RateLimiter
    outbox: MailOutbox
    accounts: AccountService
    keys: ApiKeyService
    admin: AdminService
    oauth: OAuthService
    job_admin: JobAdminService
    analytics: AnalyticsService
    upscale: UpscaleService
    billing: BillingService
    film: FilmService
    youtube: YouTubeService
    describe: DescribeService
    webhooks: WebhookService
    event_relay: RedisEventRelay | None = None  # set when STUDIOLO_REDIS_URL is
    pools: list[WorkerPool] = field(default_factory=list)
    deliverer: Deliverer | None = None  # webhook delivery, started with the first workers

    def start_workers(self, count: int, *, claim_loops: bool = True, served: ServedModels | None = None) -> WorkerPool:
        """``count`` workers; ``served``: only the models it lists (`studiolo worker`), else any model."""
        pool = WorkerPool(
            db=self.db,
            queue=self.queue,
            runner=self.runner,
            dispatch=self.dispatch,
            settings=self.settings,
            served=served,
        )
        pool.start(count, claim_loops=claim_loops)
        self.pools.append(pool)
        if self.settings.preload_default_model and claim_loops:
            threading.Thread(target=self.preload_default_model, args=(served,), name="preload", daemon=True).start()
        if self.deliverer is None and self.settings.webhooks_enabled:
            self.deliverer = self.build_deliverer()
            self.deliverer.start()
        return pool

    def preload_default_model(self, served: ServedModels | None = None) -> bool:
        """Load the default model now if it is a local diffusers model this process serves; True if it loaded.

        Run in the background when workers start: the first job then finds torch, diffusers and the model (and
        its accelerated CPU path) ready instead of waiting for them. Failures are only logged: the first job that
        needs the model loads it again and reports what is wrong.
        """
        try:
            model = self.catalog.resolve(None)
        except StudioloError:
            return False  # no default model installed: nothing to warm up
        engine = self.engines.get(model.engine)
        if model.engine != "diffusers" or engine is None or (served is not None and not served.serves(model.id)):
            return False
        started = time.monotonic()
        try:
            engine.load(model)
        except Exception as exc:  # noqa: BLE001 - logged: a background warm-up must not take the process down
            log.warning("preloading default model %s failed: %s", model.id, exc)
            return False
        log.info("default model %s loaded in the background in %.1f s", model.id, time.monotonic() - started)
        return True

    def build_deliverer(self, **overrides: Any) -> Deliverer:
        """The webhook deliverer of this process (tests pass a clock, a transport or a random source)."""
        # Imported here: the outbox builds signed image links (gallery/links.py), whose router imports deps, which
        # imports this module.
        from studiolo.domain.webhooks.deliverer import Deliverer
        from studiolo.domain.webhooks.outbox import Outbox

        clock = overrides.pop("clock", self.webhooks.clock)
        outbox = Outbox(self.db, self.settings, self.codec, self.webhooks, clock)
        return Deliverer(
            db=self.db,
            service=self.webhooks,
            outbox=outbox,
            mail=self.outbox,
            events=self.events,
            clock=clock,
            **overrides,
        )

    def film_job_models(self) -> list[str]:
        """The film render's pseudo-model where this process can render films (ffmpeg found), else none."""
        renderer = self.runner.handlers.get("film")
        return [FILM_MODEL_ID] if isinstance(renderer, FilmRenderer) and renderer.ffmpeg is not None else []

    def close(self, timeout: float = 30.0) -> None:
        for pool in self.pools:
            pool.stop(timeout)
        self.pools.clear()
        if self.deliverer is not None:
            self.deliverer.stop()
            self.deliverer = None
        self.youtube.close()
        self.runner.close()
        self.dispatch.close()
        if self.event_relay is not None:
            self.event_relay.close()
        self.outbox.close()
        self.db.dispose()


def build_services(
    settings: Settings,
    *,
    engines: dict[str, Engine] | None = None,
    upgrade_db: bool = True,
    mailer: Mailer | None = None,
) -> Services:
    secure_data_dir(settings)  # 0700 directory, 0600 database, before anything is written there
    url = settings.resolved_database_url
    if upgrade_db:
        migrate.upgrade(url)
    db = Database(url)
    store = build_object_store(settings)
    dispatch = build_dispatch(settings)
    events = EventBus()
    event_relay = None
    if settings.redis_url:
        # Events cross processes through Redis: workers publish, API processes subscribe (create_app starts it).
        from studiolo.dispatch.redis_events import RedisEventRelay

        event_relay = RedisEventRelay(settings.redis_url, events)
        events.relay = event_relay.publish
    engines = engines if engines is not None else default_engines(settings)
    catalog = ModelCatalog(db, settings, engines)
    adapters = AdapterCatalog(db, settings)  # issue 19: LoRAs, embeddings, ControlNets, IP-Adapters
    queue = JobQueue(
        db,
        lease_seconds=settings.lease_seconds,
        retry_backoff_seconds=settings.retry_backoff_seconds,
        position_limit=settings.queue_position_limit,
    )
    billing = BillingService(db, settings)
    billing.sync_catalogue()
    if billing.enabled:
        queue.gate = billing
    gallery = GalleryService(db, store, trash_days=settings.trash_days)
    generation = GenerationService(
        db=db,
        settings=settings,
        queue=queue,
        dispatch=dispatch,
        events=events,
        catalog=catalog,
        gallery=gallery,
        store=store,
        engines=engines,
        moderator=build_prompt_moderator(settings),
        adapters=adapters,
    )
    runner = JobRunner(
        db=db,
        settings=settings,
        queue=queue,
        catalog=catalog,
        engines=engines,
        gallery=gallery,
        store=store,
        events=events,
        dispatch=dispatch,
        adapters=adapters,
    )
    codec = TokenCodec(load_secret_key(settings), settings.access_token_minutes)
    webhooks = WebhookService(db, settings, SecretBox(codec.key))
    generation.webhooks = webhooks
    authenticator = Authenticator(db, codec)
    hashing = PasswordHashing(settings)
    limiter = RateLimiter(settings)
    outbox = MailOutbox(mailer or build_mailer(settings))
    accounts = AccountService(
        db=db,
        settings=settings,
        hashing=hashing,
        codec=codec,
        outbox=outbox,
        limiter=limiter,
        on_user_changed=authenticator.forget,
        on_session_ended=authenticator.forget_session,
        on_key_revoked=authenticator.forget_key,
    )
    admin = AdminService(
        db=db,
        accounts=accounts,
        hashing=hashing,
        codec=codec,
        gallery=gallery,
        store=store,
        on_user_changed=authenticator.forget,
    )
    speech = build_speech_catalog(settings)
    film = FilmService(
        db=db,
        settings=settings,
        store=store,
        generation=generation,
        gallery=gallery,
        queue=queue,
        speech=speech,
        music_moods=MOODS,
        events=events,
        prompter=build_scene_prompter(settings),
    )
    # The film renderer (issue 16): a "film" job is run by it in the same workers as images, where ffmpeg is found.
    runner.handlers["film"] = FilmRenderer(
        db=db,
        settings=settings,
        store=store,
        generation=generation,
        speech=speech,
        music=build_music_engine(settings),
        find_ffmpeg=(lambda: find_ffmpeg(settings.film_ffmpeg)) if settings.film_enabled else (lambda: None),
        catalog=catalog,
        # Constructing it loads nothing: a model's pipeline is loaded by the first film that moves with it.
        motion=SVDImageToVideo(device=settings.device, memory_budget_bytes=settings.model_memory_budget_mb * 2**20),
    )
    # The output check every generated image passes before it is stored (issue 17, safety/outputs.py).
    invisible_on = settings.watermark_invisible
    runner.guard = OutputGuard(
        classifier=build_nsfw_classifier(settings),
        threshold=settings.nsfw_threshold,
        credentials=build_credentials(settings),
        mark=None if settings.watermark_visible == "never" else visible_mark(settings),
        payload=invisible.payload_for(settings.watermark_payload, codec.key.encode()) if invisible_on else None,
        terms=owner_terms(db, settings),
    )
    return Services(
        settings=settings,
        db=db,
        store=store,
        dispatch=dispatch,
        events=events,
        engines=engines,
        catalog=catalog,
        adapters=adapters,
        queue=queue,
        gallery=gallery,
        generation=generation,
        runner=runner,
        codec=codec,
        authenticator=authenticator,
        limiter=limiter,
        outbox=outbox,
        accounts=accounts,
        keys=ApiKeyService(db, on_revoked=authenticator.forget_key),
        admin=admin,
        oauth=OAuthService(settings, db=db, accounts=accounts, codec=codec),
        youtube=YouTubeService(db=db, settings=settings, store=store, secret_key=codec.key),
        job_admin=JobAdminService(db, generation),
        analytics=AnalyticsService(db),
        upscale=UpscaleService(generation),
        billing=billing,
        film=film,
        describe=DescribeService(db, store, settings, build_describer(settings), billing),
        webhooks=webhooks,
        event_relay=event_relay,
    )
