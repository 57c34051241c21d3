"""Webhook event types, Replicate's filter names mapped onto them, and which events a job's transition makes."""

from __future__ import annotations

from collections.abc import Iterable

from studiolo.errors import InvalidInput

STARTED = "job.started"
PROGRESS = "job.progress"
TERMINAL = {"succeeded": "job.succeeded", "failed": "job.failed", "canceled": "job.canceled"}
TEST = "webhook.test"
JOB_EVENTS = (STARTED, PROGRESS, *TERMINAL.values())
EVENT_TYPES = (*JOB_EVENTS, TEST)

# Replicate's webhook_events_filter names (its "output" and "logs" both become our throttled progress event).
REPLICATE_NAMES = {
    "start": [STARTED],
    "output": [PROGRESS],
    "logs": [PROGRESS],
    "completed": list(TERMINAL.values()),
}
# A per-job webhook with no filter: everything but progress (Replicate sends start/completed always, progress on
# request; progress every half second is rarely what a one-off callback wants).
PER_JOB_DEFAULT = [STARTED, *TERMINAL.values()]


def normalize_events(names: Iterable[str] | None, *, field: str = "events") -> list[str] | None:
    """Our event types for a filter given in ours and/or Replicate's names; None stays None (all)."""
    if names is None:
        return None
    out: list[str] = []
    for name in names:
        mapped = REPLICATE_NAMES.get(name, [name] if name in JOB_EVENTS else None)
        if mapped is None:
            raise InvalidInput(
                f"Unknown webhook event {name!r}.",
                code="invalid_webhook_event",
                details={"field": field, "allowed": [*JOB_EVENTS, *REPLICATE_NAMES]},
            )
        out += [m for m in mapped if m not in out]
    return out


def wants(events: list[str] | None, event_type: str) -> bool:
    """Whether a receiver with this filter (None: all) takes ``event_type``; the test event reaches anyone."""
    return event_type == TEST or events is None or event_type in events


def transition_events(previous: str, status: str, started: bool) -> list[str]:
    """The events a job makes going from the last state whose events were queued to ``status``."""
    out: list[str] = []
    if previous == "queued" and status != "queued" and (status == "running" or started):
        out.append(STARTED)
    if status in TERMINAL:
        out.append(TERMINAL[status])
    return out
