"""What the S3 adapter does beyond the shared ObjectStore contract: presigned URLs, multipart uploads, a
private bucket, key prefixes, bucket creation, settings, and the gallery API serving files from a bucket.

All against moto's S3 server over real HTTP (tests/contract/conftest.py), never a mocked client.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from studiolo.app import create_app
from studiolo.services import build_services
from studiolo.settings import Settings
from studiolo.storage.base import ObjectStore
from studiolo.storage.factory import build_object_store
from studiolo.storage.s3 import MAX_PRESIGN_SECONDS, S3ObjectStore, _content_disposition
from tests.helpers import auth_headers, drain
from tests.s3_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoS3Server

KEY = "images/ab/abcdef0123.png"
MiB = 2**20


def _query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def _anonymous_get(moto_s3: MotoS3Server, bucket: str, object_key: str) -> httpx.Response:
    # moto picks the service from the Host header or the signature; an unsigned request needs S3's host name.
    return httpx.get(f"{moto_s3.endpoint_url}/{bucket}/{object_key}", headers={"Host": "s3.amazonaws.com"})


# --------------------------------------------------------------------------- presigned URLs


def test_presigned_url_is_a_sigv4_url_with_the_requested_expiry(s3_store: S3ObjectStore) -> None:
    s3_store.put(KEY, b"pixels", "image/png")
    url = s3_store.presigned_url(KEY, 1)
    query = _query(url)
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == "1"
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 60
    assert "response-content-disposition" not in query
    assert httpx.get(url).content == b"pixels"


def test_presigned_url_names_the_download(s3_store: S3ObjectStore) -> None:
    s3_store.put(KEY, b"pixels", "image/png")
    url = s3_store.presigned_url(KEY, 60, filename="studiolo-1-original.png")
    assert _query(url)["response-content-disposition"] == 'attachment; filename="studiolo-1-original.png"'
    assert httpx.get(url).content == b"pixels"


def test_content_disposition_survives_any_file_name() -> None:
    assert _content_disposition("a.png") == 'attachment; filename="a.png"'
    assert _content_disposition('ñ "x".png') == (
        "attachment; filename=\"_ _x_.png\"; filename*=UTF-8''%C3%B1%20%22x%22.png"
    )


@pytest.mark.parametrize("seconds", [0, -1, MAX_PRESIGN_SECONDS + 1])
def test_presigned_url_refuses_expiries_s3_would_refuse(s3_store: S3ObjectStore, seconds: int) -> None:
    with pytest.raises(ValueError):
        s3_store.presigned_url(KEY, seconds)


# --------------------------------------------------------------------------- uploads


def test_bodies_over_the_threshold_go_up_in_parts(moto_s3: MotoS3Server, s3_bucket: str) -> None:
    store = moto_s3.store(s3_bucket, multipart_threshold=MiB)
    client = moto_s3.client()
    big = bytes(range(256)) * (11 * MiB // 256)
    store.put("videos/clip.mp4", big, "video/mp4")
    store.put("images/small.png", b"x" * (MiB - 1), "image/png")

    head = client.head_object(Bucket=s3_bucket, Key="videos/clip.mp4")
    # A multipart object's ETag ends in "-<parts>": 11 MiB in parts of S3's 5 MiB minimum is 3 parts.
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentType"] == "video/mp4"
    assert store.get("videos/clip.mp4") == big
    small = client.head_object(Bucket=s3_bucket, Key="images/small.png")
    assert "-" not in small["ETag"] and small["ContentType"] == "image/png"
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_failed_multipart_upload_keeps_the_old_object_and_no_parts(moto_s3: MotoS3Server, s3_bucket: str) -> None:
    store = moto_s3.store(s3_bucket, multipart_threshold=MiB)
    store.put(KEY, b"old", "image/png")
    parts: list[int] = []

    def fail_second_part(params: dict[str, Any], **_: Any) -> None:
        parts.append(params["PartNumber"])
        if len(parts) == 2:
            raise ConnectionResetError("connection lost mid-upload")

    store.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_second_part)
    with pytest.raises(ConnectionResetError):
        store.put(KEY, b"n" * (11 * MiB), "image/png")
    assert store.get(KEY) == b"old"
    assert list(store.iter_keys()) == [KEY]
    # boto3's transfer manager aborted the upload, so no stored parts are left to pay for.
    assert moto_s3.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_small_multipart_threshold_is_valid_but_parts_keep_s3s_minimum(moto_s3: MotoS3Server, s3_bucket: str) -> None:
    store = moto_s3.store(s3_bucket, multipart_threshold=1)
    data = b"y" * (6 * MiB)
    store.put(KEY, data, "image/png")
    assert moto_s3.client().head_object(Bucket=s3_bucket, Key=KEY)["ETag"].strip('"').endswith("-2")
    assert store.get(KEY) == data
    with pytest.raises(ValueError):
        moto_s3.store(s3_bucket, multipart_threshold=0)


# --------------------------------------------------------------------------- a private bucket


def test_objects_are_private(moto_s3: MotoS3Server, s3_store: S3ObjectStore) -> None:
    client = moto_s3.client()
    sent: list[tuple[str, dict[str, str]]] = []

    def record(request: Any, **_: Any) -> None:
        sent.append((request.url, {name.lower(): value for name, value in request.headers.items()}))

    s3_store.client.meta.events.register("before-send.s3", record)
    s3_store.put(KEY, b"private pixels", "image/png")
    s3_store.put("images/big.bin", b"z" * (2 * MiB), "application/octet-stream")  # the multipart path

    # The adapter never asks for an ACL on either path (buckets with ACLs disabled, AWS's default, and R2
    # would refuse one anyway): objects get the bucket's private default.
    assert any(url.endswith("?uploads") for url, _ in sent)  # CreateMultipartUpload was among them
    for _, headers in sent:
        assert not [name for name in headers if name == "x-amz-acl" or name.startswith("x-amz-grant")]

    # What the server holds, checked on the PUT object only: moto 5.2 keeps no ACL for objects made by a
    # multipart upload (GetObjectAcl fails, and it treats "no ACL" as public-read); S3 makes them private.
    grants = client.get_object_acl(Bucket=s3_store.bucket, Key=KEY)["Grants"]
    assert [grant["Permission"] for grant in grants] == ["FULL_CONTROL"]
    assert grants[0]["Grantee"]["Type"] == "CanonicalUser"  # the owner, no AllUsers or AuthenticatedUsers
    assert _anonymous_get(moto_s3, s3_store.bucket, KEY).status_code == 403
    # ...and that 403 means something: this server does serve an object someone made public by hand.
    client.put_object_acl(Bucket=s3_store.bucket, Key=KEY, ACL="public-read")
    assert _anonymous_get(moto_s3, s3_store.bucket, KEY).content == b"private pixels"


def test_created_bucket_is_private(moto_s3: MotoS3Server, s3_bucket_name: str) -> None:
    store = moto_s3.store(s3_bucket_name)
    store.create_bucket()
    store.create_bucket()  # already there: nothing to do
    store.check()
    grants = moto_s3.client().get_bucket_acl(Bucket=s3_bucket_name)["Grants"]
    assert [grant["Permission"] for grant in grants] == ["FULL_CONTROL"]


def test_create_bucket_outside_us_east_1(moto_s3: MotoS3Server, s3_bucket_name: str) -> None:
    store = moto_s3.store(s3_bucket_name, region="eu-west-1")
    store.create_bucket()
    assert moto_s3.client().get_bucket_location(Bucket=s3_bucket_name)["LocationConstraint"] == "eu-west-1"


# --------------------------------------------------------------------------- prefixes, readiness


def test_prefix_keeps_objects_apart(moto_s3: MotoS3Server, s3_bucket: str) -> None:
    tenant_a = moto_s3.store(s3_bucket, prefix="/studiolo/a/")
    tenant_b = moto_s3.store(s3_bucket, prefix="studiolo/b")
    assert tenant_a.prefix == "studiolo/a/"
    tenant_a.put(KEY, b"a", "image/png")
    tenant_b.put(KEY, b"b", "image/png")
    moto_s3.client().put_object(Bucket=s3_bucket, Key="studiolo/a/.probe-left", Body=b"")

    assert tenant_a.get(KEY) == b"a" and tenant_b.get(KEY) == b"b"
    assert list(tenant_a.iter_keys()) == [KEY] and list(tenant_a.iter_keys("images/a")) == [KEY]
    listed = sorted(o["Key"] for o in moto_s3.client().list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert listed == ["studiolo/a/.probe-left", f"studiolo/a/{KEY}", f"studiolo/b/{KEY}"]
    tenant_a.delete(KEY)
    assert tenant_b.exists(KEY) and not tenant_a.exists(KEY)
    with pytest.raises(ValueError):
        moto_s3.store(s3_bucket, prefix="../escape")


def test_check_fails_when_the_bucket_is_missing(moto_s3: MotoS3Server, s3_bucket_name: str) -> None:
    from botocore.exceptions import ClientError

    store = moto_s3.store(s3_bucket_name)
    with pytest.raises(ClientError):
        store.check()
    with pytest.raises(ClientError):  # a missing bucket is an error, never "no such object"
        store.get(KEY)


def test_unreachable_endpoint_fails_check() -> None:
    from botocore.exceptions import EndpointConnectionError

    store = S3ObjectStore("some-bucket", endpoint_url="http://127.0.0.1:9", access_key_id="k", secret_access_key="s")
    attempts: list[str] = []
    store.client.meta.events.register("before-send.s3", lambda request, **_: attempts.append(request.url))
    with pytest.raises(EndpointConnectionError):
        store.check()
    assert len(attempts) == 3  # botocore's standard retry mode: the first try and two retries with backoff


def test_check_writes_its_probe_only_every_few_minutes(s3_store: S3ObjectStore) -> None:
    sent: list[str] = []
    s3_store.client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.method))
    s3_store.check()
    s3_store.check()
    assert sent == ["HEAD", "PUT", "DELETE", "HEAD"]
    assert list(s3_store.iter_keys()) == []


def test_client_configuration(s3_store: S3ObjectStore) -> None:
    config = s3_store.client.meta.config
    assert config.retries["mode"] == "standard"
    assert config.signature_version == "s3v4"
    assert config.s3["addressing_style"] == "path"
    assert config.request_checksum_calculation == "when_required"  # a custom endpoint: no CRC headers it may refuse
    aws = S3ObjectStore("some-bucket", access_key_id="k", secret_access_key="s")
    assert aws.client.meta.config.request_checksum_calculation == "when_supported"  # AWS keeps botocore's default


# --------------------------------------------------------------------------- settings and wiring


def test_settings_refuse_an_incomplete_s3_configuration(tmp_path: Any) -> None:
    with pytest.raises(ValidationError, match="S3_BUCKET"):
        Settings(data_dir=tmp_path, storage="s3")
    with pytest.raises(ValidationError, match="SECRET_ACCESS_KEY"):
        Settings(data_dir=tmp_path, storage="s3", s3_bucket="b", s3_access_key_id="only-half")
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, storage="s3", s3_bucket="b", s3_presign_seconds=MAX_PRESIGN_SECONDS + 1)


def _s3_settings(settings_factory: Any, moto_s3: MotoS3Server, bucket: str, **overrides: Any) -> Settings:
    settings: Settings = settings_factory(
        storage="s3",
        s3_bucket=bucket,
        s3_endpoint_url=moto_s3.endpoint_url,
        s3_access_key_id=ACCESS_KEY_ID,
        s3_secret_access_key=SECRET_ACCESS_KEY,
        s3_create_bucket=True,
        **overrides,
    )
    return settings


def test_factory_builds_the_store_the_settings_name(
    settings_factory: Any, moto_s3: MotoS3Server, s3_bucket_name: str
) -> None:
    local = build_object_store(settings_factory())
    assert local.name == "local"
    settings = _s3_settings(settings_factory, moto_s3, s3_bucket_name, s3_prefix="p", s3_multipart_threshold_mb=5)
    store = build_object_store(settings)
    assert isinstance(store, S3ObjectStore) and isinstance(store, ObjectStore)
    assert store.prefix == "p/" and store.bucket == s3_bucket_name
    store.put(KEY, b"x", "image/png")  # the bucket was created
    assert moto_s3.client().head_object(Bucket=s3_bucket_name, Key=f"p/{KEY}")["ContentLength"] == 1


def test_gallery_api_redirects_files_to_the_bucket(
    settings_factory: Any, moto_s3: MotoS3Server, s3_bucket_name: str
) -> None:
    settings = _s3_settings(settings_factory, moto_s3, s3_bucket_name, s3_presign_seconds=600)
    services = build_services(settings, upgrade_db=False)
    try:
        assert services.store.name == "s3"
        with TestClient(create_app(services=services, start_workers=False)) as client:
            client.headers.update(auth_headers(services))
            assert client.get("/ready").json()["checks"]["storage"] == {"ok": True, "backend": "s3"}
            r = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "steps": 2})
            assert r.status_code == 202, r.text
            assert drain(services) == 1
            job = client.get(r.json()["urls"]["get"]).json()
            assert job["status"] == "succeeded", job
            (image_id,) = [output["image_id"] for output in job["outputs"]]

            file_url = f"/api/v1/images/{image_id}/file"
            r = client.get(file_url, follow_redirects=False)
            assert r.status_code == 307
            # Not kept by the browser: a cached redirect would lead a signed-out browser to the picture for as long
            # as the URL lives (issue 13, item 9). Each view asks the API, which checks the caller again.
            assert r.headers["cache-control"] == "private, no-store"
            location = r.headers["location"]
            assert location.startswith(f"{moto_s3.endpoint_url}/{s3_bucket_name}/images/")
            assert _query(location)["X-Amz-Expires"] == "600"
            bucket_response = httpx.get(location)  # the browser's next hop: no Studiolo credentials
            assert bucket_response.status_code == 200
            assert bucket_response.headers["content-type"] == "image/png"
            assert bucket_response.content.startswith(b"\x89PNG\r\n\x1a\n")

            thumb = client.get(file_url, params={"size": "150"}, follow_redirects=False)
            assert httpx.get(thumb.headers["location"]).headers["content-type"] == "image/webp"
            download = client.get(file_url, params={"download": True}, follow_redirects=False)
            disposition = _query(download.headers["location"])["response-content-disposition"]
            assert disposition == f'attachment; filename="studiolo-{image_id}-original.png"'

            stored = set(services.store.iter_keys())
            assert len(stored) == 2  # the PNG and one thumbnail (64x64 is under every size: the four are one file)
            assert not settings.files_dir.exists()  # nothing went to the local disk
            assert client.delete(f"/api/v1/images/{image_id}").status_code == 204  # to the Trash: files stay
            assert set(services.store.iter_keys()) == stored
            assert client.delete(f"/api/v1/images/{image_id}", params={"permanent": True}).status_code == 204
            assert list(services.store.iter_keys()) == []
            assert client.get(file_url, follow_redirects=False).status_code == 404
    finally:
        services.close(timeout=10)
