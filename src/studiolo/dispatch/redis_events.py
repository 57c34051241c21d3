"""Job events across processes through Redis pub/sub: a worker on one machine publishes, every API process
subscribes and hands the events to its own SSE streams (``EventBus.deliver``).

Pub/sub is fire-and-forget: an event published while Redis restarts is lost. Nothing depends on it
alone: every event is also reflected in the job row, which the SSE endpoint re-reads every second, so a
client still sees the job end; Redis only makes progress arrive step by step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from typing import Any

import redis

from studiolo.domain.generation.events import Event, EventBus

log = logging.getLogger(__name__)

CHANNEL = "studiolo:job-events"


class RedisEventRelay:
    def __init__(self, url: str, bus: EventBus):
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=15)
        self.bus = bus
        self.origin = os.urandom(8).hex()  # our own messages come back too: skip them (already delivered)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def publish(self, job_id: str, event: Event) -> None:
        try:
            self.client.publish(CHANNEL, json.dumps({"o": self.origin, "j": job_id, "e": event}, default=str))
        except redis.RedisError:
            self.dropped += 1  # the job row carries the state; SSE falls back to re-reading it

    def start(self) -> None:
        """Subscribe in a background thread (API processes); reconnects after Redis restarts."""
        self._thread = threading.Thread(target=self._listen, name="redis-events", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(CHANNEL)
                while not self._stop.is_set():
                    message: Any = pubsub.get_message(timeout=0.5)
                    if message is None:
                        continue
                    data = json.loads(message["data"])
                    event = data["e"]
                    if data.get("o") != self.origin and self.bus.has_listeners(data["j"], event.get("type")):
                        self.bus.deliver(data["j"], event)
            except (redis.RedisError, OSError, ValueError):
                if not self._stop.is_set():
                    log.warning("job event subscription lost; reconnecting", exc_info=True)
                    self._stop.wait(0.5)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3.0)
        self.client.close()
