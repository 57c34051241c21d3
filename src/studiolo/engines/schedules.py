"""The sigma schedules a request may name (A1111's "Schedule type"), without importing any engine.

The names are Studiolo's (lower case, as the API takes them); ``A1111_LABELS`` are what AUTOMATIC1111 writes in a
PNG's ``parameters`` ("Schedule type: Karras") and what its readers expect. Which engine offers which schedule is
the engine's to say (``Capabilities.schedulers``); the request rules only know the names
(domain/generation/rules.py).
"""

from __future__ import annotations

AUTOMATIC = "automatic"
# automatic: the sampler's own schedule; uniform: evenly spaced sigmas; karras / exponential / beta: the spacings of
# Karras et al. 2022, log-linear, and a Beta distribution's quantiles (diffusers' use_*_sigmas flags).
SCHEDULES: tuple[str, ...] = (AUTOMATIC, "uniform", "karras", "exponential", "beta")
A1111_LABELS: dict[str, str] = {name: name.capitalize() for name in SCHEDULES}
_BY_LABEL = {label.lower(): name for name, label in A1111_LABELS.items()}


def normalize_schedule(name: str | None) -> str | None:
    """The schedule id for ``name`` given in any case ("Karras" from a PNG reads as "karras"); None for None, the
    name unchanged (for the caller to refuse) when it is not one."""
    if name is None:
        return None
    cleaned = name.strip().lower()
    return _BY_LABEL.get(cleaned, name)


def is_automatic(name: str | None) -> bool:
    return name is None or name == AUTOMATIC
