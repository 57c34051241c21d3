"""The outbox: turns job transitions into WebhookMessage rows, one per receiver whose filter wants the event.

The sweep finds jobs whose ``webhook_state`` (the last status whose events were queued) differs from their status,
writes the messages and moves ``webhook_state`` on in the same transaction: a crash between the two loses nothing,
and the conditional UPDATE means two sweeping processes never queue an event twice."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from studiolo.db.session import Database
from studiolo.domain.accounts.tokens import TokenCodec
from studiolo.domain.gallery.links import signed_image_url
from studiolo.domain.gallery.models import Image
from studiolo.domain.generation.models import Job
from studiolo.domain.webhooks import events as ev
from studiolo.domain.webhooks.models import WebhookEndpoint, WebhookMessage
from studiolo.domain.webhooks.service import WebhookService
from studiolo.domain.webhooks.signing import new_message_id
from studiolo.settings import Settings

SWEEP_BATCH = 100


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def event_body(event_type: str, now: datetime, data: dict[str, Any]) -> str:
    """The exact JSON text that is sent and signed: ``{type, timestamp, data}``."""
    return json.dumps({"type": event_type, "timestamp": iso(now), "data": data}, separators=(",", ":"))


class Outbox:
    """Writes messages for job transitions (``sweep``) and progress (``progress``)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        codec: TokenCodec,
        service: WebhookService,
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.settings = settings
        self.codec = codec
        self.service = service
        self.clock = clock

    def job_data(self, session: Session, job: Job, status: str) -> dict[str, Any]:
        """The ``data`` of a job event: the job as the API shows it, outputs as signed links (held images left out)."""
        outputs: list[dict[str, Any]] = []
        if status == "succeeded":
            images = session.execute(
                select(Image.id, Image.seed, Image.review_state)
                .where(Image.job_id == job.id, Image.trashed_at.is_(None))
                .order_by(Image.id)
            ).all()
            outputs = [
                {"image_id": i, "seed": seed, "url": signed_image_url(self.settings, self.codec, job.owner_id, i)}
                for i, seed, review in images
                if review != "pending"
            ]
        error = {"code": job.error_code, "message": job.error_message} if status == "failed" else None
        return {
            "id": job.id,
            "status": status,
            "model": job.model_id,
            "created_at": iso(job.created_at),
            "started_at": iso(job.started_at),
            "completed_at": iso(job.finished_at) if status in ev.TERMINAL else None,
            "progress": {"step": job.progress_step, "total": job.progress_total},
            "outputs": outputs,
            "error": error,
        }

    def _receivers(self, session: Session, job: Job) -> list[tuple[str | None, str, list[str] | None]]:
        """(endpoint id or None for the per-job webhook, url, filter) of each receiver of ``job``."""
        found: list[tuple[str | None, str, list[str] | None]] = []
        if job.webhook is not None:
            events = job.webhook.get("events")
            found.append((None, job.webhook["url"], events if events is not None else ev.PER_JOB_DEFAULT))
        query = self.service.receivers_query(job.owner_id, job.api_key_id)
        found += [(e.id, e.url, e.events) for e in session.scalars(query).all()]
        return found

    def _queue(self, session: Session, job: Job, event_types: list[str], status: str, now: datetime) -> int:
        receivers = self._receivers(session, job)
        count = 0
        for event_type in event_types:
            wanting = [r for r in receivers if ev.wants(r[2], event_type)]
            if not wanting:
                continue
            shown = "running" if event_type == ev.STARTED else status
            body = event_body(event_type, now, self.job_data(session, job, shown))
            for endpoint_id, url, _events in wanting:
                session.add(
                    WebhookMessage(
                        id=new_message_id(),
                        owner_id=job.owner_id,
                        endpoint_id=endpoint_id,
                        job_id=job.id,
                        url=url,
                        event_type=event_type,
                        payload=body,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
                count += 1
        return count

    def sweep(self) -> int:
        """Queue the events of every job that moved since the last sweep; returns how many messages it wrote."""
        now = self.clock()
        written = 0
        with self.db.session() as session:
            jobs = session.scalars(
                select(Job)
                .where(Job.webhook_state.is_not(None), Job.webhook_state != Job.status, Job.status != "queued")
                .limit(SWEEP_BATCH)
            ).all()
            for job in jobs:
                previous = job.webhook_state
                assert previous is not None
                moved = session.execute(
                    update(Job)
                    .where(Job.id == job.id, Job.webhook_state == previous)
                    .values(webhook_state=job.status)
                    .execution_options(synchronize_session=False)
                )
                if moved.rowcount != 1:  # type: ignore[attr-defined]  # another process queued it
                    continue
                started = job.started_at is not None
                written += self._queue(
                    session, job, ev.transition_events(previous, job.status, started), job.status, now
                )
        return written

    def progress(self, job_id: str) -> int:
        """Queue a ``job.progress`` event to the receivers that want it (sent once, never retried)."""
        now = self.clock()
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.webhook_state is None or job.status != "running":
                return 0
            return self._queue(session, job, [ev.PROGRESS], "running", now)

    @staticmethod
    def endpoint_of(session: Session, message: WebhookMessage) -> WebhookEndpoint | None:
        return session.get(WebhookEndpoint, message.endpoint_id) if message.endpoint_id is not None else None
