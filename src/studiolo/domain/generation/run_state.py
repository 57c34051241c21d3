"""What a worker keeps about a job while it runs it (worker.py): its timings, cancel and stop flags, progress writes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from studiolo.domain.generation.models import Job
from studiolo.domain.generation.outputs import Finished
from studiolo.domain.generation.previews import PreviewGate


class Stop(Exception):
    """Why a running generation was interrupted, when it was not the owner's cancel."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason  # "lease_lost" | "timeout" | "shutdown"


@dataclass
class RunState:
    job_id: str
    worker_id: str
    started: float = field(default_factory=time.monotonic)
    # Seconds spent per phase (load, generate, store): where a job's time went, shown on the job.
    timings: dict[str, float] = field(default_factory=dict)
    cancel: bool = False
    stop_reason: str | None = None
    last_progress_write: float = 0.0
    last_cancel_poll: float = field(default_factory=time.monotonic)
    previews: PreviewGate = field(default_factory=PreviewGate)
    images: int = 1  # in the job
    image: int = 0  # the one the engine said it was making at its last step (0: all in one call)


@dataclass
class FinishedRun:
    """A generated job waiting for the success commit, with its run's state."""

    state: RunState
    outputs: Finished

    @property
    def job(self) -> Job:
        return self.outputs.job
