"""The ``studiolo`` commands in-process (typer's CliRunner) on a temporary data directory: what a new user reads
from ``models`` and ``generate``, what ``--out`` writes, and ``images`` (the Trash). On PostgreSQL too when the
suite runs there."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from studiolo.cli import app, write_new_file
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.models import InstalledModel, Job
from studiolo.engines.demo.engine import DEMO_WEIGHTS, config_path
from studiolo.services import build_services
from studiolo.settings import Settings
from tests.helpers import create_user, drain, submit

Run = Callable[..., Result]


def flat(text: str) -> str:
    """Collapse whitespace and drop the error box's borders: Rich wraps long messages at the terminal width."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


@pytest.fixture
def env(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh install's environment: no model installed, the configured default is stabilityai/sd-turbo."""
    for key in list(os.environ):
        if key.startswith(("STUDIOLO_", "HF_")):
            monkeypatch.delenv(key)
    values = {
        "STUDIOLO_DATA_DIR": str(tmp_path / "data"),
        "STUDIOLO_ENV": "test",
        "STUDIOLO_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
    }
    if database_url:
        values["STUDIOLO_DATABASE_URL"] = database_url
    return values


@pytest.fixture
def run(env: dict[str, str]) -> Run:
    def invoke(*args: str, **extra_env: str) -> Result:
        return CliRunner().invoke(app, list(args), env={**env, **extra_env})

    return invoke


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(
        data_dir=Path(env["STUDIOLO_DATA_DIR"]), database_url=env.get("STUDIOLO_DATABASE_URL", ""), env="test"
    )


def demo_row(listing: str) -> list[str]:
    (line,) = [line for line in listing.splitlines() if "studiolo-demo" in line]
    return [cell.strip() for cell in line.split("│")[1:-1]]


def test_models_list_tells_one_true_default_story(run: Run, env: dict[str, str], tmp_path: Path) -> None:
    listed = run("models", "list")
    assert listed.exit_code == 0, listed.output
    size = sum(p.stat().st_size for p in (DEMO_WEIGHTS, config_path(DEMO_WEIGHTS)))
    # The demo's real size (15.9 MB in decimal units), not "0 MB" (issue 13).
    assert demo_row(listed.stdout) == ["*", "studiolo-demo", "demo", "builtin", "", f"{size / 1e6:.1f} MB"]
    said = flat(listed.stderr)
    # The * and the words agree: the demo is the default now, the configured model is what to install.
    assert (
        "studiolo-demo, the built-in demo model (64x64 toy world), is the default while no local model is installed"
        in (said)
    )
    assert "install the configured default, stabilityai/sd-turbo (STUDIOLO_DEFAULT_MODEL)" in said
    assert "`studiolo models pull stabilityai/sd-turbo`" in said
    assert "default model 'stabilityai/sd-turbo' is not installed" not in said

    # A model installed but not made the default: nothing is marked, and the list says what a request gets.
    services = build_services(settings_of(env))
    try:
        with services.db.session() as session:
            session.add(InstalledModel(id="my-model", engine="diffusers", source="folder", path=str(tmp_path)))
    finally:
        services.close(timeout=5)
    listed = run("models", "list")
    assert listed.exit_code == 0, listed.output
    assert demo_row(listed.stdout)[0] == ""
    said = flat(listed.stderr)
    assert "No default model: the configured default stabilityai/sd-turbo (STUDIOLO_DEFAULT_MODEL) is not" in said
    assert "`studiolo models default ID`" in said


def test_a_misspelt_model_suggests_the_installed_one(run: Run) -> None:
    for args, code in (
        (("generate", "a lighthouse", "--model", "studiolo-dmeo"), "model_unavailable"),
        (("models", "remove", "studiolo-dmeo"), "model_not_found"),
        (("models", "default", "studiolo-dmeo"), "model_not_found"),
    ):
        result = run(*args)
        said = flat(result.stderr)
        assert result.exit_code == 1, result.output
        assert f"error {code}: Model 'studiolo-dmeo' is not installed. Did you mean 'studiolo-demo'?" in said
        assert "Installed models: studiolo-demo." in said
        assert "models pull studiolo-dmeo" not in said  # the hub has no such model: pulling it fails again


def test_builtin_models_cannot_be_removed_or_made_default(run: Run) -> None:
    removed = run("models", "remove", "studiolo-demo")
    assert removed.exit_code == 1
    assert "error model_builtin: 'studiolo-demo' is built into Studiolo and cannot be removed." in flat(removed.stderr)
    made_default = run("models", "default", "studiolo-demo")
    assert made_default.exit_code == 1
    assert "error model_builtin: 'studiolo-demo' is built into Studiolo and cannot be made the default" in flat(
        made_default.stderr
    )
    assert demo_row(run("models", "list").stdout)[:2] == ["*", "studiolo-demo"]  # still there, still the default


def test_generate_out_never_overwrites(run: Run, tmp_path: Path) -> None:
    """Three jobs in a row with the same seed into one folder: three files (issue 13: the names were the first
    8 hex digits of the time-ordered job id, the same for about 65 s, so each run overwrote the last)."""
    out = tmp_path / "out"
    args = ("generate", "a red square", "--model", "echo", "--size", "64x64", "--steps", "1", "--seed", "7")
    printed: list[str] = []
    for _ in range(3):
        made = run(*args, "--out", str(out), STUDIOLO_ENABLE_ECHO_ENGINE="true")
        assert made.exit_code == 0, made.output
        printed += [line for line in made.stdout.splitlines() if line.endswith(".png")]
    written = sorted(out.glob("*.png"))
    assert len(written) == 3 and sorted(printed) == [str(p) for p in written]
    job_ids = {re.sub(r"-7\.png$", "", p.name) for p in written}
    assert len(job_ids) == 3 and all(len(j) == 36 for j in job_ids)  # the full job id names each file


def test_generate_takes_a_schedule_and_a_variation_seed(run: Run, tmp_path: Path) -> None:
    """--scheduler, --variation-seed and --variation-strength reach the job as the API's fields do, and the PNG says
    them as A1111 writes them; a bad schedule is refused before anything runs."""
    out = tmp_path / "out"
    echo = {"STUDIOLO_ENABLE_ECHO_ENGINE": "true"}
    args = ("generate", "a red fox", "--steps", "2", "--size", "64x64", "--seed", "3", "--scheduler", "karras")
    made = run(
        *args, "--model", "echo", "--variation-seed", "9", "--variation-strength", "0.5", "--out", str(out), **echo
    )
    assert made.exit_code == 0, made.output
    (png,) = out.glob("*.png")
    parameters = Image.open(png).info["parameters"]
    assert "Seed: 3" in parameters and "Schedule type: Karras" in parameters, parameters
    assert "Variation seed: 9" in parameters and "Variation seed strength: 0.5" in parameters, parameters

    unknown = run(*args[:-1], "sideways")  # no such schedule anywhere: the request's own rules (exit 2)
    assert unknown.exit_code == 2 and "invalid_scheduler" in flat(unknown.stderr), unknown.output
    unoffered = run(*args)  # the demo model draws its own schedule only: refused at submit (exit 1)
    said = flat(unoffered.stderr)
    assert unoffered.exit_code == 1 and "invalid_scheduler" in said and "offers the schedules automatic" in said


def test_generate_out_that_cannot_be_a_folder_is_refused_before_the_job(
    run: Run, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    made = run(
        "generate",
        "a red square",
        "--model",
        "echo",
        "--out",
        str(tmp_path / "taken"),
        STUDIOLO_ENABLE_ECHO_ENGINE="true",
    )
    assert made.exit_code == 2, made.output  # was a traceback after the job
    assert "--out is a file, not a folder" in flat(made.stderr)
    services = build_services(settings_of(env))
    try:
        with services.db.session() as session:
            assert session.query(Job).count() == 0
    finally:
        services.close(timeout=5)


def test_write_new_file_keeps_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"mine")
    second = write_new_file(tmp_path, "a", ".png", b"new")
    third = write_new_file(tmp_path, "a", ".png", b"newer")
    assert (second.name, third.name) == ("a-2.png", "a-3.png")
    assert [p.read_bytes() for p in (tmp_path / "a.png", second, third)] == [b"mine", b"new", b"newer"]


def test_unknown_options_suggest_the_option_meant(run: Run, env: dict[str, str]) -> None:
    """An unknown option is an error (exit 2, nothing runs) that names the option meant: click's closest spelling
    for --num-images was --init-image, an option that does something else (issue 13)."""
    cases = {
        ("generate", "a cat", "--num-images", "2"): "Did you mean --n? --n: Number of images.",
        ("generate", "a cat", "--init", "x.png"): "Did you mean --init-image?",  # a prefix is never taken as it
        ("generate", "a cat", "--sed", "7"): "Did you mean --seed?",
        ("generate", "a cat", "--cfg", "7"): "Did you mean --guidance?",
        ("generate", "a cat", "--init_image", "x.png"): "Did you mean --init-image?",
        ("models", "pull", "owner/name", "--defualt"): "Did you mean --default?",
        ("generate", "a cat", "--subseed", "5"): "Did you mean --variation-seed?",
        ("generate", "a cat", "--schedule-type", "karras"): "Did you mean --scheduler?",
    }
    for args, hint in cases.items():
        result = run(*args)
        said = flat(result.stderr)
        assert result.exit_code == 2, result.output
        (typed,) = [a for a in args if a.startswith("--")]
        assert f"No such option: {typed}. {hint}" in said, said
    said = flat(run("generate", "a cat", "--num-images", "2").stderr)
    assert "--init-image" not in said
    assert "No such option: --frobnicate." in flat(run("generate", "a cat", "--frobnicate", "1").stderr)

    services = build_services(settings_of(env))
    try:
        with services.db.session() as session:
            assert session.query(Job).count() == 0  # no option was mapped to another: nothing ran
    finally:
        services.close(timeout=5)


def test_unknown_commands_suggest_the_command_meant(run: Run) -> None:
    """Click's closest spelling found nothing for these (issue 13's review of the same class as --num-images)."""
    cases = {
        ("gen", "a cat"): "No such command 'gen'. Did you mean 'generate'?",
        ("models", "rm", "x"): "No such command 'rm'. Did you mean 'remove'?",
        ("models", "ls"): "No such command 'ls'. Did you mean 'list'?",
        ("models", "install", "x"): "No such command 'install'. Did you mean 'pull' or 'import'?",
        ("model", "list"): "No such command 'model'. Did you mean 'models'?",  # click's own, kept
    }
    for args, said in cases.items():
        result = run(*args)
        assert result.exit_code == 2 and said in flat(result.stderr), result.output


# --- studiolo images: the CLI deletes as the API does, to the Trash (issue 14) ---

ECHO = {"STUDIOLO_ENABLE_ECHO_ENGINE": "true"}


def make_images(env: dict[str, str], n: int, owner: str | None = None) -> tuple[list[str], str]:
    """``n`` images (of a new account ``owner`` when given); returns their ids, newest first, and the owner's id."""
    services = build_services(settings_of(env).model_copy(update={"enable_echo_engine": True}))
    try:
        owner_id = create_user(services, owner) if owner else LOCAL_USER_ID
        job_id = submit(services, owner_id, n=n, model="echo")
        drain(services)
        ids = [o.image_id for o in services.generation.get(owner_id, job_id).outputs]
    finally:
        services.close()
    return list(reversed(ids)), owner_id


def ids_in(output: str) -> list[str]:
    return re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", output)


def test_remove_restore_and_empty_the_trash(run: Run, env: dict[str, str]) -> None:
    (c, b, a), _ = make_images(env, 3)
    files = Path(env["STUDIOLO_DATA_DIR"]) / "files"
    count_files = lambda: sum(1 for p in files.rglob("*") if p.is_file())  # noqa: E731
    stored = count_files()
    listing = run("images", "list", **ECHO)
    assert ids_in(listing.stdout) == [c, b, a]

    r = run("images", "remove", a, b, **ECHO)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [f"moved to the Trash {a}", f"moved to the Trash {b}"]
    assert ids_in(run("images", "list", **ECHO).stdout) == [c]
    trash = run("images", "list", "--trash", **ECHO)
    assert ids_in(trash.stdout) == [b, a] and "purge on" in trash.stdout
    assert count_files() == stored  # files stay while in the Trash

    r = run("images", "restore", a, **ECHO)
    assert r.exit_code == 0 and r.stdout.strip() == f"restored {a}", r.output
    assert ids_in(run("images", "list", **ECHO).stdout) == [c, a]

    assert run("images", "empty-trash", **ECHO, input="n\n").exit_code == 1  # asked, and refused: nothing happens
    assert ids_in(run("images", "list", "--trash", **ECHO).stdout) == [b]
    r = run("images", "empty-trash", "--yes", **ECHO)
    assert r.exit_code == 0 and r.stdout.strip() == "Deleted 1 image for good.", r.output
    assert "The Trash is empty." in run("images", "list", "--trash", **ECHO).output
    assert count_files() < stored

    r = run("images", "remove", "--permanent", c, **ECHO)
    assert r.exit_code == 0 and r.stdout.strip() == f"deleted for good {c}", r.output
    assert ids_in(run("images", "list", **ECHO).stdout) == [a]


def test_unknown_or_another_users_ids_fail_and_user_selects_the_account(run: Run, env: dict[str, str]) -> None:
    (theirs,), _ = make_images(env, 1, owner="someone@example.com")
    (mine,), _ = make_images(env, 1)
    r = run("images", "remove", theirs, "nope", **ECHO)
    assert r.exit_code == 1
    assert "no image " + theirs in r.output and "no image nope" in r.output
    assert ids_in(run("images", "list", "--user", "someone@example.com", **ECHO).stdout) == [theirs]
    assert ids_in(run("images", "list", **ECHO).stdout) == [mine]

    r = run("images", "remove", theirs, "--user", "Someone@Example.com", **ECHO)
    assert r.exit_code == 0, r.output
    assert ids_in(run("images", "list", "--trash", "--user", "someone@example.com", **ECHO).stdout) == [theirs]
    assert "Trash is empty" in run("images", "list", "--trash", **ECHO).output

    r = run("images", "list", "--user", "nobody@example.com", **ECHO)
    assert r.exit_code == 1 and "user_not_found" in r.output


def test_upscale_enlarges_a_gallery_image(run: Run, tmp_path: Path) -> None:
    echo = {"STUDIOLO_ENABLE_ECHO_ENGINE": "true"}
    made = run("generate", "a red square", "--model", "echo", "--size", "64x64", "--steps", "1", **echo)
    assert made.exit_code == 0, made.output
    match = re.search(r"^image (\S+) seed", made.stdout, re.M)
    assert match is not None
    source_id = match[1]
    up = run("upscale", source_id, "--factor", "4", "--out", str(tmp_path / "up"), **echo)
    assert up.exit_code == 0, up.output
    assert f"{source_id} upscaled 4x with lanczos to 256x256" in flat(up.stderr)
    (png,) = (tmp_path / "up").glob("*.png")
    assert Image.open(png).size == (256, 256) and str(png) in up.stdout.splitlines()
    new = re.search(r"^image (\S+)$", up.stdout, re.M)
    assert new is not None and png.name.startswith(new[1])

    bad = run("upscale", source_id, "--factor", "3", **echo)
    assert bad.exit_code == 1 and "error invalid_upscale_factor: Lanczos + sharpen enlarges 2 or 4 times" in flat(
        bad.stderr
    )
    missing = run("upscale", "no-such-image", **echo)
    assert missing.exit_code == 1 and "error image_not_found" in flat(missing.stderr)
