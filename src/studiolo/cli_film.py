"""``studiolo film``: render a script into a narrated, subtitled MP4 from the command line, and list the voices.

``film render`` does what the web studio does, as the install's local owner: it creates the film (the storyboard
split from the script), queues its render through the same durable queue, runs in-process workers, shows one
progress line per render stage, and copies the MP4 (and, if asked, the SRT) out. Ctrl+C cancels the render.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from studiolo.cli_options import SuggestingGroup
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.film.schemas import STAGES, FilmCreate, FilmView
from studiolo.domain.generation.rules import params_error
from studiolo.errors import StudioloError

CommandServices = Callable[[], AbstractContextManager[Any]]
TERMINAL = ("succeeded", "failed", "canceled")


def _copy_out(services: Any, film_id: str, name: str, dest: Path) -> None:
    """Copy a rendered file of the film to ``dest`` (from the store: a local file, or its bytes)."""
    f = services.film.file(LOCAL_USER_ID, film_id, name)
    if f.local_path is not None and f.local_path.exists():
        shutil.copyfile(f.local_path, dest)
    else:
        dest.write_bytes(services.film.read(f.key))


def wait_for_render(services: Any, film_id: str, job_id: str, console: Console) -> FilmView:
    """Follow the render job: one progress line per stage, from its ``stage`` events and the film's render state
    (which a reload shows too); returns the film once the job has ended."""
    latest: dict[str, dict[str, Any]] = {}
    ended = threading.Event()

    def on_event(ev: dict[str, Any]) -> None:
        if ev.get("type") == "stage" and ev.get("stage") in STAGES:
            latest[str(ev["stage"])] = ev
        elif ev.get("type") in TERMINAL:
            ended.set()

    unsubscribe = services.events.subscribe(job_id, on_event, types=("stage", *TERMINAL))
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            tasks: dict[str, TaskID] = {
                stage: progress.add_task(stage, total=None, state="waiting", start=False) for stage in STAGES
            }
            while True:
                film: FilmView = services.film.get(LOCAL_USER_ID, film_id)
                stages = dict(film.render.stages) if film.render and film.render.job_id == job_id else {}
                for stage, task in tasks.items():
                    ev = latest.get(stage)
                    known = stages.get(stage)
                    state = str(ev["state"]) if ev else known.state if known else None
                    if state is None:
                        continue
                    done = int(ev.get("done") or 0) if ev else known.done if known else 0
                    total = int(ev.get("total") or 0) if ev else known.total if known else 0
                    if state in ("done", "skipped", "cached"):
                        total = total or 1
                        done = total
                    progress.start_task(task)
                    progress.update(task, total=total or None, completed=done, state=state)
                job = services.generation.get(LOCAL_USER_ID, job_id)
                if job.status in TERMINAL:
                    return services.film.get(LOCAL_USER_ID, film_id)  # type: ignore[no-any-return]
                ended.wait(0.2)
    finally:
        unsubscribe()


def build_film_app(
    command_services: CommandServices,
    services_for: Callable[[], Any],
    out: Console,
    console: Console,
    fail: Callable[[StudioloError], typer.Exit],
) -> typer.Typer:
    """The ``film`` command group. ``services_for()``: services for a long command (no in-process workers yet)."""
    film_app = typer.Typer(
        help="Films: a script in, a narrated, subtitled video out (docs/film.md).",
        no_args_is_help=True,
        cls=SuggestingGroup,
    )

    @film_app.command("voices")
    def film_voices() -> None:
        """The narration voices installed here (espeak-ng, Piper voices, hosted voices when configured)."""
        with command_services() as services:
            voices = services.film.voices()
        if not voices.voices:
            console.print("No voices: install espeak-ng (Debian: apt-get install espeak-ng) or a Piper voice.")
            raise typer.Exit(1)
        table = Table("voice", "name", "language", "gender", "age", "engine", "quality")
        for v in voices.voices:
            mark = " (default)" if v.id == voices.default else ""
            table.add_row(
                escape(v.id + mark), escape(v.name), v.language, v.gender or "", v.age or "", v.engine, v.quality
            )
        out.print(table)

    @film_app.command("render")
    def film_render(
        script: Annotated[Path, typer.Argument(help="A UTF-8 text file with the script.")],
        title: Annotated[str | None, typer.Option(help="The film's title (default: the file's name).")] = None,
        voice: Annotated[str | None, typer.Option(help="A voice id (`studiolo film voices`).")] = None,
        music: Annotated[str, typer.Option(help='A music mood (calm, epic, ...) or "none".')] = "calm",
        aspect: Annotated[str, typer.Option(help="16:9, 9:16 or 1:1.")] = "16:9",
        resolution: Annotated[str, typer.Option(help="720p or 1080p.")] = "720p",
        target_seconds: Annotated[int, typer.Option("--target-seconds", help="Target length, 60-300 s.")] = 60,
        speed: Annotated[float, typer.Option(help="Narration speed, 0.5-2.0.")] = 1.0,
        style: Annotated[str | None, typer.Option(help="A style for the scene images (GET /api/v1/styles).")] = None,
        model: Annotated[str | None, typer.Option(help="The scene images' model (default: the default).")] = None,
        podcast: Annotated[bool, typer.Option("--podcast", help='"NAME: text" lines, a voice per speaker.')] = False,
        burn_subtitles: Annotated[
            bool, typer.Option("--burn-subtitles", help="Burn the subtitles into the picture too.")
        ] = False,
        seed: Annotated[int | None, typer.Option(help="Seed of the music, motion and scene images.")] = None,
        out_file: Annotated[Path, typer.Option("--out", help="Where to write the MP4.")] = Path("film.mp4"),
        srt: Annotated[Path | None, typer.Option("--srt", help="Also write the subtitles (SRT) here.")] = None,
    ) -> None:
        """Render a script into an MP4 (narration, music, scene images with motion, subtitles); one progress line
        per stage. Exit code 2 for bad options, 1 when the render fails."""
        for dest, flag in ((out_file, "--out"), (srt, "--srt")):
            if dest is not None and dest.exists():
                console.print(f"[red]error[/red]: {flag} {escape(str(dest))} exists; choose another name")
                raise typer.Exit(2)
        try:
            text = script.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            console.print(f"[red]error[/red]: cannot read the script {escape(str(script))}: {escape(str(exc))}")
            raise typer.Exit(2) from exc
        values = {
            "title": (title or script.stem)[:200] or "Film",
            "script": text,
            "style": style,
            "model": model,
            "aspect": aspect,
            "resolution": resolution,
            "target_seconds": target_seconds,
            "voice": voice,
            "speed": speed,
            "music": music,
            "podcast": podcast,
            "burn_subtitles": burn_subtitles,
            "seed": seed,
        }
        try:
            data = FilmCreate.model_validate(values)
        except ValidationError as exc:
            error = params_error(exc)
            console.print(f"[red]error[/red] [bold]{error.code}[/bold]: {escape(error.message)}")
            raise typer.Exit(2) from None
        services = services_for()
        film_id: str | None = None
        job_id: str | None = None
        try:
            try:
                film = services.film.create(LOCAL_USER_ID, data)
                film_id = film.id
                console.print(
                    f"Film {film.id}: {len(film.scenes)} scenes, about {film.planned_seconds:.0f} s, voice {film.voice}"
                )
                accepted = services.film.render(LOCAL_USER_ID, film.id)
                job_id = accepted.job_id
                console.print(f"Render job {job_id}: {accepted.quote.credits} credits")
                services.start_workers(1)
                done = wait_for_render(services, film.id, job_id, console)
                if done.status != "rendered":
                    err = done.error
                    code, message = (err.code, err.message) if err else (done.status, "")
                    console.print(f"[red]render {done.status}[/red] [bold]{code}[/bold]: {escape(message)}")
                    raise typer.Exit(1)
                _copy_out(services, film.id, "film.mp4", out_file)
                out.print(str(out_file))
                if srt is not None:
                    _copy_out(services, film.id, "film.srt", srt)
                    out.print(str(srt))
            except StudioloError as exc:
                raise fail(exc) from exc
            except KeyboardInterrupt:
                if film_id is not None and job_id is not None:
                    services.film.cancel(LOCAL_USER_ID, film_id)
                console.print("canceled")
                raise typer.Exit(130) from None
        finally:
            services.close(timeout=5)

    return film_app
