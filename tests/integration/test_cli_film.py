"""``studiolo film voices`` and the checks ``studiolo film render`` makes before rendering, in-process (typer's
CliRunner) on a temporary install (PostgreSQL too when the suite runs there). A whole render from the command line is
tested with the render pipeline."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from studiolo.cli import app
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.services import Services, build_services
from studiolo.settings import Settings

Run = Callable[..., Result]


@pytest.fixture
def install(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Run, Services]]:
    for key in list(os.environ):
        if key.startswith("STUDIOLO_"):
            monkeypatch.delenv(key)
    settings = settings_factory()
    env = {
        "STUDIOLO_DATA_DIR": str(settings.data_dir),
        "STUDIOLO_ENV": "test",
        "STUDIOLO_LOG_LEVEL": "warning",
        "STUDIOLO_DATABASE_URL": settings.database_url,
        "STUDIOLO_ENABLE_ECHO_ENGINE": "true",
        "STUDIOLO_DEFAULT_MODEL": "echo",
        "COLUMNS": "200",
    }
    services = build_services(settings, upgrade_db=False)
    try:
        yield (lambda *args: CliRunner().invoke(app, list(args), env=env)), services
    finally:
        services.close()


def test_voices_lists_every_voice_and_the_default(install: tuple[Run, Services]) -> None:
    run, services = install
    r = run("film", "voices")
    assert r.exit_code == 0, r.output
    voices = services.film.voices()
    assert voices.voices
    for v in voices.voices:
        assert v.id in r.stdout and v.language in r.stdout
    assert f"{voices.default} (default)" in r.stdout


def test_render_refuses_bad_options_before_rendering(install: tuple[Run, Services], tmp_path: Path) -> None:
    run, services = install
    script = tmp_path / "story.txt"
    script.write_text("A lighthouse at dusk. The sea is calm.", encoding="utf-8")
    out = tmp_path / "film.mp4"

    r = run("film", "render", str(tmp_path / "missing.txt"), "--out", str(out))
    assert r.exit_code == 2 and "cannot read the script" in r.output
    r = run("film", "render", str(script), "--aspect", "4:3", "--out", str(out))
    assert r.exit_code == 2 and "invalid_input" in r.output and "aspect" in r.output
    r = run("film", "render", str(script), "--target-seconds", "10", "--out", str(out))
    assert r.exit_code == 2 and "target_seconds" in r.output
    out.write_bytes(b"keep me")
    r = run("film", "render", str(script), "--out", str(out))
    assert r.exit_code == 2 and "exists" in r.output and out.read_bytes() == b"keep me"
    out.unlink()

    empty = tmp_path / "empty.txt"
    empty.write_text(" ... !!! ", encoding="utf-8")
    r = run("film", "render", str(empty), "--out", str(out))
    assert r.exit_code == 1 and "empty_script" in r.output
    r = run("film", "render", str(script), "--voice", "nobody:nowhere", "--out", str(out))
    assert r.exit_code == 1 and "unknown_voice" in r.output
    r = run("film", "render", str(script), "--music", "polka", "--out", str(out))
    assert r.exit_code == 1 and "unknown_music" in r.output
    assert not out.exists()
    assert services.film.list(LOCAL_USER_ID).items == []  # nothing was created
