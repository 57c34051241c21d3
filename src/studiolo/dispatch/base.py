"""The JobDispatch port: how workers learn that a job is ready.

The database stays the source of truth (a job row exists before anyone is told about it); dispatch
only shortens the wait. Workers still re-check the table on a slow timer, so a lost wake-up delays a
job by at most ``worker_poll_seconds``, never loses it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class JobDispatch(Protocol):
    name: str

    def notify(self, job_id: str, model_id: str = "") -> None:
        """A job for ``model_id`` was committed as queued (or requeued): wake a worker that serves it."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block until notified or ``timeout`` seconds pass; True when notified."""
        ...

    def close(self) -> None:
        """Wake every waiter so worker threads can exit promptly."""
        ...
