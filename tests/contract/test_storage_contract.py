"""The contract every ObjectStore adapter passes (docs/DESIGN.md, habit 9).

To add an adapter, append a factory to ADAPTERS: it receives the pytest request (for tmp_path or a
server fixture such as moto's) and returns a fresh, empty store. Tests specific to one adapter sit
at the end of this file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from studiolo.storage.base import ObjectNotFound, ObjectStore
from studiolo.storage.local import LocalObjectStore

StoreFactory = Callable[[pytest.FixtureRequest], ObjectStore]


def _local_store(request: pytest.FixtureRequest) -> ObjectStore:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return LocalObjectStore(tmp_path / "store")


def _s3_store(request: pytest.FixtureRequest) -> ObjectStore:
    # moto's real S3 server, a fresh bucket per test (tests/contract/conftest.py).
    store: ObjectStore = request.getfixturevalue("s3_store")
    return store


ADAPTERS = [pytest.param(_local_store, id="local"), pytest.param(_s3_store, id="s3")]


@pytest.fixture(params=ADAPTERS)
def store(request: pytest.FixtureRequest) -> ObjectStore:
    factory: StoreFactory = request.param
    return factory(request)


KEY = "images/ab/abcdef0123.png"

INVALID_KEYS = [
    "",
    "/",
    "/etc/passwd",
    "..",
    "../secret",
    "images/../../secret",
    "images/..",
    "file..png",
    ".",
    "./images/x.png",
    "images/./x.png",
    "a\\b",
    "..\\..\\secret",
    "C:\\Windows\\win.ini",
    "c:secret",
    "a\x00b",
    "a\nb",
    "a//b",
    "images/",
    ".hidden",
    "images/ab/.put-x.tmp",
    "x" * 1025,
]

VALID_KEYS = [
    "a",
    KEY,
    "thumbs/150/ab/abcdef0123.webp",
    "unicode/ñandú-猫.png",
    "with space/x y.png",
    "ends.with.dots.png",
]


def test_is_an_object_store(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    assert store.name


@pytest.mark.parametrize("key", VALID_KEYS)
def test_put_get_round_trip(store: ObjectStore, key: str) -> None:
    data = bytes(range(256)) * 3
    store.put(key, data, "application/octet-stream")
    assert store.get(key) == data
    assert store.exists(key)


def test_empty_object(store: ObjectStore) -> None:
    store.put(KEY, b"", "image/png")
    assert store.get(KEY) == b""
    assert store.exists(KEY)


def test_overwrite_replaces_the_whole_object(store: ObjectStore) -> None:
    store.put(KEY, b"a much longer first version", "image/png")
    store.put(KEY, b"short", "image/png")
    assert store.get(KEY) == b"short"
    assert list(store.iter_keys()) == [KEY]


def test_get_missing_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get(KEY)
    assert not store.exists(KEY)


def test_object_not_found_is_a_key_error(store: ObjectStore) -> None:
    with pytest.raises(KeyError):
        store.get("missing/key.png")


def test_a_prefix_of_stored_keys_is_not_an_object(store: ObjectStore) -> None:
    store.put(KEY, b"data", "image/png")
    with pytest.raises(ObjectNotFound):
        store.get("images/ab")
    assert not store.exists("images/ab")
    store.delete("images/ab")
    assert store.get(KEY) == b"data"


def test_key_below_an_object_is_missing(store: ObjectStore) -> None:
    store.put("images/file.png", b"data", "image/png")
    with pytest.raises(ObjectNotFound):
        store.get("images/file.png/below.png")
    assert not store.exists("images/file.png/below.png")


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put(KEY, b"data", "image/png")
    store.delete(KEY)
    assert not store.exists(KEY)
    with pytest.raises(ObjectNotFound):
        store.get(KEY)
    store.delete(KEY)
    store.delete("never/existed.png")


def test_delete_leaves_other_keys(store: ObjectStore) -> None:
    store.put("images/ab/1.png", b"1", "image/png")
    store.put("images/ab/2.png", b"2", "image/png")
    store.delete("images/ab/1.png")
    assert store.get("images/ab/2.png") == b"2"
    assert list(store.iter_keys()) == ["images/ab/2.png"]


def test_iter_keys_on_an_empty_store(store: ObjectStore) -> None:
    assert list(store.iter_keys()) == []
    assert list(store.iter_keys("images/")) == []


def test_iter_keys_with_prefix(store: ObjectStore) -> None:
    keys = {
        "images/ab/1.png",
        "images/ab/2.png",
        "images/cd/3.png",
        "imagesx/4.png",
        "thumbs/150/ab/1.webp",
        "top.png",
    }
    for key in keys:
        store.put(key, key.encode(), "application/octet-stream")

    assert sorted(store.iter_keys()) == sorted(keys)
    assert set(store.iter_keys("")) == keys
    assert set(store.iter_keys("images/")) == {"images/ab/1.png", "images/ab/2.png", "images/cd/3.png"}
    # A plain string prefix, as in an S3 listing: not limited to whole segments.
    assert set(store.iter_keys("images")) == {
        "images/ab/1.png",
        "images/ab/2.png",
        "images/cd/3.png",
        "imagesx/4.png",
    }
    assert set(store.iter_keys("images/a")) == {"images/ab/1.png", "images/ab/2.png"}
    assert set(store.iter_keys("images/ab/1")) == {"images/ab/1.png"}
    assert set(store.iter_keys("images/ab/1.png")) == {"images/ab/1.png"}
    assert set(store.iter_keys("thumbs/")) == {"thumbs/150/ab/1.webp"}
    assert set(store.iter_keys("t")) == {"thumbs/150/ab/1.webp", "top.png"}
    assert list(store.iter_keys("nothing/")) == []
    assert list(store.iter_keys("images/zz/")) == []


def test_iter_keys_forgets_deleted_objects(store: ObjectStore) -> None:
    store.put("images/ab/1.png", b"1", "image/png")
    store.put("images/ab/2.png", b"2", "image/png")
    store.delete("images/ab/1.png")
    assert list(store.iter_keys("images/")) == ["images/ab/2.png"]


def test_iter_objects_lists_the_keys_with_when_each_was_written(store: ObjectStore) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)  # generous: S3 stamps whole seconds, clocks differ a little
    for key in ("images/ab/1.png", "images/cd/2.png", "thumbs/150/ab/1.webp"):
        store.put(key, key.encode(), "application/octet-stream")
    listed = {o.key: o.modified_at for o in store.iter_objects("images/")}
    assert set(listed) == set(store.iter_keys("images/")) == {"images/ab/1.png", "images/cd/2.png"}
    after = datetime.now(UTC) + timedelta(minutes=5)
    assert all(when.tzinfo is not None and before < when < after for when in listed.values())
    assert [o.key for o in store.iter_objects("thumbs/")] == ["thumbs/150/ab/1.webp"]
    assert list(store.iter_objects("nothing/")) == []


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_refused_by_every_operation(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put(key, b"payload", "image/png")
    with pytest.raises(ValueError):
        store.get(key)
    with pytest.raises(ValueError):
        store.exists(key)
    with pytest.raises(ValueError):
        store.delete(key)
    with pytest.raises(ValueError):
        store.local_path(key)
    with pytest.raises(ValueError):
        store.presigned_url(key, 60)
    assert list(store.iter_keys()) == []


@pytest.mark.parametrize("prefix", ["/", "/etc", "../", "images/../", "a\\b", "a//", ".hidden", "a\x00"])
def test_invalid_prefixes_are_refused(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ValueError):
        list(store.iter_keys(prefix))
    with pytest.raises(ValueError):
        list(store.iter_objects(prefix))


def test_put_leaves_nothing_but_the_object(store: ObjectStore) -> None:
    for index in range(5):
        store.put(KEY, f"version {index}".encode(), "image/png")
    assert list(store.iter_keys()) == [KEY]


def test_readers_never_see_a_partial_object(store: ObjectStore) -> None:
    """A reader racing a writer of large objects sees one whole version or the other."""
    size = 4 * 1024 * 1024
    versions = (b"a" * size, b"b" * (size + 1))
    store.put(KEY, versions[0], "application/octet-stream")

    def write() -> None:
        for index in range(16):
            store.put(KEY, versions[index % 2], "application/octet-stream")

    reads = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        writing = pool.submit(write)
        while not writing.done() or reads < 3:
            data = store.get(KEY)
            reads += 1
            assert data in versions, f"partial read of {len(data)} bytes"
        writing.result()  # re-raises what the writer hit
    assert store.get(KEY) == versions[1]
    assert list(store.iter_keys()) == [KEY]


def test_presigned_url_serves_the_object_or_is_absent(store: ObjectStore) -> None:
    """None means "serve the bytes yourself"; a URL must serve the object, with its content type, to anyone."""
    store.put(KEY, b"\x89PNG data", "image/png")
    url = store.presigned_url(KEY, 60)
    if url is None:
        assert store.presigned_url(KEY, 60, filename="picture.png") is None
        return
    response = httpx.get(url)  # no credentials: the URL alone grants the read
    assert response.status_code == 200
    assert response.content == b"\x89PNG data"
    assert response.headers["content-type"] == "image/png"


def test_check_passes_and_leaves_nothing_behind(store: ObjectStore) -> None:
    store.check()
    store.check()
    assert list(store.iter_keys()) == []


# --------------------------------------------------------------------------- local adapter


def _all_files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if not path.is_dir())


def test_local_store_files_live_under_the_root(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    store.put(KEY, b"data", "image/png")
    path = store.local_path(KEY)
    assert path == (tmp_path / "store" / KEY).resolve()
    assert path.read_bytes() == b"data"
    assert _all_files(tmp_path) == [f"store/{KEY}"]


def test_local_store_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    for index in range(3):
        store.put(KEY, b"x" * (index + 1) * 100_000, "image/png")
    store.check()
    assert _all_files(tmp_path) == [KEY]


def test_local_store_refused_keys_touch_nothing(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    (tmp_path / "secret").write_bytes(b"keep")
    for key in INVALID_KEYS:
        with pytest.raises(ValueError):
            store.put(key, b"overwritten", "image/png")
    assert _all_files(tmp_path) == ["secret"]
    assert (tmp_path / "secret").read_bytes() == b"keep"


def test_local_store_failed_put_keeps_the_old_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalObjectStore(tmp_path)
    store.put(KEY, b"old", "image/png")

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        store.put(KEY, b"new", "image/png")
    monkeypatch.undo()
    assert store.get(KEY) == b"old"
    assert _all_files(tmp_path) == [KEY]


def test_local_store_iter_keys_skips_foreign_entries(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put(KEY, b"data", "image/png")
    (tmp_path / "images" / "ab" / ".put-left-by-a-crash.tmp").write_bytes(b"partial")
    (tmp_path / "images" / "ab" / "back\\slash.png").write_bytes(b"by hand")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "leak.png").write_bytes(b"not ours")
    (tmp_path / "images" / "link").symlink_to(outside, target_is_directory=True)
    assert list(store.iter_keys()) == [KEY]


def test_local_store_check_creates_the_root(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "new" / "store")
    store.check()
    assert (tmp_path / "new" / "store").is_dir()
    assert _all_files(tmp_path) == []


def test_local_store_check_fails_when_the_root_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    with pytest.raises(OSError):
        LocalObjectStore(blocker).check()
    with pytest.raises(OSError):
        LocalObjectStore(blocker / "store").check()
