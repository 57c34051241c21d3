"""``studiolo watermark check FILE`` in-process: found and this install's, found but another's, not found (exit 1),
not an image (exit 2), ``--json``; it reads the key without creating one."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from studiolo.cli import app
from studiolo.domain.safety import invisible
from tests.unit.test_watermark_invisible import photo

KEY = "a-test-install-secret-key"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in list(os.environ):
        if key.startswith("STUDIOLO_"):
            monkeypatch.delenv(key)
    return {"STUDIOLO_DATA_DIR": str(tmp_path / "data"), "STUDIOLO_ENV": "test", "STUDIOLO_SECRET_KEY": KEY}


def check(env: dict[str, str], *args: str, **extra: str) -> Result:
    return CliRunner().invoke(app, ["watermark", "check", *args], env={**env, **extra})


def save_jpeg(image: Image.Image, path: Path) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    path.write_bytes(buffer.getvalue())
    return path


def test_this_installs_mark_survives_a_shared_jpeg(env: dict[str, str], tmp_path: Path) -> None:
    marked = invisible.embed(photo(), invisible.payload_for("", KEY.encode()))
    path = save_jpeg(marked.resize((256, 256)), tmp_path / "shared.jpg")
    result = check(env, str(path))
    assert result.exit_code == 0, result.output
    assert "watermark found" in result.output and "this install yes" in result.output
    report = json.loads(check(env, "--json", str(path)).stdout)
    assert report["found"] is True and report["this_install"] is True
    assert report["payload_hex"] == invisible.payload_for("", KEY.encode()).hex()
    assert report["confidence"] >= invisible.FOUND_AT


def test_another_installs_mark_is_found_but_not_ours(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "theirs.png"
    invisible.embed(photo(), invisible.payload_for("", b"someone-else")).save(path)
    result = check(env, str(path))
    assert result.exit_code == 0
    assert "this install no" in result.output
    # A configured text payload is shown as text, and decides what "this install" means.
    invisible.embed(photo(), invisible.payload_for("acme", b"")).save(path)
    report = json.loads(check(env, "--json", str(path), STUDIOLO_WATERMARK_PAYLOAD="acme").stdout)
    assert report["payload_text"] == "acme" and report["this_install"] is True


def test_no_watermark_exits_1(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    photo().save(path)
    result = check(env, str(path))
    assert result.exit_code == 1
    assert "no watermark found" in result.output
    report = json.loads(check(env, "--json", str(path)).stdout)
    assert report["found"] is False and report["payload_hex"] is None and report["this_install"] is False


def test_not_an_image_exits_2_and_no_key_is_made(env: dict[str, str], tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    result = check(env, str(text))
    assert result.exit_code == 2 and "invalid_image" in result.output
    missing = check(env, str(tmp_path / "missing.png"))
    assert missing.exit_code == 2 and "not_found" in missing.output
    # Without a configured key, reading must not create one: an install without a key has marked nothing.
    path = tmp_path / "plain.png"
    photo().save(path)
    no_key = {k: v for k, v in env.items() if k != "STUDIOLO_SECRET_KEY"}
    assert check(no_key, str(path)).exit_code == 1
    assert not (tmp_path / "data" / "secret.key").exists()
