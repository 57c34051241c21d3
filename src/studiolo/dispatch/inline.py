"""In-process dispatch: workers are threads of the same process, woken through a condition variable."""

from __future__ import annotations

import threading


class InlineDispatch:
    name = "inline"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending = 0
        self._closed = False

    def notify(self, job_id: str, model_id: str = "") -> None:
        with self._cond:
            self._pending += 1
            self._cond.notify()

    def wait(self, timeout: float) -> bool:
        with self._cond:
            if self._pending == 0 and not self._closed:
                self._cond.wait(timeout)
            if self._pending > 0:
                self._pending -= 1
                return True
            return False

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
