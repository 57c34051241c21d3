"""The on-disk cache of converted models and quality-gate results, one entry per model version (issue 20).

An entry is a folder ``<root>/<key>/`` holding ``manifest.json`` (the gate's figures, the files it vouches for)
and whatever the path converted (OpenVINO IR files, OpenVINO's own compiled-blob cache). The key hashes the model's
files (relative path, size, modification time) and the versions of everything that shapes a conversion, so a
changed model or an upgraded torch/diffusers/OpenVINO gets a new entry instead of a stale one.

Entries are built in a temporary sibling folder and renamed into place, so a crash mid-conversion leaves no
half-written entry; one that is nonetheless unreadable (a manifest that is not JSON, a file it lists missing) is
deleted and rebuilt, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Bump when a conversion or the gate changes what an entry holds: older entries are then ignored (and swept).
FORMAT_VERSION = 1
# Files that make up a model; others (README, images) do not change what loads.
MODEL_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".json", ".txt", ".model")


class CorruptEntry(Exception):
    """A cache entry that cannot be used as it is; the caller deletes and rebuilds it."""


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for package in ("torch", "diffusers", "transformers", "openvino"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "-"
    return out


def model_fingerprint(path: Path) -> str:
    """A hash of the model's files as they are on disk now: relative paths, sizes and modification times.

    Cheap (no file is read) and it changes whenever a file is replaced, rewritten or added.
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in MODEL_SUFFIXES)
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        name = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dataclass
class CacheStats:
    """What the cache did in this process (tests count conversions; the log reports them)."""

    hits: int = 0
    builds: int = 0
    rebuilt_corrupt: int = 0


class AccelCache:
    """Entries under ``root`` (by default ``<data dir>/cache/accel``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._paths: dict[str, Path] = {}  # key -> model path, recorded in manifests (which model an entry is for)

    def key(self, model_path: Path, *, device: str, extra: str = "") -> str:
        """The entry key of one model's files, for this device and these library versions."""
        material = json.dumps(
            {
                "format": FORMAT_VERSION,
                "model": model_fingerprint(model_path),
                "device": device,
                "versions": _versions(),
                "extra": extra,
            },
            sort_keys=True,
        )
        key = hashlib.sha256(material.encode()).hexdigest()[:32]
        self._paths[key] = Path(model_path)
        return key

    def entry_dir(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str) -> dict[str, Any] | None:
        """The manifest of a complete entry, None when there is none; a corrupt entry is deleted (then None)."""
        folder = self.entry_dir(key)
        if not folder.exists():
            return None
        try:
            manifest = self._check(folder)
        except CorruptEntry as exc:
            log.warning("accelerated-model cache entry %s is damaged (%s); rebuilding it", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
            with self._lock:
                self.stats.rebuilt_corrupt += 1
            return None
        with self._lock:
            self.stats.hits += 1
        return manifest

    def discard(self, key: str, reason: str) -> None:
        """Delete an entry that turned out unusable after reading (e.g. OpenVINO could not load its files)."""
        log.warning("accelerated-model cache entry %s is unusable (%s); rebuilding it", self.entry_dir(key), reason)
        shutil.rmtree(self.entry_dir(key), ignore_errors=True)
        with self._lock:
            self.stats.rebuilt_corrupt += 1

    @contextmanager
    def build(self, key: str) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Yield (a temporary folder, the manifest to fill); on success both become the entry, atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".build-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        manifest: dict[str, Any] = {"format": FORMAT_VERSION, "files": [], "model_path": str(self._paths.get(key, ""))}
        try:
            yield tmp, manifest
            # Every file the build wrote is listed with its size, so a truncated copy is caught on read.
            manifest["files"] = [
                {"name": p.name, "size": p.stat().st_size} for p in sorted(tmp.iterdir()) if p.is_file()
            ]
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
            final = self.entry_dir(key)
            if final.exists():  # another process built it meanwhile, or a damaged one is in the way
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            with self._lock:
                self.stats.builds += 1
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def forget_model(self, model_path: Path) -> int:
        """Delete every entry made from the model at ``model_path`` (it was removed); returns how many.

        Entries hold gigabytes (a converted SD 2.1 model: ~1.8 GB of IR plus ~1.7 GB of compiled blob), and no
        later key can match them once the model's files are gone.
        """
        if not self.root.is_dir():
            return 0
        gone = 0
        for manifest_file in self.root.glob(f"*/{MANIFEST}"):
            try:
                recorded = json.loads(manifest_file.read_text(encoding="utf-8")).get("model_path")
            except (OSError, ValueError, AttributeError):
                continue
            if recorded and Path(recorded) == Path(model_path):
                shutil.rmtree(manifest_file.parent, ignore_errors=True)
                gone += 1
        return gone

    def _check(self, folder: Path) -> dict[str, Any]:
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorruptEntry(f"{MANIFEST}: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
            raise CorruptEntry(f"{MANIFEST} is not a version-{FORMAT_VERSION} manifest")
        for item in manifest.get("files", []):
            file = folder / str(item.get("name", ""))
            if not file.is_file() or file.stat().st_size != item.get("size"):
                raise CorruptEntry(f"{file.name} is missing or has the wrong size")
        return manifest
