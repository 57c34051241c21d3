"""The server going away, told to the responses that would otherwise hold it open (job event streams)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class ShutdownNotice:
    """Set once when the server starts to shut down; long-lived responses subscribe to end themselves.

    An event stream left open when the server stops is cancelled after the grace period, with a traceback in the
    log and a client that learns nothing (tests/e2e/test_serve_lifecycle.py::test_ctrl_c_ends_event_streams).
    ``studiolo serve`` calls ``begin`` before it waits for open connections (server.py), so every stream
    sends its last event at once and the server exits without waiting out the grace period.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._begun = False

    @property
    def begun(self) -> bool:
        return self._begun

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` when shutdown begins (at once if it has); returns the unsubscribe function."""
        with self._lock:
            begun = self._begun
            if not begun:
                self._listeners.append(listener)
        if begun:
            listener()

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def begin(self) -> None:
        """Tell every subscriber, once; later calls do nothing."""
        with self._lock:
            if self._begun:
                return
            self._begun = True
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()
