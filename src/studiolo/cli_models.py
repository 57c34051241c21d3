"""`studiolo models`: list, pull, import, remove and choose the default model; adapters (LoRA, embeddings,
ControlNets, IP-Adapters, preprocessors, issue 19) are imported, listed and removed by the same commands
(cli_adapters.py does their part)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from studiolo.cli_adapters import (
    CONTROL_TYPE_HELP,
    FAMILY_HELP,
    IMAGE_ENCODER_HELP,
    KIND_HELP,
    import_adapter,
    is_model,
    list_adapters,
    normalised_kind,
    remove_any,
    size_text,
)
from studiolo.cli_server_mode import list_models_remote
from studiolo.domain.generation.catalog import how_to_install
from studiolo.engines.demo.engine import DEMO_MODEL_ID

MODEL_ID_ARG = typer.Argument(help="An installed model's id, as `studiolo models list` shows it.")


def register_models(
    models_app: typer.Typer,
    _command_services: Callable[[], AbstractContextManager[Any]],
    out: Console,
    console: Console,
) -> None:
    """Add the model commands to ``models_app``; ``_command_services`` is cli.py's services context."""

    @models_app.command("list")
    def models_list(
        server: Annotated[str | None, typer.Option(envvar="STUDIOLO_SERVER", help="List this server's models.")] = None,
        api_key: Annotated[str | None, typer.Option(envvar="STUDIOLO_API_KEY", help="The server's API key.")] = None,
        kind: Annotated[str | None, typer.Option("--kind", help="Only adapters of this kind: " + KIND_HELP)] = None,
    ) -> None:
        """List installed and built-in models; * marks the default (the model a request naming none gets). Installed
        adapters (LoRA, embeddings, ControlNets...) follow in their own table."""
        if server:
            return list_models_remote(server, api_key)
        with _command_services() as services:
            if kind:
                list_adapters(services, normalised_kind(kind), out, console)
                return
            models = services.catalog.models()
            table = Table("", "id", "engine", "source", "arch", "size")
            for m in models:
                source = f"remote: {m.remote_model}" if m.remote_model else m.source  # engine = the provider
                table.add_row(
                    "*" if m.is_default else "", m.id, m.engine, source, m.arch or "", size_text(m.size_bytes)
                )
            if models:
                out.print(table)
            else:
                console.print("No models installed.")
            default = services.catalog.default_model_id()
            configured = services.settings.default_model
            # One story, matching the * above (issue 13): which model a request naming none gets, and why.
            if default == DEMO_MODEL_ID and configured != DEMO_MODEL_ID:
                console.print(
                    f"* {DEMO_MODEL_ID}, the built-in demo model (64x64 toy world), is the default while no local "
                    f"model is installed. For real images, install the configured default, {configured} "
                    f"(STUDIOLO_DEFAULT_MODEL). {how_to_install(configured)}"
                )
            elif not any(m.id == default for m in models):
                console.print(
                    f"No default model: the configured default {default} (STUDIOLO_DEFAULT_MODEL) is not installed, "
                    "so a request that names no model is refused. Make an installed model the default with "
                    f"`studiolo models default ID`, or install it. {how_to_install(default)}"
                )
            list_adapters(services, None, out, console)

    @models_app.command("pull")
    def models_pull(
        repo_id: Annotated[str, typer.Argument(help="Hugging Face hub id, e.g. stabilityai/sd-turbo.")],
        default: Annotated[bool, typer.Option("--default", help="Make it the default model.")] = False,
    ) -> None:
        """Download a diffusers model from the Hugging Face hub (needs network)."""
        with _command_services() as services:
            with Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=console
            ) as progress:
                task = progress.add_task(f"pulling {repo_id}", total=None)

                def on_progress(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total or None)

                info = services.catalog.pull(repo_id, progress=on_progress, default=default)
            console.print(f"[green]installed[/green] {info.id} ({size_text(info.size_bytes)})")

    @models_app.command("import")
    def models_import(
        path: Annotated[
            Path,
            typer.Argument(
                help="A diffusers folder (with model_index.json) or a .safetensors checkpoint; or an adapter: a LoRA, "
                "embedding, ControlNet or IP-Adapter .safetensors, a ControlNet or depth-preprocessor folder."
            ),
        ],
        model_id: Annotated[
            str | None, typer.Option("--id", help="Name to register it under (default: from the path).")
        ] = None,
        arch: Annotated[
            str | None, typer.Option(help="sd15, sd21 or sdxl for single files (default: detected).")
        ] = None,
        link: Annotated[bool, typer.Option("--link", help="Use the files in place instead of copying them.")] = False,
        default: Annotated[bool, typer.Option("--default", help="Make it the default model.")] = False,
        kind: Annotated[
            str | None, typer.Option("--kind", help="Import as an adapter of this kind: " + KIND_HELP)
        ] = None,
        family: Annotated[str | None, typer.Option("--family", help=FAMILY_HELP)] = None,
        control_type: Annotated[str | None, typer.Option("--control-type", help=CONTROL_TYPE_HELP)] = None,
        image_encoder: Annotated[Path | None, typer.Option("--image-encoder", help=IMAGE_ENCODER_HELP)] = None,
    ) -> None:
        """Import a local model or adapter (no network needed); what it is comes from its files."""
        with _command_services() as services:
            adapter_options = (kind, family, control_type, image_encoder)
            if any(o is not None for o in adapter_options) or not is_model(path.expanduser()):
                options = {
                    "adapter_id": model_id,
                    "kind": normalised_kind(kind),
                    "family": family or arch,
                    "control_type": control_type,
                    "image_encoder": image_encoder,
                    "copy": not link,
                }
                import_adapter(services, path, options, console)
                return
            info = services.catalog.import_path(path, model_id=model_id, arch=arch, copy=not link, default=default)
            console.print(f"[green]imported[/green] {info.id} ({info.source}, {info.arch or 'arch detected at load'})")

    @models_app.command("remove")
    def models_remove(
        model_id: Annotated[
            str, typer.Argument(help="An installed model's or adapter's name, as `models list` shows it.")
        ],
    ) -> None:
        """Remove an installed model or adapter and the files Studiolo copied for it (built-in models stay)."""
        with _command_services() as services:
            remove_any(services, model_id, console)

    @models_app.command("default")
    def models_default(model_id: Annotated[str, MODEL_ID_ARG]) -> None:
        """Set the model used when a request names none."""
        with _command_services() as services:
            services.catalog.set_default(model_id)
            console.print(f"default model: {model_id}")
