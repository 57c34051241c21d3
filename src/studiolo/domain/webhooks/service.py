"""Webhook receivers of an account: endpoints (CRUD, secrets, rotation), the account secret that signs per-job
webhooks, the delivery log with resend, and the marker that flags submitted jobs that have receivers.

Every query is scoped to its owner: someone else's endpoint or message is a 404, as a missing one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts.models import ApiKey
from studiolo.domain.webhooks import events as ev
from studiolo.domain.webhooks import ssrf
from studiolo.domain.webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookMessage, WebhookSecret
from studiolo.domain.webhooks.schemas import (
    AttemptView,
    EndpointCreate,
    EndpointUpdate,
    EndpointView,
    MessageView,
    SecretView,
)
from studiolo.domain.webhooks.signing import SecretBox, new_message_id, new_secret
from studiolo.errors import InvalidInput, NotFound
from studiolo.settings import Settings

MAX_ENDPOINTS_PER_USER = 20


def endpoint_context(endpoint_id: str) -> str:
    return f"endpoint:{endpoint_id}"


def account_context(owner_id: str) -> str:
    return f"account:{owner_id}"


def endpoint_view(e: WebhookEndpoint) -> EndpointView:
    return EndpointView(
        id=e.id,
        url=e.url,
        description=e.description,
        events=e.events,
        api_key_id=e.api_key_id,
        enabled=e.enabled,
        disabled_reason=e.disabled_reason,
        failing_since=e.failing_since,
        created_at=e.created_at,
    )


class WebhookService:
    """The API's side of webhooks; the outbox sweep and the deliverer (deliverer.py) do the sending."""

    def __init__(self, db: Database, settings: Settings, box: SecretBox, *, clock: Callable[[], datetime] = utcnow):
        self.db = db
        self.settings = settings
        self.box = box
        self.clock = clock
        # Set by the deliverer once started: a new message (test, resend) is sent now rather than at the next poll.
        self.wake: Callable[[], None] = lambda: None
        self._lock = threading.Lock()

    # --- the marker (GenerationService.webhooks) -------------------------------------------------------------
    def mark(self, session: Session, owner_id: str, rows: list[dict[str, Any]]) -> None:
        """Refuse a per-job webhook URL that may not be called; flag rows with receivers ``webhook_state=queued``."""
        if not self.settings.webhooks_enabled:
            return
        for row in rows:
            hook = row.get("webhook")
            if hook is not None:
                ssrf.check_url(hook["url"], allow_private=self.settings.webhooks_allow_private)
                hook["events"] = ev.normalize_events(hook.get("events"), field="webhook_events_filter")
        keys = session.execute(
            select(WebhookEndpoint.api_key_id).where(WebhookEndpoint.owner_id == owner_id, WebhookEndpoint.enabled)
        ).scalars()
        endpoint_keys = set(keys)
        for row in rows:
            if row.get("webhook") is not None or None in endpoint_keys or row.get("api_key_id") in endpoint_keys:
                row["webhook_state"] = "queued"

    # --- endpoints ----------------------------------------------------------------------------------------------
    def _endpoint(self, session: Session, owner_id: str, endpoint_id: str) -> WebhookEndpoint:
        found = session.scalar(
            select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.owner_id == owner_id)
        )
        if found is None:
            raise NotFound("No such webhook endpoint.", code="webhook_endpoint_not_found")
        return found

    def list_endpoints(self, owner_id: str) -> list[EndpointView]:
        with self.db.session() as session:
            rows = session.scalars(
                select(WebhookEndpoint).where(WebhookEndpoint.owner_id == owner_id).order_by(WebhookEndpoint.id)
            ).all()
            return [endpoint_view(e) for e in rows]

    def get_endpoint(self, owner_id: str, endpoint_id: str) -> EndpointView:
        with self.db.session() as session:
            return endpoint_view(self._endpoint(session, owner_id, endpoint_id))

    def create_endpoint(self, owner_id: str, body: EndpointCreate) -> EndpointView:
        url = ssrf.check_url(body.url, allow_private=self.settings.webhooks_allow_private, field="url")
        events = ev.normalize_events(body.events)
        with self._lock, self.db.session() as session:
            if body.api_key_id is not None:
                key = session.get(ApiKey, body.api_key_id)
                if key is None or key.owner_id != owner_id:
                    raise NotFound("No such API key.", code="api_key_not_found")
            count = len(session.scalars(select(WebhookEndpoint.id).where(WebhookEndpoint.owner_id == owner_id)).all())
            if count >= MAX_ENDPOINTS_PER_USER:
                raise InvalidInput(
                    f"At most {MAX_ENDPOINTS_PER_USER} webhook endpoints per account.",
                    code="too_many_webhook_endpoints",
                )
            endpoint = WebhookEndpoint(
                owner_id=owner_id, url=url, description=body.description, events=events, api_key_id=body.api_key_id
            )
            endpoint.secret = ""
            session.add(endpoint)
            session.flush()  # the id is part of the secret's encryption context
            endpoint.secret = self.box.seal(new_secret(), endpoint_context(endpoint.id) + ":secret")
            return endpoint_view(endpoint)

    def update_endpoint(self, owner_id: str, endpoint_id: str, body: EndpointUpdate) -> EndpointView:
        with self.db.session() as session:
            endpoint = self._endpoint(session, owner_id, endpoint_id)
            if body.url is not None:
                endpoint.url = ssrf.check_url(body.url, allow_private=self.settings.webhooks_allow_private, field="url")
            if body.description is not None:
                endpoint.description = body.description
            if body.all_events:
                endpoint.events = None
            elif body.events is not None:
                endpoint.events = ev.normalize_events(body.events)
            if body.enabled is not None:
                endpoint.enabled = body.enabled
                endpoint.disabled_reason = None if body.enabled else "disabled_by_user"
                endpoint.failing_since = None
            return endpoint_view(endpoint)

    def delete_endpoint(self, owner_id: str, endpoint_id: str) -> None:
        with self.db.session() as session:
            session.delete(self._endpoint(session, owner_id, endpoint_id))

    def endpoint_secret(self, owner_id: str, endpoint_id: str) -> SecretView:
        with self.db.session() as session:
            e = self._endpoint(session, owner_id, endpoint_id)
            return self._secret_view(endpoint_context(e.id), e.secret, e.previous_secret_expires_at)

    def rotate_endpoint_secret(self, owner_id: str, endpoint_id: str) -> SecretView:
        with self.db.session() as session:
            e = self._endpoint(session, owner_id, endpoint_id)
            ctx = endpoint_context(e.id)
            e.previous_secret, e.previous_secret_expires_at = self._rotated(ctx, e.secret)
            e.secret = self.box.seal(new_secret(), ctx + ":secret")
            return self._secret_view(ctx, e.secret, e.previous_secret_expires_at)

    def _rotated(self, ctx: str, sealed: str) -> tuple[str, datetime]:
        """The current secret re-sealed as the previous one, and when it stops signing."""
        old = self.box.open(sealed, ctx + ":secret")
        until = self.clock() + timedelta(hours=self.settings.webhook_secret_grace_hours)
        return self.box.seal(old, ctx + ":previous"), until

    def _secret_view(self, ctx: str, sealed: str, previous_expires_at: datetime | None) -> SecretView:
        live = previous_expires_at if previous_expires_at is not None and previous_expires_at > self.clock() else None
        return SecretView(secret=self.box.open(sealed, ctx + ":secret"), previous_expires_at=live)

    # --- the account secret (per-job webhooks) --------------------------------------------------------------------
    def _account_secret(self, session: Session, owner_id: str) -> WebhookSecret:
        row = session.get(WebhookSecret, owner_id)
        if row is None:
            row = WebhookSecret(
                owner_id=owner_id, secret=self.box.seal(new_secret(), account_context(owner_id) + ":secret")
            )
            session.add(row)
            session.flush()
        return row

    def account_secret(self, owner_id: str) -> SecretView:
        """The secret that signs this account's per-job webhooks, made on first need."""
        with self._lock, self.db.session() as session:
            row = self._account_secret(session, owner_id)
            return self._secret_view(account_context(owner_id), row.secret, row.previous_secret_expires_at)

    def rotate_account_secret(self, owner_id: str) -> SecretView:
        with self._lock, self.db.session() as session:
            row = self._account_secret(session, owner_id)
            ctx = account_context(owner_id)
            row.previous_secret, row.previous_secret_expires_at = self._rotated(ctx, row.secret)
            row.secret = self.box.seal(new_secret(), ctx + ":secret")
            row.rotated_at = self.clock()
            return self._secret_view(ctx, row.secret, row.previous_secret_expires_at)

    # --- test event, delivery log, resend -------------------------------------------------------------------------
    def send_test(self, owner_id: str, endpoint_id: str) -> MessageView:
        """Queue a ``webhook.test`` event to the endpoint (even a disabled one: that is how one checks a fix)."""
        from studiolo.domain.webhooks.outbox import event_body

        now = self.clock()
        with self.db.session() as session:
            e = self._endpoint(session, owner_id, endpoint_id)
            body = event_body(ev.TEST, now, {"endpoint_id": e.id})
            message = WebhookMessage(
                id=new_message_id(),
                owner_id=owner_id,
                endpoint_id=e.id,
                url=e.url,
                event_type=ev.TEST,
                payload=body,
                next_attempt_at=now,
                created_at=now,
            )
            session.add(message)
            session.flush()
            view = self._message_view(message, [])
        self.wake()
        return view

    def _message(self, session: Session, owner_id: str, message_id: str) -> WebhookMessage:
        found = session.scalar(
            select(WebhookMessage).where(WebhookMessage.id == message_id, WebhookMessage.owner_id == owner_id)
        )
        if found is None:
            raise NotFound("No such webhook message.", code="webhook_message_not_found")
        return found

    def _message_view(self, m: WebhookMessage, attempts: list[WebhookAttempt]) -> MessageView:
        return MessageView(
            id=m.id,
            endpoint_id=m.endpoint_id,
            job_id=m.job_id,
            url=m.url,
            event_type=m.event_type,
            status=m.status,
            attempts=m.attempts,
            next_attempt_at=m.next_attempt_at if m.status == "pending" else None,
            last_status_code=m.last_status_code,
            last_error=m.last_error,
            created_at=m.created_at,
            delivered_at=m.delivered_at,
            payload=m.payload,
            attempt_log=[
                AttemptView(
                    attempted_at=a.attempted_at,
                    status_code=a.status_code,
                    error=a.error,
                    response_body=a.response_body,
                    duration_ms=a.duration_ms,
                )
                for a in attempts
            ],
        )

    def messages(
        self, owner_id: str, endpoint_id: str | None, *, status: str | None = None, limit: int = 50
    ) -> list[MessageView]:
        """The delivery log, newest first: an endpoint's messages, or (``endpoint_id`` None) the per-job ones."""
        with self.db.session() as session:
            if endpoint_id is not None:
                self._endpoint(session, owner_id, endpoint_id)
            query = select(WebhookMessage).where(
                WebhookMessage.owner_id == owner_id,
                WebhookMessage.endpoint_id == endpoint_id
                if endpoint_id is not None
                else WebhookMessage.endpoint_id.is_(None),
            )
            if status is not None:
                query = query.where(WebhookMessage.status == status)
            found = session.scalars(query.order_by(WebhookMessage.created_at.desc()).limit(limit)).all()
            attempts: dict[str, list[WebhookAttempt]] = {m.id: [] for m in found}
            if found:
                for a in session.scalars(
                    select(WebhookAttempt)
                    .where(WebhookAttempt.message_id.in_(list(attempts)))
                    .order_by(WebhookAttempt.attempted_at)
                ).all():
                    attempts[a.message_id].append(a)
            return [self._message_view(m, attempts[m.id]) for m in found]

    def resend(self, owner_id: str, message_id: str) -> MessageView:
        """Deliver a message again (same ``webhook-id``, fresh retry schedule); refused while its endpoint is
        disabled (enable it first)."""
        now = self.clock()
        with self.db.session() as session:
            m = self._message(session, owner_id, message_id)
            if m.endpoint_id is not None:
                endpoint = self._endpoint(session, owner_id, m.endpoint_id)
                if not endpoint.enabled:
                    raise InvalidInput("Enable the endpoint before resending.", code="webhook_endpoint_disabled")
            m.status, m.attempts, m.next_attempt_at, m.lease_until = "pending", 0, now, None
            view = self._message_view(m, [])
        self.wake()
        return view

    def receivers_query(self, owner_id: str, api_key_id: str | None) -> Any:
        """The enabled endpoints that hear of a job of ``owner_id`` submitted with ``api_key_id``."""
        return select(WebhookEndpoint).where(
            WebhookEndpoint.owner_id == owner_id,
            WebhookEndpoint.enabled,
            or_(WebhookEndpoint.api_key_id.is_(None), WebhookEndpoint.api_key_id == api_key_id),
        )
