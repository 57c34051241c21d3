"""Adapters in ``studiolo models import|list|remove`` (issue 19): LoRA / LyCORIS, textual-inversion embeddings,
ControlNets, IP-Adapters and ControlNet preprocessors are catalog items beside the models. Kept apart from cli.py for
its size; cli.py's ``models`` commands call these."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from studiolo.domain.adapters.catalog import KIND_NAMES, AdapterInfo, family_label
from studiolo.engines import model_files
from studiolo.errors import InvalidInput

KIND_HELP = "lora, embedding, controlnet, ip-adapter or preprocessor (default: detected from the file)."
FAMILY_HELP = "sd15, sd21 or sdxl: the base an adapter was made for (default: read from its tensors)."
CONTROL_TYPE_HELP = (
    "A ControlNet's control type: canny, depth, pose, scribble, lineart, softedge, tile, seg, normal, mlsd."
)
IMAGE_ENCODER_HELP = "An IP-Adapter's CLIP image-encoder folder (default: the image_encoder folder beside it)."


def size_text(size_bytes: int) -> str:
    """A model's or adapter's size in decimal units, as file managers and the hub show them (15,852,893 bytes:
    15.9 MB; an embedding of 6,000 bytes: 6 kB, not "0.0 MB")."""
    if size_bytes <= 0:
        return "-"  # no files (the echo engine)
    if size_bytes < 1e6:
        return f"{max(1, round(size_bytes / 1e3))} kB"
    return f"{size_bytes / 1e9:.1f} GB" if size_bytes >= 1e9 else f"{size_bytes / 1e6:.1f} MB"


def is_model(path: Path) -> bool:
    """True when ``path`` is for the model catalog: a diffusers pipeline, a full checkpoint, or what else model_files
    recognises, and also a missing path, a pickle file or a damaged folder (the model importer says what is wrong,
    in the words it always used). False for anything else, which is then tried as an adapter."""
    try:
        model_files.inspect_model_path(path)
    except model_files.ModelFileError as exc:
        if exc.code == "model_format_unsupported" and path.suffix.lower() not in model_files.UNSAFE_SUFFIXES:
            return False
        if exc.code == "model_file_corrupt" and not path.is_dir():
            return False  # e.g. a truncated LoRA: the adapter importer names it as what it is
    return True


def describe(info: AdapterInfo) -> str:
    """``LoRA 'pixel-art' (SD 1.x, 144.0 MB)``: what was imported, for which base."""
    if info.family:
        base = family_label(info.family)
    elif info.context_dim:
        base = f"for a {info.context_dim}-wide text encoder"
    else:
        base = "base family not recorded"
    extra = ""
    if info.kind == "controlnet":
        extra = f", {info.meta.get('control_type')}"
    elif info.kind == "embedding" and info.meta.get("vectors"):
        extra = f", {info.meta['vectors']} vectors"
    elif info.kind == "lora" and info.meta.get("rank"):
        extra = f", rank {info.meta['rank']}"
    return f"{KIND_NAMES[info.kind]} '{info.id}' ({base}{extra}, {size_text(info.size_bytes)})"


def import_adapter(services: Any, path: Path, options: dict[str, Any], console: Console) -> None:
    """Install ``path`` as an adapter and say what it is; a domain error propagates (the CLI prints it)."""
    info = services.adapters.import_path(
        path,
        adapter_id=options.get("adapter_id"),
        kind=options.get("kind"),
        family=options.get("family"),
        control_type=options.get("control_type"),
        image_encoder=options.get("image_encoder"),
        copy=options.get("copy", True),
    )
    console.print(f"[green]Imported[/green] {describe(info)}")
    if info.kind == "embedding":
        console.print(f"Use it by writing {info.id} in a prompt.")
    elif info.kind == "lora":
        console.print(f'Use it with <lora:{info.id}:0.8> in a prompt, or loras: [{{"name": "{info.id}"}}].')


def adapters_table(adapters: list[AdapterInfo]) -> Table:
    table = Table("kind", "name", "family", "size", title="Adapters")
    for a in adapters:
        kind = KIND_NAMES[a.kind]
        if a.kind == "controlnet" and a.meta.get("control_type"):
            kind += f" ({a.meta['control_type']})"
        family = family_label(a.family) if a.family else (f"{a.context_dim}-wide" if a.context_dim else "-")
        table.add_row(kind, a.id, family, size_text(a.size_bytes))
    return table


def list_adapters(services: Any, kind: str | None, out: Console, console: Console) -> None:
    """The adapters table (``kind``: only those), or a line saying none is installed."""
    adapters = services.adapters.adapters(kind, fresh=True)
    if adapters:
        out.print(adapters_table(adapters))
    elif kind:
        console.print(f"No {KIND_NAMES[kind]} installed. Add one with `studiolo models import PATH`.")


def remove_any(services: Any, name: str, console: Console) -> None:
    """Remove the adapter or model ``name`` (their names never clash)."""
    if name in {a.id for a in services.adapters.adapters(fresh=True)}:
        info = services.adapters.remove(name)
        console.print(f"removed {KIND_NAMES[info.kind]} {name}")
        return
    services.catalog.remove(name)
    console.print(f"removed {name}")


def normalised_kind(kind: str | None) -> str | None:
    """``--kind`` as stored (ip-adapter -> ip_adapter); an unknown one is a 422-style error."""
    from studiolo.engines.adapter_files import normalise_kind

    try:
        return normalise_kind(kind)
    except model_files.ModelFileError as exc:
        raise InvalidInput(str(exc), code=exc.code, details={"kind": kind}) from exc
