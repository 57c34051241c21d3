"""A store that fails part-way through one image's files (issue 13, item 11), on the local store and on S3.

A full disk at, say, the 1920 thumbnail used to leave the PNG and the smaller thumbnails in the store with no row, for
good: the worker discarded only the images finished before the failing one, and nothing else ever looks for files
without rows (not even account deletion). Every key is now registered for cleanup before it is written, and a sweep
removes files no row refers to once they are older than a grace period."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image as PILImage
from sqlalchemy import update

from studiolo import services as services_module
from studiolo.db.base import utcnow
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.gallery import imaging
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.orphans import OrphanSweeper, original_key_of
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.services import Services, build_services
from studiolo.settings import Settings
from studiolo.storage.base import ObjectStore
from studiolo.storage.local import LocalObjectStore
from tests.helpers import drain, png_bytes, submit
from tests.s3_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoS3Server

# 512x512 outputs: a PNG, WebP thumbnails at 150 and 300, and one at 512 that stands for both 800 and 1920
# (thumbnails are never upscaled): four writes per image.
WRITES_PER_IMAGE = 4


class FullDisk:
    """An ObjectStore that passes everything to ``inner`` until the disk fills up: from the ``full_at``-th write on
    (counted from 1) every write fails as a full disk does, until ``free()``."""

    def __init__(self, inner: ObjectStore, full_at: int | None = None):
        self.inner = inner
        self.full_at = full_at
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes, content_type: str, *, durable: bool = True) -> None:
        self.writes += 1
        if self.full_at is not None and self.writes >= self.full_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)
        self.inner.put(key, data, content_type, durable=durable)

    def free(self) -> None:
        self.full_at = None


@pytest.fixture(params=["local", "s3"])
def make_services(
    request: pytest.FixtureRequest, settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """Builds services on a local directory or a moto S3 bucket, their store wrapped in ``FullDisk``."""
    built: list[Services] = []

    def make(**overrides: Any) -> tuple[Services, FullDisk]:
        if request.param == "s3":
            moto: MotoS3Server = request.getfixturevalue("moto_s3")
            overrides.update(
                storage="s3",
                s3_bucket=request.getfixturevalue("s3_bucket_name"),
                s3_endpoint_url=moto.endpoint_url,
                s3_access_key_id=ACCESS_KEY_ID,
                s3_secret_access_key=SECRET_ACCESS_KEY,
                s3_addressing_style="path",
                s3_create_bucket=True,
            )
        settings: Settings = settings_factory(**overrides)
        real = services_module.build_object_store
        disks: list[FullDisk] = []

        def wrapped(s: Settings) -> ObjectStore:
            disks.append(FullDisk(real(s)))
            return disks[-1]  # type: ignore[return-value]

        monkeypatch.setattr(services_module, "build_object_store", wrapped)
        svc = build_services(settings, upgrade_db=False)
        monkeypatch.setattr(services_module, "build_object_store", real)
        built.append(svc)
        return svc, disks[0]

    yield make
    for svc in built:
        svc.close()


def stored(disk: FullDisk) -> set[str]:
    return {key for prefix in ("images/", "thumbs/", "inputs/") for key in disk.inner.iter_keys(prefix)}


def referenced(services: Services) -> set[str]:
    page = services.gallery.list(LOCAL_USER_ID, limit=100)
    keys: set[str] = set()
    with services.db.session() as session:
        for item in page.items:
            row = services.gallery.get_row(session, LOCAL_USER_ID, item.id)
            keys |= {row.original_key, *row.thumbnail_keys.values()}
    return keys


@pytest.mark.parametrize("full_at", [1, 2, 4, 5, 6, 8])
def test_a_full_disk_part_way_through_an_image_leaves_no_files_and_the_job_retries(
    make_services: Any, full_at: int
) -> None:
    # A long backoff: the retry must wait for the disk to be freed, not run again within this drain.
    services, disk = make_services(retry_backoff_seconds=60)
    job_id = submit(services, size="512x512", n=2)
    disk.full_at = full_at  # the disk fills up at this write of the job's 2 x 4
    assert drain(services) == 1
    view = services.generation.get(LOCAL_USER_ID, job_id)
    assert view.status == "queued" and view.error is not None and view.error.code == "storage_error"
    assert "No space left on device" in view.error.message
    assert disk.writes >= full_at
    # Before: the files written ahead of the failing one stayed (e.g. full_at=4: the PNG, the 150 and the 300).
    assert stored(disk) == set()

    disk.free()
    with services.db.session() as session:  # skip the retry's backoff
        session.execute(update(Job).where(Job.id == job_id).values(run_after=utcnow()))
    assert drain(services) == 1
    view = services.generation.get(LOCAL_USER_ID, job_id)
    assert view.status == "succeeded" and view.attempts == 2 and len(view.outputs) == 2
    assert stored(disk) == referenced(services) and len(stored(disk)) == 2 * WRITES_PER_IMAGE


def test_the_last_attempt_on_a_full_disk_fails_the_job_and_leaves_no_files(make_services: Any) -> None:
    services, disk = make_services(max_attempts=1)
    job_id = submit(services, size="512x512", n=2)
    disk.full_at = 7
    assert drain(services) == 1
    view = services.generation.get(LOCAL_USER_ID, job_id)
    assert view.status == "failed" and view.error is not None and view.error.code == "storage_error"
    assert stored(disk) == set()


def test_the_sweep_removes_old_files_no_row_refers_to_and_spares_the_rest(make_services: Any) -> None:
    services, disk = make_services()
    kept_job = submit(services, size="512x512")
    assert drain(services) == 1
    kept = referenced(services)
    # An img2img job keeps its upload under inputs/.
    upload = services.generation.validate_upload(png_bytes((64, 64), (10, 200, 10)), field="init_image")
    params = GenerationParams(prompt="a lighthouse", size="64x64", steps=1)
    services.generation.submit(LOCAL_USER_ID, params, kind="img2img", init_image=upload)
    used_input = imaging.content_key(upload.png, "png", prefix="inputs")
    # What a crash between the files and their rows leaves: an image's files, and an upload, with no row.
    picture = PILImage.new("RGB", (400, 300), (90, 20, 160))
    png = imaging.encode_png(picture, parameters="", metadata={})
    orphan = services.gallery.write_files(png, imaging.make_thumbnails(picture), [])
    orphan_input = imaging.content_key(b"an upload whose job never committed", "png", prefix="inputs")
    disk.inner.put(orphan_input, b"an upload whose job never committed", "image/png")
    disk.inner.put("exports/not-ours.txt", b"a file of someone else's", "text/plain")
    everything = stored(disk)
    assert set(orphan.all_keys) | {orphan_input, used_input} | kept <= everything

    sweeper = OrphanSweeper(services.db, services.store, grace=timedelta(hours=1))
    # Within the grace period nothing goes: a row may be committing for any of these right now.
    assert sweeper.sweep() == 0 and stored(disk) == everything
    # An hour later the files no row refers to go, and only those.
    removed = sweeper.sweep(now=utcnow() + timedelta(hours=2))
    assert removed == len(set(orphan.all_keys)) + 1
    assert stored(disk) == everything - set(orphan.all_keys) - {orphan_input}
    assert disk.inner.exists("exports/not-ours.txt")
    assert services.generation.get(LOCAL_USER_ID, kept_job).status == "succeeded"


def test_original_key_of_gallery_files() -> None:
    png = b"some png bytes"
    original = imaging.content_key(png, "png", prefix="images")
    assert original_key_of(original) == original
    for size in imaging.THUMBNAIL_SIZES:
        assert original_key_of(imaging.content_key(png, "webp", prefix=f"thumbs/{size}")) == original
    assert original_key_of(imaging.content_key(png, "png", prefix="inputs")) is None
    assert original_key_of("exports/a.txt") is None


def test_workers_sweep_the_local_store_in_the_background(settings_factory: Any) -> None:
    settings = settings_factory(orphan_sweep_seconds=0.1, orphan_grace_seconds=600)
    services = build_services(settings, upgrade_db=False)
    try:
        store = services.store
        assert isinstance(store, LocalObjectStore)
        old = services.gallery.write_files(b"old orphan", {150: b"old thumb"}, [])
        fresh = services.gallery.write_files(b"fresh orphan", {150: b"fresh thumb"}, [])
        an_hour_ago = time.time() - 3600
        for key in old.all_keys:
            os.utime(store.local_path(key), (an_hour_ago, an_hour_ago))
        services.start_workers(1)
        deadline = time.monotonic() + 30
        while any(store.exists(key) for key in old.all_keys):
            assert time.monotonic() < deadline, "the background sweep never removed the old orphan"
            threading.Event().wait(0.05)
        assert all(store.exists(key) for key in fresh.all_keys)
    finally:
        services.close()
