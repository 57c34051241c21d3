"""`studiolo worker` with STUDIOLO_DISPATCH=celery: a Celery worker whose task runs one job.

The process keeps the usual worker machinery (liveness rows, lease heartbeats, reaping of jobs whose
worker died, the JobRunner with its model cache) and adds the sweeper. The Celery task takes an idle
``Worker`` (its id is the lease owner), claims the best ready job for the token's model and runs it.
SIGTERM: Celery's warm shutdown waits for the running task, and the running job is handed back to the
queue at its next step (not charged an attempt), so shutdown takes seconds, not a whole generation.

The worker consumes the queues of the models it serves (``ServedModels``: those asked for whose files are on
this machine) and follows that list while it runs: a model installed later, or whose files appear, gets its
queue consumed; a model whose files are gone has its queue cancelled (tests/e2e/test_worker_models.py). The
changes are made in the consumer's own event loop, as Celery's ``add_consumer``/``cancel_consumer`` remote
control commands do, without needing remote control (disabled, see dispatch/celery.py).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutting_down

from studiolo.dispatch.celery import DEFAULT_QUEUE, TASK_NAME, CeleryDispatch, queue_name
from studiolo.dispatch.sweeper import Sweeper
from studiolo.domain.generation.served import ServedModels
from studiolo.domain.generation.worker import Worker
from studiolo.services import Services

log = logging.getLogger(__name__)


def _wanted_queues(served: ServedModels) -> set[str]:
    return {queue_name(m) for m in served.current()} | {DEFAULT_QUEUE}


def _sync_queues(consumer: Any, served: ServedModels) -> None:
    """Consume exactly the served models' queues; runs in the consumer's event loop (``consumer.call_soon``)."""
    wanted = _wanted_queues(served)
    consuming = set(consumer.app.amqp.queues.consume_from)
    try:
        for name in sorted(wanted - consuming):
            consumer.add_task_queue(name)
        for name in sorted(consuming - wanted):
            consumer.cancel_task_queue(name)
    except Exception:  # reconnecting (no task consumer): the selection above is kept, the consumer resumes with it
        log.warning("could not update the consumed queues now", exc_info=True)


def run_celery_worker(services: Services, *, concurrency: int, served: ServedModels, loglevel: str) -> None:
    dispatch = services.dispatch
    if not isinstance(dispatch, CeleryDispatch):
        raise RuntimeError("run_celery_worker needs STUDIOLO_DISPATCH=celery")
    app = dispatch.app
    pool = services.start_workers(concurrency, claim_loops=False, served=served)
    idle: queue.Queue[Worker] = queue.Queue()
    for w in pool.workers:
        idle.put(w)

    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)  # type: ignore[untyped-decorator, unused-ignore]
    def run_next(model_id: str) -> None:
        if model_id and not served.serves(model_id):
            # A token taken just before this worker stopped consuming the model's queue (its files are gone
            # here): claim nothing; the sweeper publishes a token for the job again, for another worker.
            log.info("passing on a job token for model %s, which this worker does not serve", model_id)
            dispatch.token_taken(model_id)  # no token waits any more: the next notification sends one
            return
        worker = idle.get()
        try:
            # Clear the model's token flag before claiming: a job committed from now on sends its own token.
            dispatch.token_taken(model_id)

            def pass_on(claimed: int, limit: int) -> None:
                if claimed and claimed == limit:  # a full batch: more may wait; wake the next worker for them
                    dispatch.notify("", model_id)

            worker.run_once(pool.shutdown, models=[model_id] if model_id else None, on_claimed=pass_on)
        finally:
            idle.put(worker)

    def on_shutdown(**_: Any) -> None:
        pool.shutdown.set()  # running jobs hand themselves back at their next step

    worker_shutting_down.connect(on_shutdown, weak=False)

    sweeper = Sweeper(services.db, dispatch, grace_seconds=services.settings.sweep_grace_seconds)
    services.runner.metrics.sweeper = sweeper  # studiolo_sweeper_redispatched_total

    def sweep_loop() -> None:
        while not pool.shutdown.wait(services.settings.sweep_seconds):
            try:
                sweeper.sweep()
            except Exception:  # broker or database briefly away: try again next round
                log.warning("sweep failed", exc_info=True)

    threading.Thread(target=sweep_loop, name="sweeper", daemon=True).start()

    queues = sorted(_wanted_queues(served))
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

    def follow_served_models(*_: Any, **__: Any) -> None:
        consumer = celery_worker.consumer
        consumer.call_soon(_sync_queues, consumer, served)

    served.on_change(follow_served_models)
    # A change made while the worker was starting (before its consumer could take it) is applied once it is up.
    worker_ready.connect(follow_served_models, weak=False)
    try:
        celery_worker.start()
    finally:
        pool.shutdown.set()
        services.close()
