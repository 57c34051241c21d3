"""ObjectStore adapter for S3-compatible buckets (AWS S3, MinIO, Cloudflare R2, ...), over boto3.

The bucket stays private: objects are written without ACLs and clients download them through
short-lived presigned URLs (``presigned_url``). Every operation follows the local adapter's
semantics, checked by the shared contract suite (tests/contract/test_storage_contract.py).
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from studiolo.storage.base import ObjectNotFound, StoredObject
from studiolo.storage.local import key_problem, validate_key

__all__ = ["MAX_PRESIGN_SECONDS", "MIN_PART_BYTES", "S3ObjectStore"]

# S3 refuses multipart parts below 5 MiB (except the last one), and SigV4 presigned URLs beyond 7 days.
MIN_PART_BYTES = 5 * 2**20
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
# Error codes S3 (and the compatible servers) use for "no such object": NoSuchKey on GET, a bare 404 on HEAD.
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# check() runs on every readiness probe (every few seconds per replica): it always asks HeadBucket, but writes its
# probe object only this often, since each PUT is a billed request.
_WRITE_PROBE_INTERVAL_SECONDS = 300.0


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _content_disposition(filename: str) -> str:
    """An ``attachment`` header value for ``filename`` (RFC 6266), safe for any characters in the name."""
    fallback = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\' else "_" for ch in filename)
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


class S3ObjectStore:
    """Objects in one bucket, under an optional key prefix: ``s3://bucket/prefix/images/ab/abcdef….png``.

    Writes are atomic on the S3 side (a PUT, or a multipart upload that only appears when completed), so
    ``durable`` has nothing to skip. Keys are validated with the local adapter's rules, so data can move
    between the two stores unchanged. A key may be both an object and a prefix of other keys here (S3 has
    no directories); the gallery's content-addressed keys never are.
    """

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str = "",
        region: str = "us-east-1",
        access_key_id: str = "",
        secret_access_key: str = "",
        addressing_style: str = "auto",
        multipart_threshold: int = 16 * 2**20,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 bucket name is required")
        if multipart_threshold < 1:
            raise ValueError("multipart_threshold must be at least one byte")
        self._bucket = bucket
        prefix = prefix.strip("/")
        self._prefix = f"{validate_key(prefix)}/" if prefix else ""
        self._multipart_threshold = multipart_threshold
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            # A small threshold (the tests use 1 MiB) still has to respect S3's minimum part size.
            multipart_chunksize=max(multipart_threshold, MIN_PART_BYTES),
        )
        checksums: dict[str, str] = {}
        if endpoint_url and "request_checksum_calculation" in Config.OPTION_DEFAULTS:
            # botocore >= 1.36 adds CRC checksum headers to every upload, which several S3-compatible servers
            # refuse (boto/boto3#4392); send them only where the operation requires one. AWS keeps the default.
            # (Older botocore sends none and has no such option.)
            checksums = {
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            }
        config = Config(
            region_name=region,
            signature_version="s3v4",  # presigned URLs default to SigV2 otherwise, which new regions and R2 refuse
            s3={"addressing_style": addressing_style},
            retries={"mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            # One connection per thread that may use the store at once: the API's thread pool plus workers.
            max_pool_connections=32,
            **checksums,
        )
        # A session of its own: boto3's default session is shared module state and not thread-safe; the client is.
        session = boto3.session.Session(
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            region_name=region,
        )
        self._client: Any = session.client("s3", endpoint_url=endpoint_url or None, config=config)
        self._probe_lock = threading.Lock()
        self._last_write_probe = float("-inf")

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def client(self) -> Any:
        """The boto3 S3 client (for tests and maintenance scripts)."""
        return self._client

    def _object_key(self, key: str) -> str:
        return self._prefix + validate_key(key)

    def create_bucket(self) -> None:
        """Create the bucket if it does not exist yet (``s3_create_bucket``); it is created private."""
        try:
            self._client.head_bucket(Bucket=self._bucket)
            return
        except ClientError as exc:
            if _error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                raise
        region = self._client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": self._bucket}
        if region and region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**kwargs)
        except ClientError as exc:
            # Another process started at the same moment and created it first.
            if _error_code(exc) != "BucketAlreadyOwnedByYou":
                raise

    def put(self, key: str, data: bytes, content_type: str, *, durable: bool = True) -> None:
        """Store ``data`` with its content type; bodies over the multipart threshold go up in parts.

        Both paths are atomic: a multipart object only appears when the upload completes, and boto3's
        transfer manager aborts the upload (s3:AbortMultipartUpload) when a part fails.
        """
        object_key = self._object_key(key)
        if len(data) < self._multipart_threshold:
            self._client.put_object(Bucket=self._bucket, Key=object_key, Body=data, ContentType=content_type)
        else:
            self._client.upload_fileobj(
                io.BytesIO(data),
                self._bucket,
                object_key,
                ExtraArgs={"ContentType": content_type},
                Config=self._transfer,
            )

    def get(self, key: str) -> bytes:
        object_key = self._object_key(key)
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=object_key)
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                raise ObjectNotFound(key) from None
            raise
        body = response["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored (a HEAD request; its 404 has no body, so a missing bucket also reads False)."""
        object_key = self._object_key(key)
        try:
            self._client.head_object(Bucket=self._bucket, Key=object_key)
        except ClientError as exc:
            # A 403 is not "missing": without s3:ListBucket S3 answers 403 for absent keys, and a
            # misconfigured credential must fail loudly rather than make every image look deleted.
            if _error_code(exc) in _MISSING_CODES:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        """Remove ``key``; S3 answers success for a missing key, as the contract wants."""
        self._client.delete_object(Bucket=self._bucket, Key=self._object_key(key))

    def local_path(self, key: str) -> Path | None:
        """None: objects are not on this machine's filesystem."""
        validate_key(key)
        return None

    def presigned_url(self, key: str, expires_seconds: int, filename: str | None = None) -> str:
        """A URL that lets anyone holding it GET ``key`` for ``expires_seconds``.

        Signing is local (no request is made) and does not check that the object exists. With
        ``filename`` the response asks the browser to save the download under that name.
        """
        object_key = self._object_key(key)
        if not 1 <= expires_seconds <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires_seconds must be between 1 and {MAX_PRESIGN_SECONDS}")
        params: dict[str, str] = {"Bucket": self._bucket, "Key": object_key}
        if filename:
            params["ResponseContentDisposition"] = _content_disposition(filename)
        url: str = self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_seconds)
        return url

    def check(self) -> None:
        """Raise unless the bucket answers and (at most every few minutes) accepts a write and a delete.

        The probe key starts with '.', which no valid key does, so listings never show a probe left
        behind by a failed delete.
        """
        self._client.head_bucket(Bucket=self._bucket)
        with self._probe_lock:
            if time.monotonic() - self._last_write_probe < _WRITE_PROBE_INTERVAL_SECONDS:
                return
            probe_key = f"{self._prefix}.probe-{uuid.uuid4().hex}"
            self._client.put_object(
                Bucket=self._bucket, Key=probe_key, Body=b"studiolo storage probe\n", ContentType="text/plain"
            )
            self._client.delete_object(Bucket=self._bucket, Key=probe_key)
            self._last_write_probe = time.monotonic()

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys starting with ``prefix`` (an S3 listing, one page of 1,000 at a time).

        Objects whose names are not valid keys (probe objects, files uploaded by hand) are skipped.
        """
        for listed in self.iter_objects(prefix):
            yield listed.key

    def iter_objects(self, prefix: str = "") -> Iterator[StoredObject]:
        """``iter_keys`` with each object's LastModified, which the listing carries (no request per object)."""
        if prefix:
            validate_key(prefix.removesuffix("/"))  # same rule as the local adapter
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix + prefix):
            for item in page.get("Contents", ()):
                key = str(item["Key"])[len(self._prefix) :]
                if key_problem(key) is None:
                    yield StoredObject(key, item["LastModified"])
