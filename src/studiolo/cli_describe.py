"""``studiolo describe PHOTO``: describe a photo as a character (fursona, portrait, scene...) and print the description
and a ready prompt, as ``POST /api/v1/describe`` does (kept apart from cli.py for its size; cli.py registers it)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.understanding.ports import TEMPLATES
from studiolo.domain.understanding.schemas import DescriptionView


def _lines(view: DescriptionView) -> list[tuple[str, str]]:
    d = view.description
    colours = ", ".join(f"{c.name} {c.hex or ''}".strip() + (f" {c.share:.0%}" if c.share else "") for c in d.colors)
    rows = [
        ("subject", d.subject),
        ("species", d.species),
        ("archetype", d.archetype),
        ("colours", colours),
        ("features", ", ".join(d.features)),
        ("clothing", ", ".join(d.clothing)),
        ("mood", d.mood),
        ("setting", d.setting),
    ]
    if d.brightness is not None:
        rows.append(("light", f"brightness {d.brightness:.2f}, contrast {d.contrast or 0:.2f}, {d.orientation}"))
        rows.append(("faces", str(len(d.faces))))
    return [(k, v) for k, v in rows if v]


def describe(
    photo: Annotated[Path, typer.Argument(help="A PNG, JPEG, WebP or GIF photo.", exists=True, dir_okay=False)],
    template: Annotated[str, typer.Option(help=f"What to make of it: {', '.join(TEMPLATES)}.")] = "character",
    instruction: Annotated[str, typer.Option(help="Your own instruction (required with --template custom).")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole description as JSON.")] = False,
) -> None:
    """Describe a photo (STUDIOLO_DESCRIBER: offline, openai or gemini) and print the description and its prompt."""
    from studiolo.cli import _command_services, out

    with _command_services() as services:
        view = services.describe.describe(LOCAL_USER_ID, photo.read_bytes(), template, instruction)
    if as_json:
        out.print_json(json.dumps(view.model_dump(mode="json")))
        return
    model = f" ({view.model})" if view.model else ""
    out.print(f"description {view.id} by the {view.describer} describer{model}", markup=False)
    for key, value in _lines(view):
        out.print(f"  {key + ':':<11}{value}", markup=False, highlight=False)
    if view.known_by_vision_only:
        out.print(f"  a vision model would add: {', '.join(view.known_by_vision_only)}", markup=False)
    out.print(f"prompt: {view.prompt}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"negative prompt: {view.negative_prompt}", markup=False, highlight=False, soft_wrap=True)
    if view.style:
        out.print(f"suggested style: {view.style}", markup=False)
    command = f"studiolo generate {shlex.quote(view.prompt)}" + (f" --style {view.style}" if view.style else "")
    out.print(f"render it: {command}", markup=False, highlight=False, soft_wrap=True)
