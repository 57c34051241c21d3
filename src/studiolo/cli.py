"""The ``studiolo`` command line: serve, backup, restore, worker, generate, upscale, models, images, db, users, billing,
film, watermark.
Same services as the HTTP API."""

from __future__ import annotations

import errno
import itertools
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from studiolo.cli_adapter_options import (
    ControlIsMapOption,
    ControlOption,
    HiresOption,
    HiresStepsOption,
    HiresStrengthOption,
    HiresUpscalerOption,
    LoraOption,
    ReferenceOption,
    ReferenceStrengthOption,
    adapter_values,
)
from studiolo.cli_billing import build_billing_app
from studiolo.cli_describe import describe
from studiolo.cli_film import build_film_app
from studiolo.cli_images import build_images_app
from studiolo.cli_models import register_models
from studiolo.cli_options import SuggestingGroup
from studiolo.cli_progress import failure_line, job_progress, report_done
from studiolo.cli_remote import register_remote
from studiolo.cli_server_mode import generate_remote
from studiolo.cli_upscale import upscale
from studiolo.cli_users import build_users_app
from studiolo.cli_watermark import build_watermark_app
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.rules import GenerationLimits, params_error
from studiolo.domain.generation.schemas import GenerationParams, JobProgress, JobView
from studiolo.domain.generation.service import Upload
from studiolo.engines.base import JobKind
from studiolo.engines.demo.engine import DEMO_MODEL_ID, DEMO_NOTICE
from studiolo.errors import InvalidInput, StudioloError, describe_errors
from studiolo.logs import configure_logging
from studiolo.settings import Settings

# SuggestingGroup: an unknown option names the option meant, not just the closest spelling (cli_options.py).
app = typer.Typer(
    help="Studiolo: a self-hosted AI creative studio.", no_args_is_help=True, add_completion=False, cls=SuggestingGroup
)
models_app = typer.Typer(
    help="Install, list and remove models; choose the default.", no_args_is_help=True, cls=SuggestingGroup
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True, cls=SuggestingGroup)
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")

console = Console(stderr=True)
out = Console()


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:  # a configuration problem, not a stack trace
        problems = [{**e, "loc": [f"STUDIOLO_{str(p).upper()}" for p in e["loc"]]} for e in exc.errors()]
        console.print(f"[red]Invalid configuration:[/red] {escape(describe_errors(problems))}")
        raise typer.Exit(2) from None


def _fail(exc: StudioloError) -> typer.Exit:
    console.print(f"[red]error[/red] [bold]{exc.code}[/bold]: {escape(exc.message)}")
    return typer.Exit(1)


def _invalid(exc: InvalidInput) -> typer.Exit:
    """Bad parameters, in the API's words (rules.params_error): every broken rule, one per line; exit code 2."""
    errors = exc.details.get("errors") or []
    if len(errors) < 2:
        console.print(f"[red]error[/red] [bold]{exc.code}[/bold]: {escape(exc.message)}")
    else:
        console.print(f"[red]error[/red] [bold]{exc.code}[/bold]: {len(errors)} problems")
        for error in errors:
            console.print(f"  {escape(describe_errors([error]))}")
    return typer.Exit(2)


def _services(settings: Settings) -> Any:
    from studiolo.services import build_services

    return build_services(settings)


@contextmanager
def _command_services() -> Iterator[Any]:
    """The services for one short command: a domain error becomes one line and exit code 1, never a trace."""
    services = _services(_settings())
    try:
        yield services
    except StudioloError as exc:
        raise _fail(exc) from exc
    finally:
        services.close()


app.add_typer(build_images_app(_command_services, out, console), name="images")
app.add_typer(build_users_app(_command_services, out), name="users")
app.add_typer(build_billing_app(_command_services, out), name="billing")
app.add_typer(build_watermark_app(_settings, out, console), name="watermark")


def _render_services() -> Any:
    """Services for `film render`: its own in-process workers, started once the render is queued."""
    return _services(_settings().model_copy(update={"inline_workers": 0}))


app.add_typer(build_film_app(_command_services, _render_services, out, console, _fail), name="film")
register_models(models_app, _command_services, out, console)  # models list|pull|import|remove|default
register_remote(models_app, _command_services)  # models add-remote (cli_remote.py)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default from STUDIOLO_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from STUDIOLO_PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="In-process worker threads (0: run `studiolo worker` separately).")
    ] = None,
) -> None:
    """Run the web server (API, docs at /docs) with in-process workers on the embedded defaults."""
    from studiolo import server
    from studiolo.app import create_app

    settings = _settings()
    updates: dict[str, Any] = {}
    if host is not None:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    if workers is not None:
        updates["inline_workers"] = workers
    settings = settings.model_copy(update=updates)
    configure_logging(settings)
    try:
        listener = server.bind(settings.host, settings.port)  # before any start-up work: a busy port fails at once
    except StudioloError as exc:
        raise _fail(exc) from exc
    console.print(f"Studiolo on http://{settings.host}:{settings.port}  (data: {settings.data_dir})")
    server.run(create_app(settings), settings, listener)


@app.command()
def backup(
    archive: Annotated[
        Path | None,
        typer.Argument(
            help="The archive to write, or a folder for it (default: studiolo-backup-<time>.tar here; a name ending "
            "in .gz compresses)."
        ),
    ] = None,
) -> None:
    """Back up the embedded install (database, pictures, secret key) into one archive, safely while it runs."""
    from studiolo import backup as backups

    settings = _settings()
    path = archive or Path()
    if path.is_dir():
        path = path / backups.default_archive_name()
    try:
        manifest = backups.backup(settings, path)
    except StudioloError as exc:
        raise _fail(exc) from exc
    c = manifest.counts
    console.print(
        f"[green]backed up[/green] {c['users']} account(s), {c['images']} image(s), {c['jobs']} job(s) and "
        f"{c['files']} file(s) to {path} ({path.stat().st_size / 2**20:.1f} MB)"
    )
    if manifest.missing_files:
        console.print(f"[yellow]{len(manifest.missing_files)} file(s) named by the database were already missing[/]")
    if not manifest.secret_key_included:
        console.print("[yellow]STUDIOLO_SECRET_KEY is set, so the key is not in the backup: keep it with it[/]")
    console.print("It holds password hashes and the secret key: keep it private, and on another machine.")


@app.command()
def restore(
    archive: Annotated[Path, typer.Argument(help="An archive made by `studiolo backup`.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace the database, secret key and files already in the data directory.")
    ] = False,
    check_only: Annotated[bool, typer.Option("--check", help="Only check the archive; change nothing.")] = False,
) -> None:
    """Restore a backup into the data directory (STUDIOLO_DATA_DIR), after checking all of it. Stop the server first."""
    from studiolo import backup as backups

    settings = _settings()
    try:
        manifest = backups.check(archive) if check_only else backups.restore(settings, archive, force=force)
    except StudioloError as exc:
        raise _fail(exc) from exc
    c = manifest.counts
    what = f"{c['users']} account(s), {c['images']} image(s), {c['jobs']} job(s), {c['files']} file(s)"
    made = f"made {manifest.created_at} by Studiolo {manifest.studiolo_version}"
    if check_only:
        console.print(f"[green]{archive} is a complete backup[/green]: {what} ({made})")
        return
    console.print(f"[green]restored[/green] {what} into {settings.data_dir} ({made})")
    if not manifest.secret_key_included:
        console.print("[yellow]The backup holds no secret key: set STUDIOLO_SECRET_KEY to the one it was made with[/]")
    elif settings.secret_key:
        console.print("[yellow]STUDIOLO_SECRET_KEY is set, so the restored secret.key is not used while it is[/]")
    console.print("Models are not in backups: `studiolo models list` shows what to pull or import again.")


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Jobs run at once by this process (one per GPU is best).")
    ] = 1,
    queues: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated model ids this worker serves (default: every installed model). Either way it "
            "takes only the jobs of models whose files are on this machine, and checks again every "
            "STUDIOLO_WORKER_REFRESH_SECONDS."
        ),
    ] = None,
) -> None:
    """Run job workers as a separate process against the configured database (and broker, with Celery)."""
    from studiolo.domain.generation.served import ServedModels

    settings = _settings()
    configure_logging(settings)
    metrics = None
    if settings.worker_metrics_port:
        from studiolo.metrics import serve_worker_metrics

        try:  # before any start-up work: a busy port fails at once
            metrics, _server = serve_worker_metrics(settings.host, settings.worker_metrics_port)
        except StudioloError as exc:
            raise _fail(exc) from exc
    services = _services(settings)
    if metrics is not None:
        metrics.bind(services)
    models = [m.strip() for m in queues.split(",") if m.strip()] if queues else None
    # A worker renders films (issue 16) where it found ffmpeg: it serves the film jobs' pseudo-model like a model.
    served = ServedModels(services.catalog, models, builtin=services.film_job_models())
    device = getattr(services.engines.get("diffusers"), "device", None)
    if device is not None:
        # Say where real models will run: a worker that cannot see its GPU would otherwise crawl on the CPU.
        console.print(f"diffusers models run on: {device}")
    if settings.dispatch == "celery":
        from studiolo.dispatch.celery_worker import run_celery_worker

        console.print(f"celery worker ({concurrency} at once) on {settings.resolved_broker_url.split('@')[-1]}")
        run_celery_worker(services, concurrency=concurrency, served=served, loglevel=settings.log_level)
        return
    stop = threading.Event()

    def _graceful(signum: int, _frame: Any) -> None:
        stop.set()

    # Handlers first: a SIGTERM right after start must still hand back a job the workers just claimed.
    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    services.start_workers(concurrency, served=served)
    console.print(f"worker running ({concurrency} thread(s)); Ctrl-C to stop")
    while not stop.wait(1.0):
        pass
    console.print("stopping: running jobs are handed back to the queue")
    services.close()


def _wait_with_progress(services: Any, job_id: str, n: int) -> JobView:
    gen = services.generation
    done = threading.Event()
    latest: dict[str, Any] = {}

    def on_event(ev: dict[str, Any]) -> None:
        latest.update(ev if ev["type"] == "progress" else {"type": ev["type"]})
        if ev["type"] in ("succeeded", "failed", "canceled"):
            done.set()

    # Not previews: a terminal bar cannot show them, and taking them would make the worker draw them.
    unsubscribe = services.events.subscribe(job_id, on_event, types=("progress", "succeeded", "failed", "canceled"))
    try:
        with job_progress(console) as show:
            while True:
                view: JobView = gen.get(LOCAL_USER_ID, job_id)
                if view.status in ("succeeded", "failed", "canceled"):
                    show(view.status, view.progress)
                    return view
                fields = {k: v for k, v in latest.items() if k in JobProgress.model_fields}
                show(view.status, JobProgress(**{**view.progress.model_dump(), **fields}))
                done.wait(0.1)
    finally:
        unsubscribe()


def write_new_file(folder: Path, stem: str, suffix: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/stem+suffix``, or ``stem-2`` and so on: an existing file is never overwritten.

    The full job id keeps names unique (its first 8 hex digits repeat for about 65 s, so runs with the same seed
    used to overwrite each other), and the exclusive open keeps any file already there, whoever wrote it
    (tests/integration/test_cli_commands.py::test_generate_out_never_overwrites).
    """
    for n in itertools.count(1):
        path = folder / f"{stem}{'' if n == 1 else f'-{n}'}{suffix}"
        try:
            with path.open("xb") as f:
                f.write(data)
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    style: Annotated[str | None, typer.Option(help="Style template, e.g. ghibli (see GET /api/v1/styles).")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT, e.g. 768x768.")] = None,
    aspect_ratio: Annotated[str | None, typer.Option("--aspect-ratio", help="1:1, 16:9, 9:16, 4:3 or 3:4.")] = None,
    quality: Annotated[str | None, typer.Option(help="draft, standard or high.")] = None,
    steps: Annotated[int | None, typer.Option(help="Inference steps (overrides quality).")] = None,
    guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance scale.")] = None,
    sampler: Annotated[str | None, typer.Option(help="euler, euler_a, dpmpp_2m, ddim, lms, pndm.")] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Schedule type: automatic, uniform, karras, exponential or beta.")
    ] = None,
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt.")] = "",
    seed: Annotated[int | None, typer.Option(help="Seed of the first image (image k uses seed+k).")] = None,
    variation_seed: Annotated[
        int | None, typer.Option("--variation-seed", help="Seed to vary towards (A1111's subseed; image k uses it+k).")
    ] = None,
    variation_strength: Annotated[
        float, typer.Option("--variation-strength", help="0 = the seed's image, 1 = the variation seed's.")
    ] = 0.0,
    n: Annotated[int, typer.Option("--n", "-n", help="Number of images.")] = 1,
    model: Annotated[str | None, typer.Option(help="Model id (default: the catalog's default).")] = None,
    init_image: Annotated[Path | None, typer.Option("--init-image", help="Image for img2img/inpaint.")] = None,
    mask: Annotated[Path | None, typer.Option(help="Mask for inpaint (white = repaint).")] = None,
    strength: Annotated[float, typer.Option(help="img2img strength, 0..1.")] = 0.75,
    lora: LoraOption = None,
    control: ControlOption = None,
    control_is_map: ControlIsMapOption = False,
    reference: ReferenceOption = None,
    reference_strength: ReferenceStrengthOption = 0.6,
    hires: HiresOption = None,
    hires_upscaler: HiresUpscalerOption = "lanczos",
    hires_strength: HiresStrengthOption = 0.5,
    hires_steps: HiresStepsOption = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Also write the PNGs to this folder.")] = None,
    server: Annotated[str | None, typer.Option(envvar="STUDIOLO_SERVER", help="Run on this Studiolo server.")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="STUDIOLO_API_KEY", help="The server's API key.")] = None,
) -> None:
    """Generate images through the same job queue as the server (or on --server); they are kept in the gallery."""
    values = {
        "prompt": prompt,
        "negative_prompt": negative,
        "style": style,
        "size": size,
        "aspect_ratio": aspect_ratio,
        "quality": quality,
        "steps": steps,
        "guidance": guidance,
        "sampler": sampler,
        "scheduler": scheduler,
        "seed": seed,
        "variation_seed": variation_seed,
        "variation_strength": variation_strength,
        "n": n,
        "model": model,
        "strength": strength,
        **adapter_values(
            loras=lora,
            controls=control,
            control_is_map=control_is_map,
            reference=reference,
            reference_strength=reference_strength,
            hires=hires,
            hires_upscaler=hires_upscaler,
            hires_strength=hires_strength,
            hires_steps=hires_steps,
        ),
    }
    if server:
        return generate_remote(server, api_key, values, init_image, mask, out_dir)
    settings = _settings().model_copy(update={"inline_workers": 0})
    try:
        # Checked as the API checks a request, configured limits included, before anything starts.
        params = GenerationParams.model_validate(values, context=GenerationLimits.from_settings(settings).context())
    except ValidationError as exc:
        raise _invalid(params_error(exc)) from None
    services = _services(settings)
    kind: JobKind = "inpaint" if mask else "img2img" if init_image else "txt2img"
    job_id: str | None = None
    try:
        if out_dir is not None and out_dir.exists() and not out_dir.is_dir():  # before the job, not a traceback after
            raise NotADirectoryError(errno.ENOTDIR, "--out is a file, not a folder", str(out_dir))
        init = services.generation.validate_upload(init_image.read_bytes(), field="init_image") if init_image else None
        mask_up: Upload | None = (
            services.generation.validate_upload(mask.read_bytes(), field="mask_image", mode="L") if mask else None
        )
        accepted, _ = services.generation.submit(LOCAL_USER_ID, params, kind=kind, init_image=init, mask_image=mask_up)
        job_id = accepted.id
        if (params.model or services.catalog.default_model_id()) == DEMO_MODEL_ID:
            # Say plainly that this is the toy model, and how to get a real one (issue 6).
            console.print(DEMO_NOTICE)
        services.start_workers(1)
        view = _wait_with_progress(services, accepted.id, n)
    except StudioloError as exc:
        services.close()
        raise _fail(exc) from exc
    except OSError as exc:
        services.close()
        console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        if job_id:
            services.generation.cancel(LOCAL_USER_ID, job_id)
        services.close(timeout=5)
        console.print("canceled")
        raise typer.Exit(130) from None
    try:
        if view.status != "succeeded":
            console.print(failure_line(view))
            raise typer.Exit(1)
        written: list[Path] = []
        for o in view.outputs:
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)  # only now: a failed job leaves no empty folder
                key, _ = services.gallery.file(LOCAL_USER_ID, o.image_id, "original")
                written.append(write_new_file(out_dir, f"{view.id}-{o.seed}", ".png", services.gallery.read(key)))
        report_done(console, out, view, written)
    finally:
        services.close()


app.command()(upscale)  # cli_upscale.py; listed after generate
app.command()(describe)  # cli_describe.py: photo -> character


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply database migrations."""
    from studiolo.datadir import secure_data_dir
    from studiolo.db import migrate

    settings = _settings()
    secure_data_dir(settings)
    migrate.upgrade(settings.resolved_database_url, revision)
    console.print(f"database at {migrate.current_revision(settings.resolved_database_url)}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's migration revision."""
    from studiolo.db import migrate

    settings = _settings()
    url = settings.resolved_database_url
    if not settings.database_url and not (settings.data_dir / "studiolo.db").exists():
        out.print("empty")  # nothing created yet; opening the file would create it
        return
    out.print(migrate.current_revision(url) or "empty")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
