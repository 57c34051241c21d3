"""Celery dispatch (STUDIOLO_DISPATCH=celery): GPU workers on any number of machines, fed through a broker
(Redis or RabbitMQ), with the database as the source of truth.

A message is a *token*, not a job: ``studiolo.run_next(model_id)`` means "one job for this model is ready".
The worker that receives it claims the best ready job for that model from the jobs table, with the same
fair order as everywhere else (priority, users taking turns, age), runs it, and only then acknowledges the
message (``acks_late``; ``reject_on_worker_lost`` re-queues the message of a worker killed mid-job). So:

- a duplicated or stale token costs one empty claim and nothing else (never a job run twice: the claim is
  atomic and leased);
- a lost token (broker restart, a publish that failed while the broker was down, a process killed between
  commit and publish) is replaced by the sweeper, which compares, per model, the ready jobs in the database
  with the messages waiting in the broker and publishes the difference. Publishing happens after the job row
  is committed and off the request path (a background thread), so a broker outage never fails or slows a
  submission: the job waits in the table until the broker is back.

One queue per model (``studiolo.<model>``) gives model affinity: a worker consumes only the queues of the
models it serves (``studiolo worker --queues``), and keeps those loaded. Prefetch 1 and one worker process
per GPU: a token is never parked on a busy worker while another is idle.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from typing import Any

from celery import Celery

from studiolo.dispatch.inline import InlineDispatch
from studiolo.settings import Settings

log = logging.getLogger(__name__)

TASK_NAME = "studiolo.run_next"
DEFAULT_QUEUE = "studiolo.default"


def queue_name(model_id: str) -> str:
    """The broker queue for jobs of ``model_id`` ("" means any model)."""
    if not model_id:
        return DEFAULT_QUEUE
    return "studiolo." + re.sub(r"[^A-Za-z0-9_.-]", "_", model_id)


def make_celery(settings: Settings) -> Celery:
    app = Celery("studiolo", broker=settings.resolved_broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=DEFAULT_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        # Redis re-delivers an unacknowledged message after the visibility timeout: it must outlast the
        # longest job, or a slow job's token would be handed out again while it still runs.
        broker_transport_options={"visibility_timeout": int(settings.job_timeout_seconds + 600)},
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3.0,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,
    )
    return app


class CeleryDispatch:
    """Publishes tokens from one background thread; ``wait``/``close`` keep the in-process semantics that
    inline worker threads of the same process (if any) rely on."""

    name = "celery"

    def __init__(self, settings: Settings, app: Celery | None = None):
        self.app = app or make_celery(settings)
        self._local = InlineDispatch()
        self._outbox: deque[str] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._inflight = 0
        self.published = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._publish_loop, name="celery-dispatch", daemon=True)
        self._thread.start()

    # --- JobDispatch ------------------------------------------------------------------------------------
    def notify(self, job_id: str, model_id: str = "") -> None:
        self._local.notify(job_id, model_id)
        with self._cond:
            self._outbox.append(model_id)
            self._cond.notify()

    def wait(self, timeout: float) -> bool:
        return self._local.wait(timeout)

    def close(self) -> None:
        self._local.close()
        self.flush(timeout=5.0)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(5.0)

    # --- publishing -------------------------------------------------------------------------------------
    def publish(self, model_id: str) -> None:
        """Send one token now (raises when the broker cannot be reached)."""
        self.app.send_task(
            TASK_NAME,
            args=[model_id],
            queue=queue_name(model_id),
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5},
        )

    def _publish_loop(self) -> None:
        while True:
            with self._cond:
                while not self._outbox and not self._closed:
                    self._cond.wait()
                if not self._outbox and self._closed:
                    return
                model_id = self._outbox.popleft()
                self._inflight += 1
            try:
                self.publish(model_id)
                self.published += 1
            except Exception as exc:  # noqa: BLE001 - any broker failure: the row is committed, the sweeper repairs
                self.failed += 1
                log.warning("could not publish a job token (%s); the sweeper will re-dispatch it", exc)
            finally:
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued token was published (or failed); True if the outbox emptied in time."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._outbox and not self._inflight, timeout)

    def pending(self, model_id: str) -> int:
        """Messages waiting in the model's broker queue (not counting ones a worker holds unacknowledged)."""
        with self.app.connection_for_read() as conn:
            try:
                declared: Any = conn.default_channel.queue_declare(queue=queue_name(model_id), passive=True)
            except Exception as exc:  # NOT_FOUND: a queue nobody declared yet holds no messages
                if "NOT_FOUND" in str(exc) or "404" in str(exc):
                    return 0
                raise
            return int(declared.message_count)
