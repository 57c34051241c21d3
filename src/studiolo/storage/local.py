"""ObjectStore adapter that keeps objects as files under one root directory (the embedded default)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from studiolo.storage.base import ObjectNotFound, StoredObject

__all__ = ["LocalObjectStore", "key_problem", "validate_key"]

# S3's own limit, so a key valid here stays valid when the same data moves to a bucket.
MAX_KEY_BYTES = 1024


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid object key, or None when it is.

    Keys are relative POSIX paths made of non-empty segments. Besides the traversal forms ("/abs",
    "..", "a//b", backslashes, NUL) this refuses control characters, ':' (a Windows drive or NTFS
    stream would let a key leave the root there) and segments starting with '.', which keeps keys
    apart from the store's own temporary and probe files (tests/contract/test_storage_contract.py).
    """
    if not key:
        return "key is empty"
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. a file name that was not valid UTF-8
        return "key is not valid UTF-8 text"
    if len(encoded) > MAX_KEY_BYTES:
        return f"key is longer than {MAX_KEY_BYTES} bytes"
    if key.startswith("/"):
        return "key is absolute"
    if ".." in key:
        return "key contains '..'"
    for char in key:
        if char in "\\:" or ord(char) < 0x20 or ord(char) == 0x7F:
            return f"key contains the character {char!r}"
    for segment in key.split("/"):
        if not segment:
            return "key has an empty segment"
        if segment.startswith("."):
            return "key has a segment starting with '.'"
    return None


def validate_key(key: str) -> str:
    """Return ``key`` unchanged, or raise ValueError when it could name something outside the store."""
    problem = key_problem(key)
    if problem is not None:
        raise ValueError(f"invalid object key {key!r}: {problem}")
    return key


def _validate_prefix(prefix: str) -> None:
    # A prefix may end in '/' or stop part-way through a segment; everything else follows the key rules.
    if prefix:
        validate_key(prefix.removesuffix("/"))


def _fsync_dir(directory: Path) -> None:
    """Make entries created in ``directory`` (renames, new subdirectories) survive a crash."""
    if os.name != "posix":  # Windows cannot open a directory for fsync; NTFS journals metadata itself.
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalObjectStore:
    """Objects as files: ``root/images/ab/abcdef….png``.

    Writes go to a temporary file in the target directory, are fsynced and then renamed over the
    target, so readers see the old object or the whole new one. The containing directory is fsynced
    too: the gallery commits a database row right after ``put`` and the file must outlive a crash.
    Files are created with mode 0600 (``mkstemp``): images are private to their owners.

    A key cannot be both an object and a prefix of other keys ("a" and "a/b"), since a path cannot be
    both a file and a directory; ``put`` raises OSError there. Content-addressed keys never collide so.
    """

    name = "local"

    def __init__(self, root: Path) -> None:
        self._root = Path(root).resolve()

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, key: str) -> Path:
        return self._root / validate_key(key)

    def _make_dirs(self, directory: Path) -> None:
        missing: list[Path] = []
        while not directory.is_dir() and directory != directory.parent:
            missing.append(directory)
            directory = directory.parent
        for created in reversed(missing):
            # Another writer may create the same fan-out directory at the same moment.
            with contextlib.suppress(FileExistsError):
                created.mkdir()
            _fsync_dir(created.parent)

    def put(self, key: str, data: bytes, content_type: str, *, durable: bool = True) -> None:
        """Store ``data`` atomically; ``content_type`` is not kept (HTTP derives it from the key).

        ``durable=False`` (derivable objects such as thumbnails) skips the fsyncs: the write is still
        atomic, it just may not survive a power loss, which costs ~1 ms per fsync on every image.
        """
        path = self._path(key)
        self._make_dirs(path.parent)
        fd, temp_name = tempfile.mkstemp(prefix=".put-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                if durable:
                    os.fsync(file.fileno())
            os.replace(temp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        if durable:
            _fsync_dir(path.parent)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove ``key`` if present.

        Empty fan-out directories are left in place: removing them would race with a concurrent
        ``put`` that has just created its directory and not yet its temporary file.
        """
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            os.unlink(path)

    def local_path(self, key: str) -> Path:
        """The file that holds (or would hold) ``key``."""
        return self._path(key)

    def presigned_url(self, key: str, expires_seconds: int, filename: str | None = None) -> None:
        """None: files on this machine have no URL of their own; HTTP streams them (``local_path``)."""
        validate_key(key)
        return None

    def check(self) -> None:
        """Create the root if needed and write, fsync and remove a probe file; raises OSError on failure."""
        self._make_dirs(self._root)
        fd, probe_name = tempfile.mkstemp(prefix=".probe-", suffix=".tmp", dir=self._root)
        try:
            with os.fdopen(fd, "wb") as probe:
                probe.write(b"studiolo storage probe\n")
                probe.flush()
                os.fsync(probe.fileno())
        finally:
            os.unlink(probe_name)

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys starting with ``prefix``, in no particular order.

        Hidden entries (temporary and probe files) and files whose names are not valid keys (put
        there by hand) are skipped; symbolic links are neither followed nor reported.
        """
        for key, _ in self._walk(prefix):
            yield key

    def iter_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        """``iter_keys`` with each file's modification time (a file gone since it was listed is left out)."""
        for key, entry in self._walk(prefix):
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            yield StoredObject(key, datetime.fromtimestamp(mtime, UTC))

    def _walk(self, prefix: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        _validate_prefix(prefix)
        # Start at the deepest directory the prefix names in full, so listing one fan-out bucket
        # does not walk the whole store.
        start_key = prefix.rpartition("/")[0]
        pending = [(self._root / start_key if start_key else self._root, start_key)]
        while pending:
            directory, directory_key = pending.pop()
            try:
                with os.scandir(directory) as scan:
                    entries = list(scan)
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed or replaced since it was listed
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                key = f"{directory_key}/{entry.name}" if directory_key else entry.name
                if not key.startswith(prefix):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append((Path(entry.path), key))
                elif entry.is_file(follow_symlinks=False) and key_problem(key) is None:
                    yield key, entry
