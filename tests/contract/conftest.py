"""Fixtures for the contract suites: moto's S3 server, started once per session, and a fresh bucket per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from studiolo.storage.s3 import S3ObjectStore
from tests.s3_server import MotoS3Server, new_bucket_name, remove_bucket

# The contract suite's S3 store sends bodies of 1 MiB and more as multipart uploads, so the same tests
# (4 MiB objects in the atomicity test) cover both upload paths of the adapter.
CONTRACT_MULTIPART_THRESHOLD = 2**20


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3Server]:
    server = MotoS3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket_name(moto_s3: MotoS3Server) -> Iterator[str]:
    """A bucket name no test used before; the bucket, if the test made it, is removed afterwards."""
    name = new_bucket_name()
    yield name
    remove_bucket(moto_s3.client(), name)


@pytest.fixture
def s3_bucket(moto_s3: MotoS3Server, s3_bucket_name: str) -> str:
    """A fresh, empty bucket."""
    moto_s3.client().create_bucket(Bucket=s3_bucket_name)
    return s3_bucket_name


@pytest.fixture
def s3_store(moto_s3: MotoS3Server, s3_bucket: str) -> S3ObjectStore:
    return moto_s3.store(s3_bucket, multipart_threshold=CONTRACT_MULTIPART_THRESHOLD)
