"""Request and response bodies of the webhooks API (/api/v1/webhooks)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000)
    description: str = Field(default="", max_length=200)
    # Our event types or Replicate's filter names; None: every event.
    events: list[str] | None = Field(default=None, max_length=20)
    # Only the jobs this API key (one of the caller's) submits; None: every job of the account.
    api_key_id: str | None = Field(default=None, max_length=36)


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2000)
    description: str | None = Field(default=None, max_length=200)
    events: list[str] | None = Field(default=None, max_length=20)
    all_events: bool = False  # events=None cannot say "all" in a PATCH; this does
    enabled: bool | None = None


class EndpointView(BaseModel):
    id: str
    url: str
    description: str
    events: list[str] | None
    api_key_id: str | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime


class SecretView(BaseModel):
    secret: str
    # The rotated-out secret still signs (a second entry in webhook-signature) until then.
    previous_expires_at: datetime | None = None


class AttemptView(BaseModel):
    attempted_at: datetime
    status_code: int | None
    error: str | None
    response_body: str | None
    duration_ms: int


class MessageView(BaseModel):
    id: str
    endpoint_id: str | None
    job_id: str | None
    url: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: str
    attempt_log: list[AttemptView] = []


class EndpointList(BaseModel):
    """A list in an object (as Svix's API), so fields such as a page cursor can join it later."""

    data: list[EndpointView]


class MessageList(BaseModel):
    data: list[MessageView]
