"""moto's S3 server for the tests: real HTTP and the real S3 protocol, in a thread of the test process.

Tests reach it with explicit throw-away credentials, never boto3's default chain, so a developer's real
AWS credentials or profile can never be picked up. The fixtures live in tests/contract/conftest.py.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import boto3
from botocore.config import Config

from studiolo.storage.s3 import S3ObjectStore

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"


class MotoS3Server:
    """One moto server on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        # Werkzeug logs one line per request at INFO, which would bury test output in noise.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._client: Any = None
        self.endpoint_url = ""

    def start(self) -> None:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> Any:
        """A plain boto3 client, to look at the bucket from outside the adapter.

        Made once: each boto3 session parses the S3 service model again (~50 ms), once per test adds up.
        """
        if self._client is None:
            session = boto3.session.Session(
                aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY, region_name=REGION
            )
            self._client = session.client("s3", endpoint_url=self.endpoint_url, config=Config(signature_version="s3v4"))
        return self._client

    def store(self, bucket: str, **options: Any) -> S3ObjectStore:
        """An adapter on ``bucket``, addressed the way MinIO needs (path style)."""
        options.setdefault("addressing_style", "path")
        options.setdefault("region", REGION)
        return S3ObjectStore(
            bucket,
            endpoint_url=self.endpoint_url,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            **options,
        )


def new_bucket_name() -> str:
    return f"studiolo-test-{uuid.uuid4().hex[:16]}"


def remove_bucket(client: Any, bucket: str) -> None:
    """Delete ``bucket`` with everything in it (objects and unfinished multipart uploads), if it exists."""
    if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        return
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", ()):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", ()):
            client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)
