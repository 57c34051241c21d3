"""Backups of the embedded default (SQLite database, local files, secret key): ``studiolo backup`` and ``restore``.

One archive, not a directory: a single file to copy off the machine, written under a temporary name and renamed
once complete (a half-written backup never looks like one), private (0600) as a whole, and checkable on its own.
A tar file (gzip-compressed when its name ends in .gz or .tgz; pictures are PNG and WebP already, so the default
is plain tar). Inside:

    studiolo.db        a consistent snapshot of the database (VACUUM INTO: compact, no pages of deleted rows)
    secret.key         the key that signs sessions and tokens, when it lives in the data directory
    files/<key>        every file of the local store: pictures, thumbnails, uploaded input images
    checksums.sha256   "<sha256>  <name>" for each member above (``sha256sum -c`` reads it)
    manifest.json      format, Studiolo version, migration revision, counts, time

Safe while the server and workers run (tests/e2e/test_backup.py): see ``_stage``. Model weights are not included
(large, and downloaded or imported again); docs/backup.md says what to back up in every configuration.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from studiolo import __version__
from studiolo.datadir import PRIVATE_DIR, PRIVATE_FILE, secure_data_dir, sqlite_files, sqlite_path
from studiolo.db import migrate
from studiolo.domain.accounts.models import User
from studiolo.domain.gallery.models import Collection, Image
from studiolo.domain.generation.models import Job
from studiolo.domain.safety.provenance import CHAIN_FILE, IDENTITY_DIR, KEY_FILE, ROOT_FILE
from studiolo.errors import Conflict, NotFound, StudioloError
from studiolo.settings import Settings
from studiolo.storage.local import LocalObjectStore, key_problem

log = logging.getLogger(__name__)

FORMAT = 1
KIND = "studiolo-backup"
MANIFEST = "manifest.json"
CHECKSUMS = "checksums.sha256"
DATABASE = "studiolo.db"
SECRET_KEY = "secret.key"
FILES = "files/"
# This install's own C2PA signing identity (issue 17, safety/provenance.py): without it, a restored install would make
# a new one, and every image signed before would read "untrusted" there.
C2PA_MEMBERS = tuple(f"{IDENTITY_DIR}/{name}" for name in (CHAIN_FILE, KEY_FILE, ROOT_FILE))
# Snapshots taken when files named by one disappear before they are staged (their images deleted meanwhile).
SNAPSHOT_ATTEMPTS = 3
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Manifest:
    """What a backup holds (``manifest.json``)."""

    created_at: str
    studiolo_version: str
    alembic_revision: str | None
    secret_key_included: bool
    counts: dict[str, int]
    # Files the database names that were not in the store (a damaged install): the backup is made regardless.
    missing_files: list[str] = field(default_factory=list)
    c2pa_identity_included: bool = False
    format: int = FORMAT
    kind: str = KIND

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=2, sort_keys=True).encode()


def default_archive_name(now: datetime | None = None) -> str:
    return f"studiolo-backup-{(now or datetime.now(UTC)):%Y%m%d-%H%M%S}.tar"


def embedded_database(settings: Settings, command: str) -> Path:
    """The SQLite file of an embedded install; a clear error for scale-out ones (their own tools back them up)."""
    database = sqlite_path(settings.resolved_database_url)
    if database is None or settings.storage != "local":
        where = "a database server" if database is None else "S3-compatible storage"
        raise StudioloError(
            f"`studiolo {command}` handles the embedded default (SQLite and files in the data directory); this "
            f"install keeps its data in {where}. Back it up with pg_dump and the bucket's own tools, plus the "
            "secret key: docs/backup.md.",
            code="backup_unsupported",
        )
    return database


# -- backup -----------------------------------------------------------------------------------------------------
def backup(settings: Settings, destination: Path) -> Manifest:
    """Write a backup of the embedded install to ``destination`` (a new file), safely while it runs."""
    database = embedded_database(settings, "backup")
    if not database.is_file() or database.stat().st_size == 0:
        raise NotFound(f"No database at {database}: nothing to back up (is STUDIOLO_DATA_DIR right?).", code="no_data")
    if destination.exists():
        raise Conflict(f"{destination} already exists; choose another name.", code="backup_exists")
    # Staged next to the files it hard-links (same file system), hidden from the store (a name starting with '.').
    staging = Path(tempfile.mkdtemp(prefix=".backup-", dir=settings.data_dir))
    try:
        missing = _stage(settings, database, staging)
        return _write_archive(settings, staging, destination, missing)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _stage(settings: Settings, database: Path, staging: Path) -> list[str]:
    """Put a database snapshot and every file it names into ``staging``; returns the names that are missing.

    Files never change once written (content-addressed keys) and are written before the row that names them, and
    deleted after it. So: hard-link every file of the store first (instant, no copy, and a link outlives the file's
    deletion), then snapshot the database in one read transaction, then link what the snapshot names that came
    after the first pass. A file the snapshot names that is gone by then belonged to an image deleted meanwhile: a
    newer snapshot no longer names it, so the snapshot is taken again (a few times at most)."""
    store = LocalObjectStore(settings.files_dir)
    staged = staging / "files"
    present = {key for key in store.iter_keys() if _link(store.local_path(key), staged / key)}
    snapshot = staging / DATABASE
    missing: list[str] = []
    for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
        snapshot.unlink(missing_ok=True)
        _snapshot(database, snapshot)
        missing = []
        for key in sorted(_referenced_keys(snapshot) - present):
            if key_problem(key) is None and _link(store.local_path(key), staged / key):
                present.add(key)
            else:
                missing.append(key)
        if not missing:
            break
        log.info("backup: %d file(s) went away during snapshot %d; taking another", len(missing), attempt)
    for key in missing:
        log.warning("backup: %s is named by the database but missing from %s", key, settings.files_dir)
    return missing


def _link(source: Path, target: Path) -> bool:
    """Hard-link (or, across file systems, copy) ``source`` to ``target``; False when ``source`` is gone."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except FileNotFoundError:
        return False
    except FileExistsError:
        return True
    except OSError:  # another file system, or links not allowed there
        try:
            shutil.copyfile(source, target)
        except FileNotFoundError:
            return False
    return True


def _snapshot(database: Path, target: Path) -> None:
    """A consistent copy of the live database: VACUUM INTO reads it in one transaction while writers go on."""
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as source:
        source.execute("VACUUM INTO ?", (str(target),))
    _check_database(target, thorough=False)


def _check_database(path: Path, *, thorough: bool) -> None:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        result = conn.execute("PRAGMA integrity_check" if thorough else "PRAGMA quick_check").fetchone()
    if not result or result[0] != "ok":
        raise StudioloError(f"The database fails SQLite's integrity check: {result}.", code="database_corrupt")


@contextlib.contextmanager
def _session(path: Path) -> Iterator[Session]:
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def _referenced_keys(snapshot: Path) -> set[str]:
    """The storage keys a database names: pictures with their thumbnails, and jobs' uploaded inputs."""
    keys: set[str] = set()
    with _session(snapshot) as session:
        for original, thumbnails in session.execute(select(Image.original_key, Image.thumbnail_keys)):
            keys.add(original)
            keys.update((thumbnails or {}).values())
        for inputs in session.scalars(select(Job.input_keys).where(Job.kind != "txt2img")):
            keys.update((inputs or {}).values())
    return keys


def _counts(snapshot: Path) -> dict[str, int]:
    with _session(snapshot) as session:
        return {
            name: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for name, model in (("users", User), ("images", Image), ("jobs", Job), ("collections", Collection))
        }


class _HashingReader:
    """Hands a file to tarfile while hashing what it reads (one pass over each file)."""

    def __init__(self, file: IO[bytes]):
        self._file = file
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self.sha256.update(data)
        return data


def _add(tar: tarfile.TarFile, name: str, file: IO[bytes], size: int) -> str:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = PRIVATE_FILE
    info.mtime = int(datetime.now(UTC).timestamp())
    reader = _HashingReader(file)
    tar.addfile(info, reader)  # tarfile only calls read()
    return reader.sha256.hexdigest()


def _write_archive(settings: Settings, staging: Path, destination: Path, missing: list[str]) -> Manifest:
    members: list[tuple[str, Path]] = [(DATABASE, staging / DATABASE)]
    key_file = settings.data_dir / SECRET_KEY
    key_included = not settings.secret_key and key_file.is_file()
    if key_included:
        members.append((SECRET_KEY, key_file))
    identity = [(name, settings.data_dir / name) for name in C2PA_MEMBERS]
    identity_included = all(path.is_file() for _, path in identity)
    if identity_included:
        members += identity
    files = sorted(p for p in (staging / "files").rglob("*") if p.is_file())
    members += [(FILES + p.relative_to(staging / "files").as_posix(), p) for p in files]
    counts = _counts(staging / DATABASE)
    counts["files"] = len(files)
    counts["file_bytes"] = sum(p.stat().st_size for p in files)
    manifest = Manifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        studiolo_version=__version__,
        alembic_revision=migrate.current_revision(f"sqlite:///{staging / DATABASE}"),
        secret_key_included=key_included,
        counts=counts,
        missing_files=missing,
        c2pa_identity_included=identity_included,
    )
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial-{secrets.token_hex(4)}")
    gzip = destination.name.endswith((".gz", ".tgz"))
    try:
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") if gzip else tarfile.open(fileobj=raw, mode="w") as tar:
                sums: list[str] = []
                for name, path in members:
                    with path.open("rb") as file:
                        sums.append(f"{_add(tar, name, file, os.fstat(file.fileno()).st_size)}  {name}\n")
                checksums = "".join(sums).encode()
                _add(tar, CHECKSUMS, io.BytesIO(checksums), len(checksums))
                body = manifest.to_json()
                _add(tar, MANIFEST, io.BytesIO(body), len(body))
            raw.flush()
            os.fsync(raw.fileno())
        os.link(partial, destination)  # not rename: never replace a file that appeared meanwhile
    except FileExistsError:
        raise Conflict(f"{destination} already exists; choose another name.", code="backup_exists") from None
    finally:
        partial.unlink(missing_ok=True)
    return manifest


# -- restore ----------------------------------------------------------------------------------------------------
def check(archive: Path) -> Manifest:
    """Read the whole archive and check it (members, checksums, database integrity, revision); nothing is kept."""
    with tempfile.TemporaryDirectory(prefix="studiolo-check-") as tmp:
        return _unpack(archive, Path(tmp), keep_files=False)


def restore(settings: Settings, archive: Path, *, force: bool = False) -> Manifest:
    """Restore ``archive`` into the data directory, after checking all of it. Refuses to replace an install that is
    there (a database, secret key or files) unless ``force``; then only those are replaced (models stay)."""
    database = embedded_database(settings, "restore")
    there = existing_install(settings, database)
    if there and not force:
        raise Conflict(
            f"{settings.data_dir} already holds an install ({', '.join(there)}). Restore into an empty data "
            "directory (STUDIOLO_DATA_DIR), or add --force to replace them with the backup.",
            code="data_dir_not_empty",
        )
    settings.data_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=settings.data_dir))
    try:
        manifest = _unpack(archive, staging, keep_files=True)
        # Only now, with all of the archive checked, is anything of the install touched.
        for path in sqlite_files(database):
            path.unlink(missing_ok=True)  # a -wal left behind would be replayed into the restored database
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staging / DATABASE, database)
        if manifest.secret_key_included:
            os.replace(staging / SECRET_KEY, settings.data_dir / SECRET_KEY)
        if manifest.c2pa_identity_included:
            identity = settings.data_dir / IDENTITY_DIR
            if identity.exists():
                os.replace(identity, staging / "replaced-c2pa")  # removed with the staging directory
            os.replace(staging / IDENTITY_DIR, identity)
        if settings.files_dir.exists():
            os.replace(settings.files_dir, staging / "replaced-files")  # removed with the staging directory
        (staging / "files").mkdir(exist_ok=True)
        os.replace(staging / "files", settings.files_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    secure_data_dir(settings)
    return manifest


def existing_install(settings: Settings, database: Path) -> list[str]:
    """What of an install the data directory holds that a restore would replace."""
    found = [p.name for p in sqlite_files(database) if p.exists() and p.stat().st_size > 0]
    if (settings.data_dir / SECRET_KEY).exists():
        found.append(SECRET_KEY)
    if settings.files_dir.is_dir() and any(p.is_file() for p in settings.files_dir.rglob("*")):
        found.append("files/")
    return found


def _invalid(archive: Path, why: str) -> StudioloError:
    return StudioloError(f"{archive} is not a usable Studiolo backup: {why}", code="backup_invalid")


def _unpack(archive: Path, into: Path, *, keep_files: bool) -> Manifest:
    """Stream the archive once: every member name checked, every file hashed (and written to ``into`` when
    ``keep_files``; the database always, to check it). Then the checksums, counts and database are verified."""
    if not archive.is_file():
        raise NotFound(f"No file at {archive}.", code="backup_not_found")
    digests: dict[str, str] = {}
    small: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                name = member.name
                if name in digests or name in small:
                    raise _invalid(archive, f"{name} appears twice")
                if not member.isfile() or not _expected(name):
                    raise _invalid(archive, f"unexpected member {name!r}")
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                if name in (MANIFEST, CHECKSUMS):
                    small[name] = source.read()
                    continue
                keep = keep_files or name == DATABASE
                target = into / name if keep else None
                digests[name] = _copy(source, target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _invalid(archive, f"it cannot be read ({exc})") from exc
    manifest = _parse_manifest(archive, small.get(MANIFEST))
    _verify_checksums(archive, small.get(CHECKSUMS), digests)
    if DATABASE not in digests:
        raise _invalid(archive, "it holds no database")
    if manifest.secret_key_included != (SECRET_KEY in digests):
        raise _invalid(archive, "the manifest and the archive disagree about the secret key")
    if manifest.c2pa_identity_included != all(name in digests for name in C2PA_MEMBERS):
        raise _invalid(archive, "the manifest and the archive disagree about the C2PA signing identity")
    _check_database(into / DATABASE, thorough=True)
    _check_revision(archive, into / DATABASE, manifest)
    counts = _counts(into / DATABASE)
    counts["files"] = sum(1 for name in digests if name.startswith(FILES))
    mismatched = {k: (v, counts.get(k)) for k, v in manifest.counts.items() if k != "file_bytes" and counts.get(k) != v}
    if mismatched:
        raise _invalid(archive, f"its contents do not match its manifest (manifest, archive): {mismatched}")
    return manifest


def _expected(name: str) -> bool:
    if name in (MANIFEST, CHECKSUMS, DATABASE, SECRET_KEY, *C2PA_MEMBERS):
        return True
    return name.startswith(FILES) and key_problem(name.removeprefix(FILES)) is None


def _copy(source: IO[bytes], target: Path | None) -> str:
    digest = hashlib.sha256()
    out: IO[bytes] | None = None
    if target is not None:
        target.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        out = os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb")
    try:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    return digest.hexdigest()


def _parse_manifest(archive: Path, body: bytes | None) -> Manifest:
    if body is None:
        raise _invalid(archive, f"it has no {MANIFEST}")
    try:
        data: dict[str, Any] = json.loads(body)
        if data.get("kind") != KIND:
            raise _invalid(archive, f"its {MANIFEST} is not a Studiolo backup's")
        if int(data.get("format", 0)) > FORMAT:
            raise _invalid(archive, f"it was made by a newer Studiolo ({data.get('studiolo_version')}); upgrade first")
        known = {k: v for k, v in data.items() if k in Manifest.__dataclass_fields__}  # later additions: ignored
        return Manifest(**known)
    except (ValueError, TypeError) as exc:
        raise _invalid(archive, f"its {MANIFEST} cannot be read ({exc})") from exc


def _verify_checksums(archive: Path, body: bytes | None, digests: dict[str, str]) -> None:
    if body is None:
        raise _invalid(archive, f"it has no {CHECKSUMS}")
    listed: dict[str, str] = {}
    for line in body.decode("utf-8", "replace").splitlines():
        digest, sep, name = line.partition("  ")
        if not sep:
            raise _invalid(archive, f"{CHECKSUMS} has a malformed line: {line[:100]!r}")
        listed[name] = digest
    if set(listed) != set(digests):
        unlisted, absent = sorted(set(digests) - set(listed)), sorted(set(listed) - set(digests))
        raise _invalid(archive, f"members and checksums differ (not listed: {unlisted[:5]}, absent: {absent[:5]})")
    damaged = sorted(name for name, digest in digests.items() if listed[name] != digest)
    if damaged:
        raise _invalid(archive, f"{len(damaged)} member(s) do not match their checksum, e.g. {damaged[0]}")


def _check_revision(archive: Path, database: Path, manifest: Manifest) -> None:
    url = f"sqlite:///{database}"
    revision = migrate.current_revision(url)
    if revision != manifest.alembic_revision:
        raise _invalid(
            archive, f"its database is at revision {revision}; its manifest says {manifest.alembic_revision}"
        )
    if revision is None:
        return
    scripts = ScriptDirectory.from_config(migrate.alembic_config(url))
    known = {script.revision for script in scripts.walk_revisions()}
    if revision not in known:
        raise _invalid(
            archive,
            f"its database is at revision {revision}, which this Studiolo ({__version__}) does not know: it was made "
            "by a newer version; upgrade Studiolo first",
        )
