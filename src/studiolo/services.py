"""The service graph, built once per process and shared by the API, the workers and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from studiolo.db import migrate
from studiolo.db.session import Database
from studiolo.dispatch.base import JobDispatch
from studiolo.dispatch.inline import InlineDispatch
from studiolo.domain.gallery.service import GalleryService
from studiolo.domain.generation.catalog import ModelCatalog
from studiolo.domain.generation.events import EventBus
from studiolo.domain.generation.queue import JobQueue
from studiolo.domain.generation.service import GenerationService
from studiolo.domain.generation.worker import JobRunner, WorkerPool
from studiolo.engines.base import Engine
from studiolo.settings import Settings
from studiolo.storage.base import ObjectStore
from studiolo.storage.local import LocalObjectStore

log = logging.getLogger(__name__)


def default_engines(settings: Settings) -> dict[str, Engine]:
    """The engines this process offers. Importing the diffusers engine does not import torch."""
    from studiolo.engines.diffusers_engine import DiffusersEngine

    engines: dict[str, Engine] = {
        "diffusers": DiffusersEngine(
            device=settings.device, memory_budget_bytes=settings.model_memory_budget_mb * 2**20
        )
    }
    if settings.enable_echo_engine:
        from studiolo.engines.echo import EchoEngine

        engines["echo"] = EchoEngine(step_delay=settings.echo_step_delay)
    # The built-in demo model's engine (issue 6): cheap to construct, it loads its weights on first use,
    # and the catalog only offers the model when the packaged weights exist.
    from studiolo.engines.demo import DemoEngine

    engines["demo"] = DemoEngine()
    return engines


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ObjectStore
    dispatch: JobDispatch
    events: EventBus
    engines: dict[str, Engine]
    catalog: ModelCatalog
    queue: JobQueue
    gallery: GalleryService
    generation: GenerationService
    runner: JobRunner
    pools: list[WorkerPool] = field(default_factory=list)

    def start_workers(self, count: int) -> WorkerPool:
        pool = WorkerPool(
            db=self.db, queue=self.queue, runner=self.runner, dispatch=self.dispatch, settings=self.settings
        )
        pool.start(count)
        self.pools.append(pool)
        return pool

    def close(self, timeout: float = 30.0) -> None:
        for pool in self.pools:
            pool.stop(timeout)
        self.pools.clear()
        self.runner.close()
        self.db.dispose()


def build_services(
    settings: Settings, *, engines: dict[str, Engine] | None = None, upgrade_db: bool = True
) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    if upgrade_db:
        migrate.upgrade(url)
    db = Database(url)
    store = LocalObjectStore(settings.files_dir)
    dispatch = InlineDispatch()
    events = EventBus()
    engines = engines if engines is not None else default_engines(settings)
    catalog = ModelCatalog(db, settings, engines)
    queue = JobQueue(db, lease_seconds=settings.lease_seconds, retry_backoff_seconds=settings.retry_backoff_seconds)
    gallery = GalleryService(db, store)
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
    )
    return Services(
        settings=settings,
        db=db,
        store=store,
        dispatch=dispatch,
        events=events,
        engines=engines,
        catalog=catalog,
        queue=queue,
        gallery=gallery,
        generation=generation,
        runner=runner,
    )
