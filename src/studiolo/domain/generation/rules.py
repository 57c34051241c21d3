"""The rules a generation request follows, with the limits they use, and how broken rules are reported.

One source for every limit: the sizes' fixed rules are here, the configured ones come from the settings
(``GenerationLimits``). ``GenerationParams`` checks all of them in one validation, given the limits in its
validation context, and reports every broken rule at once: a request once learned them one at a time (``n=100``
said "<= 64", then ``n=64`` said "at most 8 per job"; ``13x13`` said "multiples of 8", then ``16x16`` "at least 64").
The HTTP API and the CLI turn the result into the same ``InvalidInput`` with ``params_error``
(tests/integration/test_generation_rules.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError, ValidationInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

from studiolo.engines.base import Capabilities, JobKind
from studiolo.engines.schedules import SCHEDULES, is_automatic, normalize_schedule
from studiolo.errors import InvalidInput, describe_errors, plain_message
from studiolo.settings import Settings

MIN_SIDE = 64
MAX_SIDE = 8192
SIDE_MULTIPLE = 8
SIZE_PATTERN = re.compile(r"(\d{1,5})x(\d{1,5})")
# Broken rules with a code of their own: alone (or all of one kind) they give the error its code, as they did when
# the service checked them one at a time; any other mix is invalid_input, each rule's code in details.errors[].type.
OWN_CODES = frozenset(
    {
        "invalid_size",
        "image_too_large",
        "too_many_images",
        "prompt_too_long",
        "invalid_scheduler",
        "unsupported_variation",
    }
)


@dataclass(frozen=True)
class GenerationLimits:
    """The configured limits of a generation request."""

    prompt_chars: int
    images_per_job: int
    max_pixels: int

    @classmethod
    def from_settings(cls, settings: Settings) -> GenerationLimits:
        return cls(settings.max_prompt_chars, settings.max_images_per_job, settings.max_pixels)

    def context(self) -> dict[str, Any]:
        """The validation context that makes ``GenerationParams`` check these limits too."""
        return {"limits": self}


def limits_of(info: ValidationInfo) -> GenerationLimits | None:
    """The limits a validation was given; None: only the fixed rules are checked (``prepare`` checks the rest)."""
    limits = (info.context or {}).get("limits")
    return limits if isinstance(limits, GenerationLimits) else None


def broken(code: str, message: str, loc: tuple[str, ...] = (), value: Any = None, **ctx: Any) -> InitErrorDetails:
    """One broken rule, as pydantic reports it. ``message`` is final text (pydantic would fill in "{name}" for a
    ``ctx`` name: no message here holds one)."""
    return {"type": PydanticCustomError(code, message, ctx or None), "loc": loc, "input": value}


def prompt_rules(prompt: str, limits: GenerationLimits | None) -> list[InitErrorDetails]:
    if not prompt.strip():
        return [broken("prompt_empty", "Must not be empty or only spaces", ("prompt",), prompt)]
    if limits is not None and len(prompt) > limits.prompt_chars:
        message = f"At most {limits.prompt_chars} characters (got {len(prompt)})"
        return [broken("prompt_too_long", message, ("prompt",), None, limit=limits.prompt_chars, length=len(prompt))]
    return []


def images_rules(n: int, limits: GenerationLimits | None) -> list[InitErrorDetails]:
    if n < 1:
        return [broken("too_few_images", f"At least 1 image (got {n})", ("n",), n)]
    if limits is not None and n > limits.images_per_job:
        message = f"At most {limits.images_per_job} images per job (got {n})"
        return [broken("too_many_images", message, ("n",), n, limit=limits.images_per_job)]
    return []


def scheduler_rules(scheduler: str | None) -> list[InitErrorDetails]:
    """A sigma schedule any engine might offer (in any case: "Karras" as A1111 writes it is "karras"); which ones the
    chosen model offers is ``model_rules``'s check."""
    if scheduler is None or normalize_schedule(scheduler) in SCHEDULES:
        return []
    message = f"Must be one of {', '.join(SCHEDULES)} (got {scheduler!r})"
    return [broken("invalid_scheduler", message, ("scheduler",), scheduler)]


def model_rules(
    kind: JobKind, scheduler: str | None, variation_strength: float, caps: Capabilities, model_id: str
) -> list[InitErrorDetails]:
    """The sampling options the chosen model must offer: the schedule, and a variation seed for this kind of job."""
    errors = []
    if not is_automatic(scheduler) and scheduler not in caps.schedulers:
        offered = ", ".join(["automatic", *caps.schedulers])
        message = f"Model '{model_id}' offers the schedules {offered} (got {scheduler!r})"
        errors.append(broken("invalid_scheduler", message, ("scheduler",), scheduler))
    if variation_strength > 0 and kind not in caps.variation_kinds:
        kinds = ", ".join(caps.variation_kinds) or "no job"
        message = f"Model '{model_id}' takes a variation seed for {kinds}, not {kind}"
        errors.append(broken("unsupported_variation", message, ("variation_strength",), variation_strength))
    return errors


def _side_problems(*sides: int) -> list[str]:
    problems = []
    if any(side % SIDE_MULTIPLE for side in sides):
        problems.append(f"multiples of {SIDE_MULTIPLE}" if len(sides) > 1 else f"a multiple of {SIDE_MULTIPLE}")
    if any(side < MIN_SIDE for side in sides):
        problems.append(f"at least {MIN_SIDE}")
    if any(side > MAX_SIDE for side in sides):
        problems.append(f"at most {MAX_SIDE}")
    return problems


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def pixels_rules(width: int, height: int, max_pixels: int | None, loc: tuple[str, ...]) -> list[InitErrorDetails]:
    if max_pixels is None or width * height <= max_pixels:
        return []
    message = f"{width}x{height} is {width * height} pixels, more than the {max_pixels} allowed"
    return [broken("image_too_large", message, loc, None, width=width, height=height, max_pixels=max_pixels)]


def size_rules(
    size: str | None,
    aspect_ratio: str | None,
    width: int | None,
    height: int | None,
    limits: GenerationLimits | None,
    *,
    failed: frozenset[str] = frozenset(),
) -> list[InitErrorDetails]:
    """Every rule the requested output size breaks (given as ``size``, ``aspect_ratio`` or ``width`` and ``height``);
    an aspect ratio's size is the model's to choose, and always fits. ``failed``: fields that broke a rule of their
    own (already reported, so not "missing")."""
    if sum([size is not None, aspect_ratio is not None, width is not None or height is not None]) > 1:
        return [broken("invalid_size", "Give the size one way: size, aspect_ratio, or width and height")]
    max_pixels = limits.max_pixels if limits is not None else None
    if size is not None:
        match = SIZE_PATTERN.fullmatch(size)
        if match is None:
            return [broken("invalid_size", f"Give it as WIDTHxHEIGHT, e.g. 768x768 (got {size!r})", ("size",), size)]
        w, h = int(match[1]), int(match[2])
        errors = []
        if problems := _side_problems(w, h):
            message = f"Width and height must be {_and(problems)} (got {size})"
            errors.append(broken("invalid_size", message, ("size",), size, width=w, height=h))
        return errors + pixels_rules(w, h, max_pixels, ("size",))
    if width is None and height is None:
        return []
    if width is None or height is None:
        missing = "height" if height is None else "width"
        if missing in failed:
            return [
                broken("invalid_size", f"Must be {_and(problems)} (got {value})", (name,), value)
                for name, value in (("width", width), ("height", height))
                if value is not None and (problems := _side_problems(value))
            ]
        return [broken("invalid_size", "Give width and height together", (missing,))]
    errors = [
        broken("invalid_size", f"Must be {_and(problems)} (got {value})", (name,), value)
        for name, value in (("width", width), ("height", height))
        if (problems := _side_problems(value))
    ]
    return errors + pixels_rules(width, height, max_pixels, ("width",))


def raise_first(errors: list[InitErrorDetails]) -> None:
    """In a field validator: raise the broken rule, if any (pydantic puts it at the field; one rule per field)."""
    if errors:
        error = errors[0]["type"]
        assert isinstance(error, PydanticCustomError)
        raise error


def raise_broken(title: str, errors: list[InitErrorDetails]) -> None:
    """Raise pydantic's ValidationError for ``errors``, if there are any."""
    if errors:
        raise ValidationError.from_exception_data(title, errors)


def as_broken(exc: ValidationError) -> list[InitErrorDetails]:
    """pydantic's errors as rules to raise again with more: their messages are final, so only our own rules keep
    their context (pydantic's could hold a name the message mentions in braces)."""
    return [
        {
            "type": PydanticCustomError(e["type"], plain_message(e), e.get("ctx") if e["type"] in OWN_CODES else None),
            "loc": e["loc"],
            "input": e.get("input"),
        }
        for e in exc.errors(include_url=False)
    ]


def params_error(exc: ValidationError, *loc: str) -> InvalidInput:
    """A request's broken rules as one 422, each in ``details.errors`` (``loc`` prefixed with ``loc``, as FastAPI's
    own bodies are with "body"). The code: the rules' own when all are of one such kind (``too_many_images``, ...),
    else ``invalid_input``; a single rule's context (e.g. ``limit``) and a batch item's ``index`` join the details."""
    errors = exc.errors(include_url=False)
    listed = [{"loc": [*loc, *(str(p) for p in e["loc"])], "msg": plain_message(e), "type": e["type"]} for e in errors]
    codes = {e["type"] for e in errors}
    code = codes.pop() if len(codes) == 1 and next(iter(codes)) in OWN_CODES else "invalid_input"
    details: dict[str, Any] = dict(errors[0].get("ctx") or {}) if len(errors) == 1 and code != "invalid_input" else {}
    details["errors"] = listed
    # The one field every broken rule concerns, if there is one: the web studio shows the message at that field.
    fields = {e["loc"][-1] for e in errors if e["loc"]}
    if len(fields) == 1:
        details["field"] = str(fields.pop())
    # A batch item: generations.<index>.field.
    items = {e["loc"][1] for e in errors if len(e["loc"]) > 1 and e["loc"][0] == "generations"}
    if len(items) == 1 and all(len(e["loc"]) > 1 and e["loc"][0] == "generations" for e in errors):
        details["index"] = items.pop()
    return InvalidInput(describe_errors(listed), code=code, details=details)


def refuse(errors: list[InitErrorDetails]) -> None:
    """Raise ``params_error``'s InvalidInput for rules checked outside a validation (``GenerationService.prepare``),
    if any is broken."""
    try:
        raise_broken("GenerationParams", errors)
    except ValidationError as exc:
        raise params_error(exc) from None


def raw_size_fields(data: Any, failed: frozenset[str]) -> dict[str, Any]:
    """The size fields of a request whose validation failed, as the size rules take them: those that failed their
    own checks or are not of their type are left out, numbers given as text (a form's fields) read as numbers."""
    values: dict[str, Any] = {"size": None, "aspect_ratio": None, "width": None, "height": None}
    if not isinstance(data, Mapping):
        return values
    for name in values:
        value = data.get(name)
        if name in failed or value is None:
            continue
        if name in ("width", "height"):
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                continue
        elif not isinstance(value, str):
            continue
        values[name] = value
    return values
