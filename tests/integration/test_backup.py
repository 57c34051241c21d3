"""``studiolo backup`` / ``restore`` logic (studiolo/backup.py) in-process: the round trip, and every way a restore
refuses (an install already there, a damaged or foreign archive, a newer Studiolo's backup). The round trip while a
server runs, through the real commands: tests/e2e/test_backup.py. SQLite only: backups cover the embedded default."""

from __future__ import annotations

import io
import json
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from studiolo import backup as backups
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.errors import StudioloError
from studiolo.services import Services, build_services
from studiolo.settings import Settings
from tests.conftest import make_settings
from tests.helpers import drain, png_bytes, submit


@pytest.fixture
def install(settings_factory: Callable[..., Any]) -> Settings:
    """An embedded install with three pictures (one of them an img2img job with an uploaded input)."""
    settings: Settings = settings_factory(database_url="")
    services = build_services(settings, upgrade_db=False)
    try:
        for seed in (1, 2):
            submit(services, prompt=f"picture {seed}", seed=seed)
        init = services.generation.validate_upload(png_bytes(), field="init_image")
        params = GenerationParams(prompt="picture 3", size="64x64", steps=2, seed=3)
        services.generation.submit(LOCAL_USER_ID, params, kind="img2img", init_image=init)
        drain(services)
    finally:
        services.close()
    return settings


def gallery(settings: Settings) -> dict[str, bytes]:
    """Every image of the local owner by id, with the bytes of its original."""
    services: Services = build_services(settings, upgrade_db=False)
    try:
        items = services.gallery.list(LOCAL_USER_ID).items
        return {i.id: services.gallery.read(services.gallery.file(LOCAL_USER_ID, i.id, "original")[0]) for i in items}
    finally:
        services.close()


def rewrite(archive: Path, change: Callable[[str, bytes], tuple[str, bytes] | None]) -> Path:
    """A copy of ``archive`` with each member passed through ``change`` (None drops it)."""
    out = archive.with_name("changed-" + archive.name)
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src:
            source = src.extractfile(member)
            assert source is not None
            changed = change(member.name, source.read())
            if changed is not None:
                info = tarfile.TarInfo(changed[0])
                info.size = len(changed[1])
                dst.addfile(info, io.BytesIO(changed[1]))
    return out


def error_code(call: Callable[[], object]) -> str:
    with pytest.raises(StudioloError) as caught:
        call()
    return caught.value.code


def test_round_trip_into_a_fresh_data_dir(install: Settings, tmp_path: Path) -> None:
    original = gallery(install)
    assert len(original) == 3
    archive = tmp_path / "backups" / "studiolo.tar"
    manifest = backups.backup(install, archive)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert manifest.counts["images"] == 3 and manifest.counts["files"] >= 3 and manifest.missing_files == []
    assert manifest.secret_key_included and manifest.alembic_revision
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert {"studiolo.db", "secret.key", "checksums.sha256", "manifest.json"} <= set(names)
    # The install's C2PA signing identity, made when the first image was signed (issue 17).
    assert manifest.c2pa_identity_included and set(backups.C2PA_MEMBERS) <= set(names)
    assert any(n.startswith("files/inputs/") for n in names)  # the img2img job's uploaded image
    assert backups.check(archive) == manifest

    fresh = make_settings(tmp_path / "restored")
    assert backups.restore(fresh, archive) == manifest
    assert gallery(fresh) == original
    assert (fresh.data_dir / "secret.key").read_text() == (install.data_dir / "secret.key").read_text()
    for name in backups.C2PA_MEMBERS:
        assert (fresh.data_dir / name).read_bytes() == (install.data_dir / name).read_bytes()
    assert stat.S_IMODE((fresh.data_dir / "c2pa" / "signer.key").stat().st_mode) == 0o600
    restored = build_services(fresh, upgrade_db=False)
    try:  # the restored install still trusts what it signed before
        credentials = restored.runner.guard.credentials if restored.runner.guard else None
        assert credentials is not None
        assert {credentials.verify(data).state for data in original.values()} == {"valid"}
    finally:
        restored.close()
    assert stat.S_IMODE(fresh.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((fresh.data_dir / "studiolo.db").stat().st_mode) == 0o600


def test_restore_refuses_an_install_that_is_there_unless_forced(install: Settings, tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.gz"
    backups.backup(install, archive)
    other = make_settings(tmp_path / "other")
    services = build_services(other)
    try:
        submit(services, prompt="a picture of the other install")
        drain(services)
    finally:
        services.close()
    before = gallery(other)

    assert error_code(lambda: backups.restore(other, archive)) == "data_dir_not_empty"
    assert gallery(other) == before  # untouched

    backups.restore(other, archive, force=True)
    assert gallery(other) == gallery(install)  # replaced, the other install's picture files included
    assert not set(before) & set(gallery(other))


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("a flipped byte in a picture", "do not match their checksum"),
        ("a file added", "members and checksums differ"),
        ("a file left out", "members and checksums differ"),
        ("a path outside the data directory", "unexpected member"),
        ("no manifest", "no manifest.json"),
        ("a newer format", "made by a newer Studiolo"),
        ("counts that differ", "do not match its manifest"),
        ("not a tar file", "cannot be read"),
    ],
)
def test_restore_checks_the_whole_archive_first(install: Settings, tmp_path: Path, damage: str, why: str) -> None:
    archive = tmp_path / "b.tar"
    backups.backup(install, archive)

    def change(name: str, data: bytes) -> tuple[str, bytes] | None:
        picture = name.startswith("files/images/")
        if damage == "a flipped byte in a picture" and picture:
            return name, data[:100] + bytes([data[100] ^ 1]) + data[101:]
        if damage == "a file added" and name == "secret.key":
            return "files/images/extra.png", data
        if damage == "a file left out" and picture:
            return None
        if damage == "a path outside the data directory" and name == "secret.key":
            return "files/../../escaped", data
        if damage == "no manifest" and name == "manifest.json":
            return None
        if damage == "a newer format" and name == "manifest.json":
            return name, json.dumps({**json.loads(data), "format": 99}).encode()
        if damage == "counts that differ" and name == "manifest.json":
            manifest = json.loads(data)
            return name, json.dumps({**manifest, "counts": {**manifest["counts"], "images": 4}}).encode()
        return name, data

    damaged = tmp_path / "not-a-tar" if damage == "not a tar file" else rewrite(archive, change)
    if damage == "not a tar file":
        damaged.write_bytes(b"this is not a tar file\n" * 100)
    fresh = make_settings(tmp_path / "fresh")
    with pytest.raises(StudioloError) as caught:
        backups.restore(fresh, damaged)
    assert caught.value.code == "backup_invalid" and why in caught.value.message, caught.value.message
    assert not (fresh.data_dir / "studiolo.db").exists() and not (fresh.data_dir / "secret.key").exists()


def test_a_backup_from_a_newer_studiolo_is_refused(install: Settings, tmp_path: Path) -> None:
    engine = create_engine(install.resolved_database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    archive = tmp_path / "b.tar"
    backups.backup(install, archive)
    with pytest.raises(StudioloError) as caught:
        backups.check(archive)
    assert caught.value.code == "backup_invalid" and "made by a newer version" in caught.value.message


def test_a_backup_of_a_damaged_store_says_what_is_missing(install: Settings, tmp_path: Path) -> None:
    lost = next(p for p in install.files_dir.rglob("*.png") if "images" in p.parts)
    lost.unlink()
    manifest = backups.backup(install, tmp_path / "b.tar")
    assert manifest.missing_files == [lost.relative_to(install.files_dir).as_posix()]
    backups.check(tmp_path / "b.tar")  # still a usable backup of what there is


def test_scale_out_installs_and_missing_data_are_told_what_to_do(tmp_path: Path) -> None:
    pg = make_settings(tmp_path / "pg", database_url="postgresql+psycopg://u@db/studiolo")
    assert error_code(lambda: backups.backup(pg, tmp_path / "x.tar")) == "backup_unsupported"
    s3 = make_settings(tmp_path / "s3", storage="s3", s3_bucket="pictures")
    assert error_code(lambda: backups.restore(s3, tmp_path / "x.tar")) == "backup_unsupported"
    empty = make_settings(tmp_path / "empty")
    assert error_code(lambda: backups.backup(empty, tmp_path / "x.tar")) == "no_data"
