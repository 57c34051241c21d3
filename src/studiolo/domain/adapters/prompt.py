"""Adapters named inside a prompt: A1111's ``<lora:name:weight>`` tags, and embeddings used as words."""

from __future__ import annotations

import re
from collections.abc import Iterable

# <lora:name>, <lora:name:0.8>, and A1111's <lora:name:te_weight:unet_weight> (the text encoder weight is taken);
# also <lyco:...> of the LyCORIS extension. Names may hold spaces and dots, not ':' or '>'.
_TAG = re.compile(r"<(?:lora|lyco):([^:<>]+)(?::([^:<>]*))?(?::[^<>]*)?>", re.IGNORECASE)


def lora_tags(prompt: str) -> tuple[str, list[dict[str, object]]]:
    """``prompt`` without its LoRA tags (and the spaces they leave), and the tags as [{"name", "weight"}] in order.

    A weight that is not a number is read as 1, as A1111 does with ``<lora:name>``."""
    found: list[dict[str, object]] = []

    def take(match: re.Match[str]) -> str:
        weight = 1.0
        if match.group(2) is not None and match.group(2).strip():
            try:
                weight = float(match.group(2))
            except ValueError:
                weight = 1.0
        found.append({"name": match.group(1).strip(), "weight": weight})
        return ""

    cleaned = _TAG.sub(take, prompt)
    if found:
        cleaned = re.sub(r"\s*,\s*(,\s*)+", ", ", cleaned)  # "a, <lora:x>, b" -> "a, b"
        cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip().strip(",").strip()
    return cleaned, found


def embedding_words(text: str, names: Iterable[str]) -> set[str]:
    """The embedding ``names`` that ``text`` uses as words (case-sensitive, as the tokenizer tokens are; a name
    inside a longer word does not count, and an embedding may be weighted, as in ``(name:1.2)``)."""
    used = set()
    for name in names:
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text):
            used.add(name)
    return used
