"""Generation ORM: jobs (the queue itself), installed models, style templates, worker liveness."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from studiolo.db.base import Base, UTCDateTime, new_id, utcnow

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})


class Job(Base):
    """One generation request. The jobs table *is* the queue: workers claim rows atomically."""

    __tablename__ = "jobs"
    __table_args__ = (
        # queue_position counts queued rows by (system_priority, id), other users' only (owner_id in the index spares
        # reading each row for it); the claim seeks each owner's head job.
        Index("ix_jobs_claim", "status", "system_priority", "id", "owner_id"),
        # DESC so "ORDER BY system_priority DESC, priority DESC, id" is an index walk, not a sort of the user's queue;
        # queue_position also counts the owner's own jobs reordered by their priority on it.
        Index("ix_jobs_owner_queue", "status", "owner_id", text("system_priority DESC"), text("priority DESC"), "id"),
        Index("ix_jobs_owner_id", "owner_id", "id"),
        Index("ix_jobs_lease", "status", "lease_expires_at"),
        UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_idempotency"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_id: Mapped[str] = mapped_column(String(200))
    seeds: Mapped[list[int]] = mapped_column(JSON)
    # The owner's own order among their jobs (anyone may set it): it never moves a job past other users' turns.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # Queue-wide priority, ahead of the users' turns: set only by an administrator (issue 13, item 5).
    system_priority: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # The most jobs of this owner that may run at once while this one starts (the owner's plan: issue 15); 0: no
    # limit. Stored on the job at submit, so the claim needs no join to the plans.
    max_running: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # The engine's progress: step of total steps of the current sampling call, and the 1-based image that call makes
    # when the engine makes them one after another (0: all in one call).
    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    progress_image: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Outputs the output check refused to store (issue 17: NSFW policy "block").
    blocked_outputs: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Issue 18. A per-job webhook receiver {"url", "events"} (None: none), and the last status whose webhook events
    # were queued in the outbox (None: the job has no receiver at all; domain/webhooks).
    webhook: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)
    webhook_state: Mapped[str | None] = mapped_column(String(16), nullable=True, default=None, index=True)
    # The API key that submitted the job (its per-key webhook endpoints hear of it); None: a session or the CLI.
    api_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True, default=None)
    # What a hosted provider charged for the job, in US dollars (remote engines); None: a local engine.
    provider_cost: Mapped[float | None] = mapped_column(Float, nullable=True, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(120), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Where uploaded init/mask images for img2img/inpaint are kept until the job ends.
    input_keys: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    # Seconds per phase of the successful attempt: queue_wait, load, generate, store.
    timings: Mapped[dict[str, float | None]] = mapped_column(JSON, default=dict)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class QueueTurn(Base):
    """When each user last had a job claimed: the round-robin turn order of the queue."""

    __tablename__ = "queue_turns"

    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    last_claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InstalledModel(Base):
    """A model the catalog knows about: its files live under the models directory."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    engine: Mapped[str] = mapped_column(String(32), default="diffusers")
    source: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    arch: Mapped[str | None] = mapped_column(String(32), nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # checkpoints exceed 2 GiB
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A hosted provider's model (engine = the provider, source = "remote"): its name there and options (issue 18).
    remote_model: Mapped[str | None] = mapped_column(String(200), nullable=True, default=None)
    remote_options: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)


class StyleTemplate(Base):
    """A user's own style template (built-in styles live in code, see ``styles.py``)."""

    __tablename__ = "style_templates"
    __table_args__ = (UniqueConstraint("owner_id", "slug", name="uq_style_templates_owner_slug"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    slug: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(120))
    category: Mapped[str] = mapped_column(String(64), default="custom")
    prompt_template: Mapped[str] = mapped_column(Text)
    negative_template: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkerRecord(Base):
    """Liveness of worker processes/threads, for ``/ready`` and operations."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    current_job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # The model ids this worker takes jobs for (those whose files it has); NULL: any model (served.py).
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


# Core tables for the hot paths that skip the ORM unit of work (submit, claim); typed as Table for Core.
JOBS = cast(Table, Job.__table__)
QUEUE_TURNS = cast(Table, QueueTurn.__table__)
