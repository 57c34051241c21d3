"""What `studiolo generate` shows while a job runs and once it ends, the same whether the job runs here or on a
remote server (cli_server_mode.py): the step bar, the failure line and the result lines."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from studiolo.domain.generation.schemas import JobProgress

# show(status, progress): one update of the bar.
ShowProgress = Callable[[str, JobProgress], None]


class _Output(Protocol):
    @property
    def image_id(self) -> str: ...
    @property
    def seed(self) -> int: ...


class _Error(Protocol):
    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...


class FinishedJob(Protocol):
    """A finished job as the server's JobView and the client's Job both carry it."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def seeds(self) -> list[int]: ...
    @property
    def duration_seconds(self) -> float | None: ...
    @property
    def outputs(self) -> Sequence[_Output]: ...
    @property
    def error(self) -> _Error | None: ...


@contextmanager
def job_progress(console: Console) -> Iterator[ShowProgress]:
    """A step bar on ``console`` for one job; yields the function that moves it."""
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("queued", total=None)

        def show(status: str, now: JobProgress) -> None:
            done_steps, all_steps = now.steps_done()
            if status == "succeeded":
                progress.update(task, description="done", total=all_steps, completed=all_steps)
                return
            desc = now.text() if status == "running" and now.total else status
            progress.update(task, description=desc, total=all_steps or None, completed=done_steps)

        yield show


def failure_line(view: FinishedJob) -> str:
    err = view.error
    return f"[red]job {view.status}[/red] [bold]{err.code if err else ''}[/bold]: {err.message if err else ''}"


def report_done(console: Console, out: Console, view: FinishedJob, written: Sequence[Path]) -> None:
    """The summary (stderr), one line per image and one per file written (stdout, for scripts)."""
    dur = f"{view.duration_seconds:.1f} s" if view.duration_seconds is not None else "?"
    console.print(f"[green]done[/green] job {view.id} in {dur}; seeds {view.seeds}")
    for o in view.outputs:
        out.print(f"image {o.image_id} seed {o.seed}")
    for p in written:
        # One line per path, as given: Rich would wrap a long path at 80 columns when piped, or read
        # "[...]" in a folder name as markup (tests/integration/test_cli_commands.py).
        out.print(str(p), soft_wrap=True, markup=False, highlight=False)
