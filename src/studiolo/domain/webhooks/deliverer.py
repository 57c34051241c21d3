"""The deliverer: a background thread in every process that runs jobs. It sweeps job transitions into the outbox,
claims due messages with a lease (so two processes never send the same one, and a killed process's claim is taken
over once its lease passes), POSTs them signed, and records each attempt.

Woken by the event bus when a job ends (low latency), with a fallback poll every ``webhook_poll_seconds``. Retries
follow the Standard Webhooks schedule with ±20 % jitter, cut at ``webhook_retry_hours``; 410 Gone disables the
endpoint at once; an endpoint failing for ``webhook_retry_hours`` is disabled and its owner mailed."""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import or_, select, update

from studiolo import __version__
from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.accounts.mail import Mail, MailOutbox
from studiolo.domain.accounts.models import User
from studiolo.domain.generation.events import Event, EventBus
from studiolo.domain.webhooks import events as ev
from studiolo.domain.webhooks import ssrf
from studiolo.domain.webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookMessage
from studiolo.domain.webhooks.outbox import Outbox
from studiolo.domain.webhooks.service import WebhookService, account_context, endpoint_context
from studiolo.domain.webhooks.signing import active_secrets, signature_header

log = logging.getLogger(__name__)

# Seconds before each retry (the spec's example): attempt n+1 waits SCHEDULE[n] after attempt n failed.
SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
LEASE_SECONDS = 120.0
CLAIM_BATCH = 20
BODY_LIMIT = 1024
USER_AGENT = f"Studiolo-Webhooks/{__version__}"


def retry_delay(attempts: int, retry_hours: float, rng: random.Random) -> float | None:
    """Seconds until the next try after ``attempts`` failed ones, or None when the schedule (cut at
    ``retry_hours`` since the first attempt) is spent."""
    if attempts >= len(SCHEDULE):
        return None
    if sum(SCHEDULE[1 : attempts + 1]) > retry_hours * 3600:
        return None
    return SCHEDULE[attempts] * rng.uniform(0.8, 1.2)


def retry_after(response: httpx.Response) -> float | None:
    """A 429/503's ``Retry-After`` in seconds (delta form), capped at a day."""
    if response.status_code not in (429, 503):
        return None
    value = response.headers.get("retry-after", "")
    return min(float(value), 86400.0) if value.isdigit() else None


@dataclass
class Outcome:
    status_code: int | None
    error: str | None
    body: str | None
    duration_ms: int
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def pinned_request(url: str, *, allow_private: bool) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(URL naming the checked address, Host header, httpx extensions): the request goes to the address that was
    checked, not to whatever a second DNS lookup answers; for https the hostname stays the TLS server name, so the
    certificate is verified against it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = ssrf.resolve(host, port, allow_private=allow_private)
    shown = (
        f"[{address}]" if isinstance(ipaddress.ip_address(address.split("%")[0]), ipaddress.IPv6Address) else address
    )
    netloc = f"{shown}:{parts.port}" if parts.port else shown
    host_header = f"{host}:{parts.port}" if parts.port else host
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), {"host": host_header}, extensions


class Deliverer:
    def __init__(
        self,
        *,
        db: Database,
        service: WebhookService,
        outbox: Outbox,
        mail: MailOutbox,
        events: EventBus | None = None,
        clock: Callable[[], datetime] = utcnow,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
        worker_id: str = "deliverer",
    ) -> None:
        self.db = db
        self.service = service
        self.settings = service.settings
        self.outbox = outbox
        self.mail = mail
        self.events = events
        self.clock = clock
        self.rng = rng or random.Random()
        self.worker_id = worker_id
        self.client = httpx.Client(
            transport=transport,
            timeout=self.settings.webhook_timeout_seconds,
            follow_redirects=False,
            headers={"user-agent": USER_AGENT},
        )
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._progress_due: dict[str, float] = {}
        self._progress_jobs: set[str] = set()
        self._lock = threading.Lock()

    # --- the thread -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.events is not None:
            self._unsubscribe = self.events.subscribe_all(self._on_event, types=("started", "progress", *ev.TERMINAL))
        self.service.wake = self._wakeup.set
        self._thread = threading.Thread(target=self._loop, name="webhook-deliverer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._stop.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.client.close()

    def _on_event(self, job_id: str, event: Event) -> None:
        """On a worker's thread: note what to do and wake the deliverer; no database work here."""
        if event.get("type") == "progress":
            now = time.monotonic()
            with self._lock:
                if self._progress_due.get(job_id, 0.0) > now:
                    return
                self._progress_due[job_id] = now + self.settings.webhook_progress_seconds
                self._progress_jobs.add(job_id)
        elif event.get("type") in ev.TERMINAL:
            with self._lock:
                self._progress_due.pop(job_id, None)
        self._wakeup.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wakeup.wait(self.settings.webhook_poll_seconds)
            self._wakeup.clear()
            try:
                self.run_once()
            except Exception:  # a database hiccup must not end delivery for good; the next round retries
                log.exception("webhook delivery round failed")

    # --- one round ------------------------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Sweep transitions, queue progress, deliver every due message; returns how many attempts it made."""
        self.outbox.sweep()
        with self._lock:
            jobs, self._progress_jobs = self._progress_jobs, set()
        for job_id in jobs:
            self.outbox.progress(job_id)
        sent = 0
        while not self._stop.is_set():
            claimed = self.claim()
            if not claimed:
                return sent
            for message_id in claimed:
                self.deliver(message_id)
                sent += 1
        return sent

    def claim(self, limit: int = CLAIM_BATCH) -> list[str]:
        """Lease up to ``limit`` due messages to this deliverer. The conditional UPDATE is what makes a claim
        exclusive (SQLite serialises writers; SKIP LOCKED spares PostgreSQL claimers waiting on each other)."""
        now = self.clock()
        until = now + timedelta(seconds=LEASE_SECONDS)
        claimed: list[str] = []
        with self.db.session() as session:
            due = or_(WebhookMessage.lease_until.is_(None), WebhookMessage.lease_until < now)
            ids = session.scalars(
                select(WebhookMessage.id)
                .where(WebhookMessage.status == "pending", WebhookMessage.next_attempt_at <= now, due)
                .order_by(WebhookMessage.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            for message_id in ids:
                taken = session.execute(
                    update(WebhookMessage)
                    .where(WebhookMessage.id == message_id, WebhookMessage.status == "pending", due)
                    .values(lease_until=until)
                    .execution_options(synchronize_session=False)
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(message_id)
        return claimed

    def _prepare(self, message_id: str) -> tuple[WebhookMessage, list[str]] | None:
        """The message and the secrets that sign it; None (and the message failed) when its endpoint is gone or
        disabled."""
        now = self.clock()
        with self.db.session() as session:
            m = session.get_one(WebhookMessage, message_id)
            if m.endpoint_id is not None:
                e = session.get(WebhookEndpoint, m.endpoint_id)
                if e is None or not e.enabled:
                    m.status, m.lease_until, m.last_error = "failed", None, "endpoint_disabled"
                    return None
                m.url = e.url  # a corrected URL serves the retries and resends of what failed before
                ctx, row = endpoint_context(e.id), (e.secret, e.previous_secret, e.previous_secret_expires_at)
            else:
                s = self.service._account_secret(session, m.owner_id)
                ctx, row = account_context(m.owner_id), (s.secret, s.previous_secret, s.previous_secret_expires_at)
            signing = active_secrets(self.service.box, ctx, *row, now)
            session.expunge(m)
            return m, signing

    def send(self, message: WebhookMessage, signing: list[str]) -> Outcome:
        """One POST: signed now, to the address checked now."""
        stamp = int(self.clock().timestamp())
        headers = {
            "webhook-id": message.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature_header(signing, message.id, stamp, message.payload),
            "content-type": "application/json",
        }
        started = time.monotonic()
        try:
            url, host, extensions = pinned_request(message.url, allow_private=self.settings.webhooks_allow_private)
            response = self.client.post(
                url, content=message.payload.encode(), headers={**headers, **host}, extensions=extensions
            )
        except ssrf.ForbiddenDestination:
            return Outcome(None, "address_forbidden", None, int((time.monotonic() - started) * 1000))
        except httpx.TimeoutException:
            return Outcome(None, "timeout", None, int((time.monotonic() - started) * 1000))
        except (httpx.HTTPError, OSError) as exc:
            return Outcome(None, "connection_failed", str(exc)[:BODY_LIMIT], int((time.monotonic() - started) * 1000))
        body = response.content[:BODY_LIMIT].decode("utf-8", "replace")
        ms = int((time.monotonic() - started) * 1000)
        return Outcome(response.status_code, None, body, ms, retry_after(response))

    def deliver(self, message_id: str) -> Outcome | None:
        """Send one claimed message and record the attempt, the retry or the end."""
        prepared = self._prepare(message_id)
        if prepared is None:
            return None
        message, signing = prepared
        outcome = self.send(message, signing)
        self._record(message_id, outcome)
        return outcome

    def _record(self, message_id: str, outcome: Outcome) -> None:
        now = self.clock()
        disabled: tuple[str, str, str] | None = None
        with self.db.session() as session:
            m = session.get_one(WebhookMessage, message_id)
            m.attempts += 1
            m.lease_until = None
            m.last_status_code, m.last_error = outcome.status_code, outcome.error
            session.add(
                WebhookAttempt(
                    message_id=m.id,
                    attempted_at=now,
                    status_code=outcome.status_code,
                    error=outcome.error,
                    response_body=outcome.body,
                    duration_ms=outcome.duration_ms,
                )
            )
            endpoint = session.get(WebhookEndpoint, m.endpoint_id) if m.endpoint_id is not None else None
            if outcome.ok:
                m.status, m.delivered_at, m.next_attempt_at = "succeeded", now, None
                if endpoint is not None:
                    endpoint.failing_since = None
                return
            delay = retry_delay(m.attempts, self.settings.webhook_retry_hours, self.rng)
            if outcome.retry_after is not None and delay is not None:
                delay = max(delay, outcome.retry_after)
            gone = outcome.status_code == 410
            if gone or delay is None or m.event_type == ev.PROGRESS:
                m.status, m.next_attempt_at = "failed", None
            else:
                m.next_attempt_at = now + timedelta(seconds=delay)
            if endpoint is not None and endpoint.enabled:
                endpoint.failing_since = endpoint.failing_since or now
                failing_for = (now - endpoint.failing_since).total_seconds()
                # Failing for the window, or a message's retries spent with no success in between: give up on it.
                spent = delay is None and m.event_type != ev.PROGRESS
                if gone or spent or failing_for >= self.settings.webhook_retry_hours * 3600:
                    endpoint.enabled = False
                    endpoint.disabled_reason = "gone" if gone else "failing"
                    owner = session.get(User, endpoint.owner_id)
                    if owner is not None:
                        disabled = (owner.email, endpoint.url, endpoint.disabled_reason)
        if disabled is not None:
            self._mail_disabled(*disabled)

    def _mail_disabled(self, to: str, url: str, reason: str) -> None:
        why = (
            "it answered 410 Gone"
            if reason == "gone"
            else f"every delivery failed for {self.settings.webhook_retry_hours:g} hours"
        )
        self.mail.send(
            Mail(
                to=to,
                kind="webhook_disabled",
                subject="A Studiolo webhook endpoint was disabled",
                text=f"Your webhook endpoint {url} was disabled because {why}. "
                "Fix it, enable it again on your Account page, and resend what it missed from its delivery log.",
            )
        )
