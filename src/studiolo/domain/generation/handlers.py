"""Job kinds that are not one engine call (a film render, issue 16): the worker hands them to a handler.

A handler runs inside the worker's usual frame: the job is claimed and leased, its lease is heartbeated, cancel and
shutdown are watched, and the ending (success, failure, retry, credits) is the worker's as for any job. What the
handler adds is its own work, and the right to say "not yet": ``Waiting`` puts the job back in the queue for a
while without charging an attempt (a render waits so for its scene images, which are jobs of their own, so a
single worker never waits on itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from studiolo.domain.generation.models import Job


@dataclass(frozen=True)
class Waiting:
    """Run the job again in ``seconds`` (it keeps its attempts); ``reason`` is published on its stream."""

    seconds: float
    reason: str


@dataclass
class JobContext:
    """What a handler may use of the worker running its job."""

    worker_id: str
    # True once the job should stop: its owner canceled it (``canceled``), or the worker lost the lease, timed out
    # or is shutting down. The handler then raises engines.base.GenerationCanceled at a safe point.
    should_stop: Callable[[], bool]
    canceled: Callable[[], bool]
    # Publish an event on the job's stream (the handler's own types: "stage", ...).
    publish: Callable[[dict[str, Any]], None]
    # Record a phase's seconds in the job's timings (shown on the job like load/generate/store).
    timing: Callable[[str, float], None]


class KindHandler(Protocol):
    def run(self, job: Job, ctx: JobContext) -> Waiting | None:
        """Do the job's work. None: it succeeded. Raise engines.base.EngineError (its ``code``, ``retryable``) to
        fail an attempt, GenerationCanceled when ``ctx.should_stop()`` said so."""

    def ended(self, job_id: str, status: str, code: str | None, message: str | None) -> None:
        """The worker ended the job this way (failed or canceled; success is the handler's own return)."""
