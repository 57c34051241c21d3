"""Cancel every waiting and running job of one owner at once (the queue view's "Cancel all")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from sqlalchemy import select

from studiolo.domain.generation.models import Job

if TYPE_CHECKING:
    from studiolo.domain.generation.service import GenerationService


class CanceledJobs(BaseModel):
    canceled: list[str] = Field(
        description="The jobs this call canceled (queued ones) or asked to stop at their next step (running ones), "
        "newest first; jobs already finished or already asked to stop are not listed"
    )


def cancel_all(generation: GenerationService, owner_id: str) -> CanceledJobs:
    """Each of the owner's queued or running jobs goes through ``GenerationService.cancel``, so each gets the same
    row change and the same event its own Cancel button gives (open event streams and other tabs see it)."""
    with generation.db.session() as session:
        stmt = select(Job.id).where(
            Job.owner_id == owner_id,
            Job.status.in_(("queued", "running")),
            Job.cancel_requested.is_(False),
        )
        ids = list(session.scalars(stmt.order_by(Job.id.desc())))
    canceled = []
    for job_id in ids:
        # The job may have finished between the read and here: cancel leaves a finished job as it is.
        view = generation.cancel(owner_id, job_id)
        if view.status == "canceled" or view.status == "running":
            canceled.append(job_id)
    return CanceledJobs(canceled=canceled)
