"""POST /api/v1/controls/preview over HTTP: the ControlNet map of an uploaded picture (engines/preprocess.py), for a
signed-in caller with the generate scope; bad types, sizes and uploads are refused with their codes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from studiolo.domain.adapters.models import InstalledAdapter
from studiolo.services import Services
from tests.helpers import png_bytes
from tests.tiny_controlnet import make_tiny_depth_model

URL = "/api/v1/controls/preview"


def _drawing() -> bytes:
    image = Image.new("RGB", (100, 60), "white")
    ImageDraw.Draw(image).rectangle([10, 10, 40, 50], outline="black", width=3)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _preview(client: TestClient, data: bytes, **form: Any) -> Any:
    return client.post(URL, files={"image": ("drawing.png", data, "image/png")}, data=form)


def test_the_map_comes_back_as_a_png(client: TestClient) -> None:
    r = _preview(client, _drawing(), type="canny", width="64", height="48")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    assert image.size == (64, 48) and image.mode == "RGB"
    gray = np.asarray(image.convert("L"))
    assert gray.max() == 255 and gray[:, 40:].max() == 0  # the square's edges, nothing in the empty right side
    # Without a size: the upload's own, rounded to multiples of 8.
    assert Image.open(io.BytesIO(_preview(client, _drawing(), type="scribble").content)).size == (96, 56)


def test_a_signed_in_caller_is_needed(api: TestClient) -> None:
    r = _preview(api, _drawing(), type="canny")
    assert r.status_code == 401
    assert r.json()["error"]["code"] != ""


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"type": "sketchy"}, "invalid_control_type"),
        ({}, "invalid_control_type"),
        ({"type": "canny", "width": "100"}, "invalid_size"),
        ({"type": "canny", "height": "4096"}, "invalid_size"),
        ({"type": "depth"}, "preprocessor_unavailable"),
        ({"type": "pose"}, "preprocessor_unavailable"),
    ],
)
def test_bad_requests_are_422_with_a_code(client: TestClient, form: dict[str, str], code: str) -> None:
    r = _preview(client, _drawing(), **form)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code


def test_uploads_are_checked(client: TestClient) -> None:
    not_an_image = _preview(client, b"just some text, not a picture", type="canny")
    assert 400 <= not_an_image.status_code < 500 and not_an_image.status_code != 404
    assert not_an_image.json()["error"]["code"] == "unsupported_media_type"
    no_file = client.post(URL, data={"type": "canny"}, files={"other": ("x.txt", b"x", "text/plain")})
    assert no_file.status_code == 422 and no_file.json()["error"]["code"] == "invalid_upload"
    json_body = client.post(URL, json={"type": "canny"})
    assert json_body.status_code == 415


def test_depth_with_an_installed_preprocessor(client: TestClient, services: Services, tmp_path: Path) -> None:
    folder = make_tiny_depth_model(tmp_path / "tiny-dpt")
    with services.db.session() as session:
        session.add(
            InstalledAdapter(
                id="tiny-depth",
                kind="preprocessor",
                family=None,
                source="folder",
                path=str(folder),
                format="transformers",
                size_bytes=0,
                meta={"preprocessor": "depth"},
            )
        )
    services.generation.adapters.invalidate()
    r = _preview(client, png_bytes((80, 64)), type="depth", width="64", height="64")
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)
