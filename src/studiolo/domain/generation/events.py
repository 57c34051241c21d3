"""Job events, fanned out in-process to SSE streams and the CLI progress bar.

Workers publish from their threads; subscribers receive on whatever thread or event loop they choose
(the SSE endpoint hops onto its loop with ``call_soon_threadsafe``). Events other than previews are also
reflected in the job row, so a subscriber in another process (a separate ``studiolo worker``) catches up by
polling the row: ``router.job_events`` does both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from typing import Any

Event = dict[str, Any]
Listener = Callable[[Event], None]
# (listener, the event types it takes; None: all of them)
_Subscription = tuple[Listener, frozenset[str] | None]


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, list[_Subscription]] = {}
        # Listeners to every job's events (the webhook deliverer wakes on them).
        self._everywhere: list[tuple[Callable[[str, Event], None], frozenset[str]]] = []
        # Forwards every published event to other processes (Redis pub/sub when configured); events from
        # other processes come back in through ``deliver``.
        self.relay: Callable[[str, Event], None] | None = None

    def subscribe(self, job_id: str, listener: Listener, *, types: Collection[str] | None = None) -> Callable[[], None]:
        """Call ``listener(event)`` for each event of ``job_id`` (of one of ``types``, if given); returns the
        unsubscribe function. Naming the types matters for costly ones: previews are only made while some
        listener takes them (``may_have_listeners``)."""
        subscription: _Subscription = (listener, frozenset(types) if types is not None else None)
        with self._lock:
            self._listeners.setdefault(job_id, []).append(subscription)

        def unsubscribe() -> None:
            with self._lock:
                subscriptions = self._listeners.get(job_id)
                if subscriptions and subscription in subscriptions:
                    subscriptions.remove(subscription)
                    if not subscriptions:
                        del self._listeners[job_id]

        return unsubscribe

    def subscribe_all(self, listener: Callable[[str, Event], None], *, types: Collection[str]) -> Callable[[], None]:
        """Call ``listener(job_id, event)`` for every job's events of ``types``; returns the unsubscribe function."""
        wrapped = (listener, frozenset(types))
        with self._lock:
            self._everywhere.append(wrapped)

        def unsubscribe() -> None:
            with self._lock:
                if wrapped in self._everywhere:
                    self._everywhere.remove(wrapped)

        return unsubscribe

    def publish(self, job_id: str, event: Event) -> None:
        self.deliver(job_id, event)
        if self.relay is not None:
            self.relay(job_id, event)

    def deliver(self, job_id: str, event: Event) -> None:
        """Hand ``event`` to this process's listeners only."""
        kind = event.get("type")
        with self._lock:
            listeners = [f for f, types in self._listeners.get(job_id, ()) if types is None or kind in types]
            everywhere = [f for f, types in self._everywhere if kind in types]
        for listener in listeners:
            listener(event)
        for job_listener in everywhere:
            job_listener(job_id, event)

    def has_listeners(self, job_id: str, event_type: str | None = None) -> bool:
        """True when a listener in this process takes events of ``job_id`` (of ``event_type``, if given)."""
        with self._lock:
            subscriptions = self._listeners.get(job_id, ())
            return any(event_type is None or types is None or event_type in types for _f, types in subscriptions)

    def may_have_listeners(self, job_id: str, event_type: str) -> bool:
        """Whether an event is worth making: a local listener takes it, or events are relayed to other
        processes, whose listeners this one cannot see (asking them would cost more than a preview)."""
        return self.relay is not None or self.has_listeners(job_id, event_type)
