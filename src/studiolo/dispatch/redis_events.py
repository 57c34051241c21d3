"""Job events across processes through Redis pub/sub: a worker on one machine publishes, every API process
subscribes and hands the events to its own SSE streams (``EventBus.deliver``).

Pub/sub is fire-and-forget: an event published while Redis restarts is lost. Nothing depends on it
alone: every event is also reflected in the job row, which the SSE endpoint re-reads every second, so a
client still sees the job end; Redis only makes progress arrive step by step.

Publishing is off the caller's thread: ``publish`` appends to an outbox that one background thread sends as few
messages as it can: everything queued meanwhile, in order, packed into messages of up to ~256 KB
(``{"o": origin, "b": [[job_id, event], ...]}``) sent in one pipeline. A worker publishes 4-5 events per job: a
round trip each was a fifth of a no-op job's cost, and a message each cost every API process more CPU to receive
than a batch submission cost it to accept (bench/queue.py). The outbox is bounded: when Redis is slower than the
events come, the oldest wait and the newest are dropped (counted in ``dropped``).

Rolling upgrades: API processes read both this format and the earlier one message per event (``{"o", "j", "e"}``);
upgrade them before the workers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections import deque
from typing import Any

import redis

from studiolo.domain.generation.events import Event, EventBus

log = logging.getLogger(__name__)

CHANNEL = "studiolo:job-events"
# Events waiting to be sent at most; beyond it new events are dropped (the job rows still carry the state).
_OUTBOX_LIMIT = 10_000
# A message carries events up to about this many bytes of JSON (previews are a few KB each).
_MESSAGE_BYTES = 256 * 1024


class RedisEventRelay:
    def __init__(self, url: str, bus: EventBus):
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=15)
        self.bus = bus
        self.origin = os.urandom(8).hex()  # our own messages come back too: skip them (already delivered)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self._outbox: deque[str] = deque()  # [job_id, event] as JSON, each
        self._cond = threading.Condition()
        self._sending = False
        self._closed = False
        self._sender: threading.Thread | None = None

    def publish(self, job_id: str, event: Event) -> None:
        message = json.dumps([job_id, event], default=str)  # encoded here: the event may change after this call
        with self._cond:
            if self._closed or len(self._outbox) >= _OUTBOX_LIMIT:
                self.dropped += 1  # the job row carries the state; SSE falls back to re-reading it
                return
            self._outbox.append(message)
            if self._sender is None:
                self._sender = threading.Thread(target=self._send_loop, name="redis-events-out", daemon=True)
                self._sender.start()
            self._cond.notify()

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._outbox and not self._closed:
                    self._cond.wait()
                if not self._outbox:
                    return
                batch = list(self._outbox)
                self._outbox.clear()
                self._sending = True
            try:
                pipe = self.client.pipeline(transaction=False)
                for message in self._pack(batch):
                    pipe.publish(CHANNEL, message)
                pipe.execute()
            except redis.RedisError:
                with self._cond:
                    self.dropped += len(batch)
            finally:
                with self._cond:
                    self._sending = False
                    self._cond.notify_all()

    def _pack(self, events: list[str]) -> list[str]:
        """Messages of up to ``_MESSAGE_BYTES`` each carrying these encoded events, in order."""
        head = f'{{"o":"{self.origin}","b":['
        messages: list[str] = []
        chunk: list[str] = []
        size = 0
        for event in events:
            if chunk and size + len(event) > _MESSAGE_BYTES:
                messages.append(head + ",".join(chunk) + "]}")
                chunk, size = [], 0
            chunk.append(event)
            size += len(event) + 1
        if chunk:
            messages.append(head + ",".join(chunk) + "]}")
        return messages

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event published so far was sent (or dropped); True if that happened in time."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._outbox and not self._sending, timeout)

    def start(self) -> None:
        """Subscribe in a background thread (API processes); reconnects after Redis restarts."""
        self._thread = threading.Thread(target=self._listen, name="redis-events", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            # redis < 8.2 leaves pubsub() unannotated, 8.2+ annotates it: `unused-ignore` keeps mypy clean on both
            # (tests/unit/test_architecture.py::test_mypy_strict_clean runs against whatever release is installed).
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
            try:
                pubsub.subscribe(CHANNEL)
                while not self._stop.is_set():
                    message: Any = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._receive(message["data"])
            except (redis.RedisError, OSError):
                if not self._stop.is_set():
                    log.warning("job event subscription lost; reconnecting", exc_info=True)
                    self._stop.wait(0.5)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def _receive(self, data: bytes) -> None:
        """Deliver the events of one message to this process's listeners; a message that is not ours is skipped."""
        try:
            message = json.loads(data)
            if message.get("o") == self.origin:
                return  # our own events: delivered in this process when published
            events = message["b"] if "b" in message else [[message["j"], message["e"]]]
            for job_id, event in events:
                if self.bus.has_listeners(job_id, event.get("type")):
                    self.bus.deliver(job_id, event)
        except (ValueError, RecursionError, KeyError, TypeError, AttributeError):
            # Anything on the channel is skipped, never fatal to the listening thread (a RecursionError was).
            log.warning("skipped a job event message that is not in a known format: %.200r", data)

    def close(self) -> None:
        self.flush(3.0)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._sender is not None:
            self._sender.join(3.0)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3.0)
        self.client.close()
