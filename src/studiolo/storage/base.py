"""The ObjectStore port: where image bytes live (local files, S3-compatible buckets).

Records (database rows) and files (this store) are separate; ``gallery.service`` composes them and
cleans up half-failures. Every adapter passes ``tests/contract/test_storage_contract.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable


class ObjectNotFound(KeyError):
    """No object under that key."""


@dataclass(frozen=True)
class StoredObject:
    """A key in a listing, with when its object was last written (timezone-aware UTC)."""

    key: str
    modified_at: datetime


@runtime_checkable
class ObjectStore(Protocol):
    name: str

    def put(self, key: str, data: bytes, content_type: str, *, durable: bool = True) -> None:
        """Store ``data`` atomically: readers see the old object, or the whole new one, never a part.

        ``durable=False`` marks an object the caller can recreate (a thumbnail): adapters may skip
        flushing it to stable storage before returning."""
        ...

    def get(self, key: str) -> bytes:
        """Return the bytes under ``key``; raise ObjectNotFound when there are none."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for ``key`` when the adapter keeps files locally (lets HTTP stream them)."""
        ...

    def presigned_url(self, key: str, expires_seconds: int, filename: str | None = None) -> str | None:
        """A URL where a client may GET ``key`` directly for ``expires_seconds``, or None when the adapter
        has none (the caller then serves the bytes itself). ``filename`` names the saved download."""
        ...

    def check(self) -> None:
        """Raise if the store cannot be written (readiness probe)."""
        ...

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Yield every stored key that starts with ``prefix``, in no particular order.

        ``prefix`` is a plain string prefix, as in an S3 listing ("images/a" matches "images/ab/…").
        Objects written while iterating may or may not appear. Lets maintenance find files that no
        database row refers to.
        """
        ...

    def iter_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        """``iter_keys`` with each object's last write time: a sweep of files that no row refers to spares the
        ones written a moment ago, whose rows may be committing right now."""
        ...
