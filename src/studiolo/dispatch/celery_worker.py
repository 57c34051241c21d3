"""`studiolo worker` with STUDIOLO_DISPATCH=celery: a Celery worker whose task runs one job.

The process keeps the usual worker machinery (liveness rows, lease heartbeats, reaping of jobs whose
worker died, the JobRunner with its model cache) and adds the sweeper. The Celery task takes an idle
``Worker`` (its id is the lease owner), claims the best ready job for the token's model and runs it.
SIGTERM: Celery's warm shutdown waits for the running task, and the running job is handed back to the
queue at its next step (not charged an attempt), so shutdown takes seconds, not a whole generation.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from typing import Any

from celery.signals import worker_shutting_down

from studiolo.dispatch.celery import DEFAULT_QUEUE, TASK_NAME, CeleryDispatch, queue_name
from studiolo.dispatch.sweeper import Sweeper
from studiolo.domain.generation.worker import Worker
from studiolo.services import Services

log = logging.getLogger(__name__)


def run_celery_worker(services: Services, *, concurrency: int, models: list[str] | None, loglevel: str) -> None:
    dispatch = services.dispatch
    if not isinstance(dispatch, CeleryDispatch):
        raise RuntimeError("run_celery_worker needs STUDIOLO_DISPATCH=celery")
    app = dispatch.app
    pool = services.start_workers(concurrency, claim_loops=False)
    idle: queue.Queue[Worker] = queue.Queue()
    for w in pool.workers:
        idle.put(w)

    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def run_next(model_id: str) -> None:
        worker = idle.get()
        try:
            worker.run_once(pool.shutdown, models=[model_id] if model_id else None)
        finally:
            idle.put(worker)

    def on_shutdown(**_: Any) -> None:
        pool.shutdown.set()  # running jobs hand themselves back at their next step

    worker_shutting_down.connect(on_shutdown, weak=False)

    sweeper = Sweeper(services.db, dispatch)
    services.runner.metrics.sweeper = sweeper  # studiolo_sweeper_redispatched_total

    def sweep_loop() -> None:
        while not pool.shutdown.wait(services.settings.sweep_seconds):
            try:
                sweeper.sweep()
            except Exception:  # broker or database briefly away: try again next round
                log.warning("sweep failed", exc_info=True)

    threading.Thread(target=sweep_loop, name="sweeper", daemon=True).start()

    served = models if models is not None else [m.id for m in services.catalog.models()]
    queues = sorted({queue_name(m) for m in served} | {DEFAULT_QUEUE})
    log.info("celery worker consuming %s", ", ".join(queues))
    celery_worker = app.Worker(
        hostname=f"studiolo-{os.getpid()}@{socket.gethostname()}",
        queues=queues,
        concurrency=concurrency,
        pool="solo" if concurrency == 1 else "threads",
        loglevel=loglevel.upper(),
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    try:
        celery_worker.start()
    finally:
        pool.shutdown.set()
        services.close()
