"""A vision model's answer -> a PhotoDescription: JSON found and repaired (code fences, prose around it, single quotes,
trailing commas, Python literals), refusals told apart from broken answers, then every field checked and coerced.
Rejects what cannot be repaired (502 describer_invalid_reply); tests/unit/test_describe_validate.py."""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Final

from studiolo.domain.understanding.colors import hex_of_name, name_of, parse_hex, to_hex
from studiolo.domain.understanding.ports import DescriberInvalidReply, refused
from studiolo.domain.understanding.schemas import Colour, PhotoDescription

_FENCE: Final = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(?P<body>.*?)```", re.DOTALL)
_TRAILING_COMMA: Final = re.compile(r",\s*(?=[}\]])")
# How models phrase a refusal when they answer in prose instead of JSON.
_REFUSAL: Final = re.compile(
    r"\b(I(?:'m| am) (?:sorry|unable|not able)|I can(?:no|')t (?:help|assist|describe|identify|provide)|"
    r"I won't|cannot (?:help|assist) with)",
    re.IGNORECASE,
)
_TEXT_MAX: Final = 300
_LIST_MAX: Final = 12


def _candidates(text: str) -> list[str]:
    found = [m.group("body").strip() for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if start >= 0 and end > start:
        found.append(text[start : end + 1])
    return [text.strip(), *found]


def _loads(candidate: str) -> Any:
    for attempt in (candidate, _TRAILING_COMMA.sub("", candidate)):
        try:
            return json.loads(attempt)
        except ValueError:
            pass
        try:
            # {'subject': 'a fox', 'features': ['red fur'], 'x': None}: a Python literal, never evaluated as code.
            return ast.literal_eval(attempt)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    return None


def parse_reply(text: str) -> dict[str, Any]:
    """The JSON object in a model's text answer. A prose refusal -> 422 describe_refused; anything else that is not
    an object -> 502 describer_invalid_reply."""
    if not text.strip():
        raise DescriberInvalidReply("The vision model's answer was empty.", details={"reason": "empty answer"})
    for candidate in _candidates(text):
        data = _loads(candidate)
        if isinstance(data, dict):
            if isinstance(data.get("refusal"), str) and data["refusal"].strip() and not data.get("subject"):
                raise refused(data["refusal"])
            return data
    if _REFUSAL.search(text):
        raise refused(text.strip())
    raise DescriberInvalidReply(
        "The vision model's answer is not the JSON description asked for.",
        details={"reason": "not JSON", "answer": text.strip()[:300]},
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = ", ".join(_text(v) for v in value if _text(v))
    elif isinstance(value, dict):
        value = ", ".join(f"{k} {_text(v)}" for k, v in value.items())
    return " ".join(str(value).split())[:_TEXT_MAX]


def _texts(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else re.split(r"[;,]\s*", str(value))
    cleaned = [_text(v) for v in items]
    return [c for c in cleaned if c][:_LIST_MAX]


def _colour(value: Any) -> Colour | None:
    """ "rust", "#b7410e", {"name": "rust", "hex": "b7410e", "share": 0.3} or ["rust", "#b7410e"] -> a Colour."""
    name, hex_text, share = "", "", None
    if isinstance(value, str):
        rgb = parse_hex(value)
        name, hex_text = (value, value) if rgb else (value, "")
    elif isinstance(value, dict):
        name = _text(value.get("name") or value.get("color") or value.get("colour"))
        hex_text = str(value.get("hex") or "")
        share = value.get("share")
    elif isinstance(value, list | tuple) and value:
        name = _text(value[0])
        hex_text = str(value[1]) if len(value) > 1 else ""
    rgb = parse_hex(hex_text) if hex_text else None
    if not name and rgb is None:
        return None
    hex_value = to_hex(rgb) if rgb else hex_of_name(name)
    if rgb and (not name or parse_hex(name)):
        name = name_of(rgb)  # a bare "#aabbcc" gets the everyday name a prompt can use
    ok = isinstance(share, int | float) and not isinstance(share, bool) and 0 <= share <= 1
    return Colour(name=name[:60], hex=hex_value, share=float(share) if ok and share is not None else None)


def _colours(value: Any) -> list[Colour]:
    items = value if isinstance(value, list) else _texts(value)
    colours = [c for c in (_colour(v) for v in items) if c is not None]
    return colours[:_LIST_MAX]


def normalize(data: dict[str, Any]) -> PhotoDescription:
    """Every field of a model's object coerced to the schema: strings trimmed, lists from comma text, colours with
    a checked hex (or one from their name). No subject at all -> 502 describer_invalid_reply."""
    lowered = {str(k).strip().lower(): v for k, v in data.items()}
    # Names models use for the same fields.
    subject = lowered.get("subject") or lowered.get("description") or lowered.get("character")
    description = PhotoDescription(
        subject=_text(subject),
        species=_text(lowered.get("species") or lowered.get("animal")),
        archetype=_text(lowered.get("archetype") or lowered.get("role")),
        colors=_colours(lowered.get("colors") or lowered.get("colours") or lowered.get("palette")),
        features=_texts(lowered.get("features") or lowered.get("distinctive_features")),
        clothing=_texts(lowered.get("clothing") or lowered.get("accessories") or lowered.get("outfit")),
        mood=_text(lowered.get("mood") or lowered.get("expression")),
        setting=_text(lowered.get("setting") or lowered.get("background")),
    )
    if not description.subject:
        raise DescriberInvalidReply(
            "The vision model's answer has no subject.",
            details={"reason": "no subject", "fields": sorted(lowered)[:20]},
        )
    return description


def suggested(data: dict[str, Any], key: str) -> str:
    """A free-text field of the answer outside the description (the model's own prompt or style), cleaned."""
    return _text(data.get(key))
