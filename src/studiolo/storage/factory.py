"""Builds the ObjectStore adapter that ``settings.storage`` names (the composition root's one storage line)."""

from __future__ import annotations

from studiolo.settings import Settings
from studiolo.storage.base import ObjectStore
from studiolo.storage.local import LocalObjectStore

__all__ = ["build_object_store"]


def build_object_store(settings: Settings) -> ObjectStore:
    """The local store under ``files_dir``, or an S3 bucket; creates the bucket when ``s3_create_bucket``."""
    if settings.storage == "local":
        return LocalObjectStore(settings.files_dir)
    # Imported here so the embedded default never pays for importing boto3 (~0.1 s at every start).
    from studiolo.storage.s3 import S3ObjectStore

    store = S3ObjectStore(
        settings.s3_bucket,
        prefix=settings.s3_prefix,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        addressing_style=settings.s3_addressing_style,
        multipart_threshold=settings.s3_multipart_threshold_mb * 2**20,
    )
    if settings.s3_create_bucket:
        store.create_bucket()
    return store
