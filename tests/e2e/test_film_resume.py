"""A film render whose `studiolo worker` is SIGKILLed during the encode stage resumes in another worker from its
stored artefacts (issue 16): no sentence is narrated again, no scene image is made again, no scene clip is encoded
again, and the MP4 it finishes is valid. Real worker subprocesses on the test's database.

How the test finds the encode stage: the workers run ffmpeg through STUDIOLO_FILM_FFMPEG, here a wrapper script that
runs the real ffmpeg but, the first time it is asked to join the clips (the encode stage's concat), signals and
sleeps; and espeak-ng through a wrapper on PATH that logs each call, so narration calls are counted across
processes."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.film.models import FilmProject
from studiolo.domain.generation.models import Job
from studiolo.engines.ffmpeg import probe
from studiolo.services import Services
from tests.e2e.conftest import Launcher, Proc, echo_env, echo_services
from tests.e2e.test_worker_crash import wait_terminal
from tests.film_checks import ffmpeg, make_film

pytestmark = pytest.mark.slow

SETTINGS: dict[str, Any] = {
    "lease_seconds": 2.0,
    "heartbeat_seconds": 0.3,
    "retry_backoff_seconds": 0.1,
    "worker_poll_seconds": 0.3,
}


@pytest.fixture
def tools(tmp_path: Path) -> dict[str, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_ffmpeg = ffmpeg().ffmpeg
    marker = tmp_path / "encode-started"
    wrapper = bin_dir / "ffmpeg-wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" concat "*)\n'
        f'  if [ ! -e "{marker}" ]; then touch "{marker}"; sleep 120; fi;;\n'
        "esac\n"
        f'exec "{real_ffmpeg}" "$@"\n'
    )
    speech_log = tmp_path / "espeak-calls.log"
    espeak = bin_dir / "espeak-ng"
    real_espeak = "/usr/bin/espeak-ng"
    # Only synthesis is counted (a voice listing is not a narration call).
    espeak.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" --voices"*|*" --version "*|*" -h "*) ;; *) echo call >> "{speech_log}";; esac\n'
        f'exec "{real_espeak}" "$@"\n'
    )
    for script in (wrapper, espeak):
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {"bin": bin_dir, "ffmpeg": wrapper, "marker": marker, "speech_log": speech_log}


@pytest.fixture
def services(tmp_path: Path, database_url: str, tools: dict[str, Path]) -> Iterator[Services]:
    extra = {"database_url": database_url} if database_url else {}
    svc = echo_services(tmp_path / "data", film_ffmpeg=str(tools["ffmpeg"]), **SETTINGS, **extra)
    try:
        yield svc
    finally:
        svc.close(timeout=10)


def start_worker(launcher: Launcher, services: Services, tmp_path: Path, tools: dict[str, Path]) -> Proc:
    overrides: dict[str, Any] = {**SETTINGS, "film_ffmpeg": str(tools["ffmpeg"])}
    if services.settings.database_url:
        overrides["database_url"] = services.settings.database_url
    env = echo_env(services.settings.data_dir, **overrides)
    env["PATH"] = f"{tools['bin']}{os.pathsep}{env.get('PATH', '')}"
    return launcher.start(["worker"], env, tmp_path)


def _speech_calls(tools: dict[str, Path]) -> int:
    path = tools["speech_log"]
    return len(path.read_text().splitlines()) if path.exists() else 0


def _image_jobs(services: Services) -> int:
    with services.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Job).where(Job.kind == "txt2img")) or 0)


def _clip_files(services: Services) -> dict[str, float]:
    files = services.settings.files_dir / "films"
    return {p.name: p.stat().st_mtime for p in files.rglob("clip-*.mp4")}


def test_a_render_killed_during_encode_resumes_from_its_artefacts(
    launcher: Launcher, services: Services, tmp_path: Path, tools: dict[str, Path]
) -> None:
    film_id = make_film(services, voice="espeak:en-us", music="calm")
    job_id = services.film.render(LOCAL_USER_ID, film_id).job_id
    worker_a = start_worker(launcher, services, tmp_path, tools)
    deadline = time.monotonic() + 180
    while not tools["marker"].exists():
        assert worker_a.popen.poll() is None, worker_a.output()
        assert time.monotonic() < deadline, "the render never reached its encode stage"
        time.sleep(0.1)
    with services.db.session() as session:
        project = session.get(FilmProject, film_id)
        assert project is not None and project.render_state["stage"] == "encode"
    worker_a.stop(signal.SIGKILL)
    speech, images, clips = _speech_calls(tools), _image_jobs(services), _clip_files(services)
    assert speech >= 3 and images == 3 and len(clips) == 3

    worker_b = start_worker(launcher, services, tmp_path, tools)
    job = wait_terminal(services, job_id, timeout=180)
    assert job.status == "succeeded", (job.error_code, job.error_message, worker_b.output())
    assert job.attempts == 2
    assert _speech_calls(tools) == speech  # nothing narrated twice
    assert _image_jobs(services) == images  # no scene image made twice
    assert _clip_files(services) == clips  # no clip encoded twice
    with services.db.session() as session:
        project = session.get(FilmProject, film_id)
        assert project is not None
        mp4 = services.store.local_path(project.outputs["mp4"])
        seconds = project.timeline["seconds"]
    assert mp4 is not None
    info = probe(ffmpeg(), mp4)
    assert info.has_video and info.has_audio and abs(info.duration - seconds) <= 0.5
