"""The ``studiolo`` command line as a user runs it: subprocesses on a temporary data directory."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic.script import ScriptDirectory
from PIL import Image

from studiolo.db import migrate
from tests.e2e.conftest import flat, free_port, run_cli, studiolo_env

pytestmark = pytest.mark.slow

ERROR_CODE = re.compile(r"error (\w+):")


def cli(tmp_path: Path, *args: str, timeout: float = 120.0, **env: Any) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=studiolo_env(tmp_path / "data", **env), cwd=tmp_path, timeout=timeout)


def error_code(result: subprocess.CompletedProcess[str]) -> str | None:
    found = ERROR_CODE.search(result.stderr)
    return found.group(1) if found else None


def model_rows(listing: str) -> dict[str, str]:
    """``models list`` table rows by model id (Rich box drawing, one row per line)."""
    rows: dict[str, str] = {}
    for line in listing.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) >= 3 and cells[2] in ("diffusers", "echo"):
            rows[cells[1]] = cells[0]
    return rows


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_pipeline import make_tiny_sd_pipeline

    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("models") / "tiny")


def test_empty_install_lists_nothing_and_pull_offline_points_to_import(tmp_path: Path) -> None:
    listed = cli(tmp_path, "models", "list")
    assert listed.returncode == 0, listed.stderr
    assert model_rows(listed.stdout) == {}
    message = flat(listed.stderr)
    assert "install the configured default, stabilityai/sd-turbo" in message
    assert "studiolo models import" in message

    # A closed local port stands in for the hub, so the test is offline on any machine (this one has no network).
    pulled = cli(
        tmp_path, "models", "pull", "stabilityai/sd-turbo", timeout=60, HF_ENDPOINT=f"http://127.0.0.1:{free_port()}"
    )
    assert pulled.returncode != 0
    assert "studiolo models import" in flat(pulled.stderr), pulled.stderr
    models_dir = tmp_path / "data" / "models"
    assert not models_dir.exists() or not any(models_dir.iterdir())  # a failed pull leaves nothing behind
    assert model_rows(cli(tmp_path, "models", "list").stdout) == {}


def test_fresh_install_generates_with_the_demo_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    made = cli(
        tmp_path, "generate", "a lighthouse by the sea at dusk, pixel art", "--size", "128x96", "--out", str(out)
    )
    assert made.returncode == 0, made.stderr
    assert "Using the built-in demo model (64x64 toy world)" in flat(made.stderr)
    assert "studiolo models pull stabilityai/sd-turbo" in flat(made.stderr)
    (written,) = out.glob("*.png")
    with Image.open(written) as image:
        assert image.size == (128, 96)
        assert "Model: studiolo-demo" in image.info["parameters"]


def _generate(tmp_path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ("generate", "a red square", "--size", "64x64", "--steps", "2", "--seed", "7", "--n", "2")
    return cli(tmp_path, *args, "--out", str(out), *extra, timeout=300)


def _pngs_by_seed(out: Path) -> dict[int, tuple[str, np.ndarray]]:
    found: dict[int, tuple[str, np.ndarray]] = {}
    for path in sorted(out.glob("*.png")):
        with Image.open(path) as image:
            parameters = image.info["parameters"]
            pixels = np.asarray(image.convert("RGB"))
        seed = int(re.search(r"Seed: (\d+)", parameters).group(1))  # type: ignore[union-attr]
        assert seed not in found
        found[seed] = (parameters, pixels)
    return found


def test_import_generate_deterministically_and_remove(tmp_path: Path, tiny_model: Path) -> None:
    imported = cli(tmp_path, "models", "import", str(tiny_model), "--id", "tiny", "--default")
    assert imported.returncode == 0, imported.stderr
    listed = cli(tmp_path, "models", "list")
    assert listed.returncode == 0 and model_rows(listed.stdout) == {"tiny": "*"}, listed.stdout
    assert "not installed" not in listed.stderr

    first = _generate(tmp_path, tmp_path / "out1")
    assert first.returncode == 0, first.stderr
    assert re.findall(r"seed (\d+)", first.stdout) == ["7", "8"]
    written = sorted((tmp_path / "out1").glob("*.png"))
    assert len(written) == 2 and all(str(p) in first.stdout for p in written)
    images = _pngs_by_seed(tmp_path / "out1")
    assert sorted(images) == [7, 8]
    for seed, (parameters, pixels) in images.items():
        assert parameters.startswith("a red square")
        assert f"Seed: {seed}" in parameters and "Size: 64x64" in parameters and "Model: tiny" in parameters
        assert pixels.shape == (64, 64, 3)
    assert not np.array_equal(images[7][1], images[8][1])

    again = _generate(tmp_path, tmp_path / "out2")
    assert again.returncode == 0, again.stderr
    repeat = _pngs_by_seed(tmp_path / "out2")
    assert sorted(repeat) == [7, 8]
    for seed in (7, 8):
        np.testing.assert_array_equal(repeat[seed][1], images[seed][1], err_msg=f"seed {seed} is not deterministic")

    missing = _generate(tmp_path, tmp_path / "out3", "--model", "nope")
    assert missing.returncode == 1
    assert error_code(missing) == "model_unavailable", missing.stderr
    assert "studiolo models import" in flat(missing.stderr)
    assert not (tmp_path / "out3").exists()

    removed = cli(tmp_path, "models", "remove", "tiny")
    assert removed.returncode == 0, removed.stderr
    assert model_rows(cli(tmp_path, "models", "list").stdout) == {}
    assert not (tmp_path / "data" / "models" / "tiny").exists()
    assert tiny_model.is_dir()  # the imported copy is removed, never the user's original folder


def test_import_refuses_missing_and_fake_model_files(tmp_path: Path) -> None:
    nowhere = cli(tmp_path, "models", "import", str(tmp_path / "no-such-model"))
    assert nowhere.returncode == 1
    assert error_code(nowhere) == "model_path_not_found", nowhere.stderr

    fake = tmp_path / "notes.safetensors"
    fake.write_text("these are my notes, not a model\n" * 50, encoding="utf-8")
    refused = cli(tmp_path, "models", "import", str(fake))
    assert refused.returncode == 1
    code = error_code(refused)
    assert code is not None and code.startswith("model_file_"), refused.stderr
    assert "safetensors" in flat(refused.stderr)
    assert "Traceback" not in refused.stderr

    assert model_rows(cli(tmp_path, "models", "list").stdout) == {}
    models_dir = tmp_path / "data" / "models"
    assert not models_dir.exists() or not any(models_dir.iterdir())


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'data' / 'studiolo.db'}"
    head = ScriptDirectory.from_config(migrate.alembic_config(db_url)).get_current_head()
    assert head

    upgraded = cli(tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert head in upgraded.stderr
    current = cli(tmp_path, "db", "current")
    assert current.returncode == 0 and current.stdout.strip() == head
    twice = cli(tmp_path, "db", "upgrade")  # idempotent
    assert twice.returncode == 0 and head in twice.stderr, twice.stderr


def test_db_current_on_a_fresh_machine_says_empty(tmp_path: Path) -> None:
    result = cli(tmp_path, "db", "current")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "empty"
