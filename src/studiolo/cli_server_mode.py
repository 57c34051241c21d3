"""`studiolo generate --server URL`: the same command driving a remote Studiolo through the Python client
(studiolo.client) instead of this machine's services: the same bar, result lines, files and exit codes."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from studiolo.cli_progress import failure_line, job_progress, report_done
from studiolo.client import (
    InvalidRequestError,
    JobEvent,
    Studiolo,
    StudioloAPIError,
    StudioloConnectionError,
)
from studiolo.domain.generation.schemas import JobProgress
from studiolo.engines.demo.engine import DEMO_MODEL_ID, DEMO_NOTICE
from studiolo.errors import InvalidInput, StudioloError

# A generation may wait long in a busy queue; Ctrl-C cancels it sooner.
WAIT_SECONDS = 24 * 3600.0


def generate_remote(
    server: str,
    api_key: str | None,
    values: dict[str, Any],
    init_image: Path | None,
    mask: Path | None,
    out_dir: Path | None,
) -> None:
    """Submit ``values`` (GenerationParams fields) to ``server``, follow the job, download what it made."""
    from studiolo.cli import _fail, _invalid, console, out, write_new_file

    params = {k: v for k, v in values.items() if v is not None}
    prompt = params.pop("prompt")
    job_id: str | None = None
    with Studiolo(server, api_key) as client:
        try:
            if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "--out is a file, not a folder", str(out_dir))
            job_id = client.generate(prompt, init_image=init_image, mask_image=mask, **params).id
            if client.get_job(job_id).model == DEMO_MODEL_ID:
                console.print(DEMO_NOTICE)
            with job_progress(console) as show:
                status, now = "queued", JobProgress(step=0, total=0)

                def on_event(event: JobEvent) -> None:
                    nonlocal status, now
                    step = event.progress()
                    if event.type == "started":
                        status = "running"
                    elif step is not None:
                        status, now = "running", JobProgress(**step.model_dump())
                    elif event.terminal and event.job is not None:
                        status, now = event.type, JobProgress(**event.job.progress.model_dump())
                    show(status, now)

                job = client.wait(job_id, timeout=WAIT_SECONDS, on_event=on_event)
            if job.status != "succeeded":
                console.print(failure_line(job))
                raise typer.Exit(1)
            written: list[Path] = []
            for o in job.outputs:
                if out_dir is not None:
                    out_dir.mkdir(parents=True, exist_ok=True)  # only now: a failed job leaves no empty folder
                    written.append(write_new_file(out_dir, f"{job.id}-{o.seed}", ".png", client.download(o.image_id)))
        except InvalidRequestError as exc:
            # The server's words, every broken rule, exit code 2: as a local run says them.
            raise _invalid(InvalidInput(exc.message, code=exc.code, details=exc.details)) from None
        except StudioloAPIError as exc:
            raise _fail(StudioloError(exc.message, code=exc.code)) from None
        except StudioloConnectionError as exc:
            console.print(f"[red]error[/red] [bold]server_unreachable[/bold]: {escape(str(exc))}")
            raise typer.Exit(1) from None
        except OSError as exc:
            console.print(f"[red]error[/red]: {exc}")
            raise typer.Exit(2) from exc
        except KeyboardInterrupt:
            if job_id:
                client.cancel_job(job_id)
            console.print("canceled")
            raise typer.Exit(130) from None
    report_done(console, out, job, written)


def list_models_remote(server: str, api_key: str | None) -> None:
    """`studiolo models list --server URL`: the server's models, in the local command's table."""
    from rich.table import Table

    from studiolo.cli import _fail, out
    from studiolo.cli_adapters import size_text

    with Studiolo(server, api_key) as client:
        try:
            listed = client.models()
        except StudioloConnectionError as exc:
            raise _fail(StudioloError(str(exc), code="server_unreachable")) from exc
        except StudioloAPIError as exc:
            raise _fail(StudioloError(exc.message, code=exc.code)) from exc
    table = Table("", "id", "engine", "source", "arch", "size")
    for m in listed.items:
        source = f"remote: {m.remote_model}" if m.remote_model else m.source
        table.add_row("*" if m.is_default else "", m.id, m.engine, source, m.arch or "", size_text(m.size_bytes))
    out.print(table)
