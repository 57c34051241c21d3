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

With a Redis at hand (the broker, or STUDIOLO_REDIS_URL beside RabbitMQ) tokens are *gated*: at most one waits in
a model's queue (``TokenGate``). A publisher sends a token only when it sets the model's flag; the worker that
receives it clears the flag *before* it claims, then claims a batch and, when the batch came back full (more may
be waiting), sends one more token before running it, which wakes the next idle worker. So a burst of jobs costs
a token per batch instead of one per job (publishing and receiving a token cost more than a no-op job), and
idle workers still join within a claim's time each. Nothing is lost in the races: a job committed before the
flag is cleared is seen by the claim that follows; one committed after it finds the flag clear and sends its own
token. A flag whose token was lost (a broker restart, a publisher killed between the two steps) expires, and
the sweeper sends a token for any model whose ready jobs have none waiting.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections import deque
from typing import Any

import redis
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


# How long a model's "a token is waiting" flag lives without its token being taken: then another may be sent.
_GATE_SECONDS = 60


class TokenGate:
    """At most one waiting token per model (see the module's docstring). Fails open: while Redis cannot be
    reached, every notification sends its token, as without a gate."""

    def __init__(self, url: str):
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    @staticmethod
    def _key(model_id: str) -> str:
        return f"studiolo:token-waiting:{queue_name(model_id)}"

    def open(self, model_id: str) -> bool | None:
        """Set the model's flag; True when it was clear (so the caller sends the token), None when Redis cannot
        be reached (send as without a gate)."""
        try:
            return bool(self.client.set(self._key(model_id), 1, nx=True, ex=_GATE_SECONDS))
        except redis.RedisError:
            return None

    def force(self, model_id: str) -> None:
        """Set the flag for a token sent regardless (the sweeper's)."""
        with contextlib.suppress(redis.RedisError):
            self.client.set(self._key(model_id), 1, ex=_GATE_SECONDS)

    def clear(self, model_id: str) -> None:
        """The model's token was taken (or could not be sent): the next notification sends one."""
        with contextlib.suppress(redis.RedisError):
            self.client.delete(self._key(model_id))

    def close(self) -> None:
        self.client.close()


def gate_url(settings: Settings) -> str | None:
    """Where the token flags live: the broker when it is Redis, else STUDIOLO_REDIS_URL; None without Redis."""
    broker = settings.resolved_broker_url
    if broker.startswith(("redis://", "rediss://", "unix://")):
        return broker
    return settings.redis_url or None


class CeleryDispatch:
    """Publishes tokens from one background thread; ``wait``/``close`` keep the in-process semantics that
    inline worker threads of the same process (if any) rely on."""

    name = "celery"

    def __init__(self, settings: Settings, app: Celery | None = None, *, gated: bool = True):
        self.app = app or make_celery(settings)
        url = gate_url(settings) if gated else None
        self.gate = TokenGate(url) if url else None
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
        if self.gate is not None:
            self.gate.close()

    def token_taken(self, model_id: str) -> None:
        """A worker received a token for ``model_id`` and is about to claim: later notifications send new ones."""
        if self.gate is not None:
            self.gate.clear(model_id)

    def send_now(self, model_id: str) -> None:
        """Publish a token regardless of the gate (the sweeper's repair), marking it as waiting."""
        self.publish(model_id)
        if self.gate is not None:
            self.gate.force(model_id)

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
                batch = list(self._outbox)
                self._outbox.clear()
                self._inflight += len(batch)
            try:
                for model_id in self._tokens_for(batch):
                    self._send(model_id)
            finally:
                with self._cond:
                    self._inflight -= len(batch)
                    self._cond.notify_all()

    def _tokens_for(self, batch: list[str]) -> list[str]:
        """The tokens to send for a batch of notifications: one each without a gate; with one, one per model whose
        flag was clear."""
        if self.gate is None:
            return batch
        tokens: list[str] = []
        for model_id in dict.fromkeys(batch):
            opened = self.gate.open(model_id)
            if opened is None:
                tokens += [m for m in batch if m == model_id]
            elif opened:
                tokens.append(model_id)
        return tokens

    def _send(self, model_id: str) -> None:
        try:
            self.publish(model_id)
            self.published += 1
        except Exception as exc:  # noqa: BLE001 - any broker failure: the row is committed, the sweeper repairs
            self.failed += 1
            if self.gate is not None:
                self.gate.clear(model_id)  # no token waits: the next notification may try again
            log.warning("could not publish a job token (%s); the sweeper will re-dispatch it", exc)

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
