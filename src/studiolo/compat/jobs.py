"""What every compatible face does with a job (issue 18): queue it like any other, then follow it to its end.

OpenAI's and AUTOMATIC1111's APIs answer a generation with its images, so their faces block until the job ends.
The job is an ordinary queued job all the same: same queue, limits, credits and gallery; a client that disconnects
leaves it to finish into the gallery (nothing cancels it), and a wait longer than STUDIOLO_COMPAT_WAIT_SECONDS ends
with 504 ``job_still_running`` naming the job, which goes on.

Events come from this process's event bus at once (in-process workers, or the Redis relay from other processes),
and the job row is re-read every second besides, so a job run by a worker elsewhere is followed too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from studiolo.domain.generation.schemas import JobOutput, JobView
from studiolo.errors import StudioloError
from studiolo.services import Services

TERMINAL = frozenset({"succeeded", "failed", "canceled"})


class JobStillRunning(StudioloError):
    """The face's wait ended before the job did; the job goes on (``details.job_id``)."""

    status_code = 504
    code = "job_still_running"


@dataclass(frozen=True)
class Output:
    """One stored image of a finished job: its gallery entry and the original PNG's bytes."""

    output: JobOutput
    png: bytes


async def follow_job(
    services: Services, owner_id: str, job_id: str, *, wait_seconds: float | None = None, types: set[str] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """The job's events as they happen (of ``types``, if given; the terminal one always), ending with the terminal
    event ``{"type": "succeeded"|"failed"|"canceled", "view": JobView}`` (the job as stored). Raises JobStillRunning
    after ``wait_seconds`` (default STUDIOLO_COMPAT_WAIT_SECONDS)."""
    deadline = time.monotonic() + (wait_seconds if wait_seconds is not None else services.settings.compat_wait_seconds)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def deliver(event: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(inbox.put_nowait, event)

    wanted = None if types is None else frozenset(types | TERMINAL)
    unsubscribe = services.events.subscribe(job_id, deliver, types=wanted)
    try:
        view = await run_in_threadpool(services.generation.get, owner_id, job_id)
        while view.status not in TERMINAL:
            left = deadline - time.monotonic()
            if left <= 0:
                raise JobStillRunning(
                    f"Job {job_id} is still {view.status}; it goes on into your gallery (GET /api/v1/jobs/{job_id}).",
                    details={"job_id": job_id, "status": view.status},
                )
            try:
                event = await asyncio.wait_for(inbox.get(), timeout=min(1.0, left))
            except TimeoutError:
                view = await run_in_threadpool(services.generation.get, owner_id, job_id)
                continue
            if event.get("type") in TERMINAL:
                view = await run_in_threadpool(services.generation.get, owner_id, job_id)
                if view.status not in TERMINAL:  # the event's commit is not visible yet: the row catches up
                    continue
                break
            yield event
        yield {"type": view.status, "view": view}
    finally:
        unsubscribe()


async def wait_for_job(services: Services, owner_id: str, job_id: str, *, wait_seconds: float | None = None) -> JobView:
    """The job as stored once it has ended (see follow_job)."""
    async for event in follow_job(services, owner_id, job_id, wait_seconds=wait_seconds, types=set()):
        if event["type"] in TERMINAL:
            view: JobView = event["view"]
            return view
    raise AssertionError("follow_job ends with the terminal event")  # pragma: no cover


def read_outputs(services: Services, owner_id: str, view: JobView) -> list[Output]:
    """The original PNGs of a finished job's images, in seed order; images held for review are left out (the faces
    say so: ``view.outputs`` still lists them, with ``review_state``)."""
    found: list[Output] = []
    for out in view.outputs:
        if out.review_state == "pending":
            continue
        key, _media = services.gallery.file(owner_id, out.image_id, "original")
        found.append(Output(out, services.gallery.read(key)))
    return found
