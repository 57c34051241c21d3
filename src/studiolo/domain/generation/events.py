"""Job events, fanned out in-process to SSE streams and the CLI progress bar.

Workers publish from their threads; subscribers receive on whatever thread or event loop they choose
(the SSE endpoint hops onto its loop with ``call_soon_threadsafe``). Events are also reflected in
the job row, so a subscriber in another process (a separate ``studiolo worker``) catches up by
polling the row: ``router.job_events`` does both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
Listener = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, list[Listener]] = {}
        # Forwards every published event to other processes (Redis pub/sub when configured); events from
        # other processes come back in through ``deliver``.
        self.relay: Callable[[str, Event], None] | None = None

    def subscribe(self, job_id: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for each event of ``job_id``; returns the unsubscribe function."""
        with self._lock:
            self._listeners.setdefault(job_id, []).append(listener)

        def unsubscribe() -> None:
            with self._lock:
                listeners = self._listeners.get(job_id)
                if listeners and listener in listeners:
                    listeners.remove(listener)
                    if not listeners:
                        del self._listeners[job_id]

        return unsubscribe

    def publish(self, job_id: str, event: Event) -> None:
        self.deliver(job_id, event)
        if self.relay is not None:
            self.relay(job_id, event)

    def deliver(self, job_id: str, event: Event) -> None:
        """Hand ``event`` to this process's listeners only."""
        with self._lock:
            listeners = list(self._listeners.get(job_id, ()))
        for listener in listeners:
            listener(event)

    def has_listeners(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._listeners
