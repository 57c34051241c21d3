"""JSON from outside that a parser cannot take (issue 13, item 10) outside the HTTP bodies: PNG text chunks, model
files being imported, the job events channel and an OAuth provider's answers. Each is refused the way that place
refuses any other bad input, never with a RecursionError or ValueError escaping as a crash."""

from __future__ import annotations

import asyncio
import io
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, PngImagePlugin

from studiolo.dispatch.redis_events import RedisEventRelay
from studiolo.domain.accounts import oauth
from studiolo.domain.gallery.imaging import read_png_metadata
from studiolo.domain.generation.events import EventBus
from studiolo.engines.model_files import ModelFileError, inspect_model_path, read_safetensors_header

DEEP = "[" * 100_000
LONG_INTEGER = "1" * 5000  # Python refuses to turn more than 4300 digits into an int (a ValueError)


@pytest.mark.parametrize(
    "text", [DEEP, LONG_INTEGER, '{"a": ' + LONG_INTEGER + "}"], ids=["deep", "long_integer", "long_integer_field"]
)
def test_png_metadata_that_is_not_usable_json_reads_as_absent(text: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("studiolo", text)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG", pnginfo=info)
    assert read_png_metadata(buf.getvalue()) == (None, None)


def _safetensors(path: Path, header: bytes) -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


@pytest.mark.parametrize(
    "header",
    [DEEP.encode(), LONG_INTEGER.encode(), b'{"a": ' + LONG_INTEGER.encode() + b"}"],
    ids=["deep", "long_integer", "long_integer_field"],
)
def test_a_safetensors_header_that_is_not_usable_json_is_a_corrupt_model_file(tmp_path: Path, header: bytes) -> None:
    path = _safetensors(tmp_path / "model.safetensors", header)
    with pytest.raises(ModelFileError) as caught:
        read_safetensors_header(path)
    assert caught.value.code == "model_file_corrupt"
    with pytest.raises(ModelFileError) as caught:
        inspect_model_path(path)
    assert caught.value.code == "model_file_corrupt"


@pytest.mark.parametrize("index", [DEEP, '{"_class_name": ' + LONG_INTEGER + "}"], ids=["deep", "long_integer"])
def test_a_model_index_that_is_not_usable_json_is_a_corrupt_model_file(tmp_path: Path, index: str) -> None:
    (tmp_path / "model_index.json").write_text(index, encoding="utf-8")
    with pytest.raises(ModelFileError) as caught:
        inspect_model_path(tmp_path)
    assert caught.value.code == "model_file_corrupt"


def test_an_event_message_that_is_not_usable_json_is_skipped() -> None:
    bus = EventBus()
    got: list[dict[str, Any]] = []
    bus.subscribe("job-1", got.append)
    relay = RedisEventRelay("redis://127.0.0.1:1/0", bus)  # never connects: only its message handling is used
    try:
        for data in (DEEP.encode(), LONG_INTEGER.encode()):
            relay._receive(data)
        relay._receive(b'{"o": "elsewhere", "j": "job-1", "e": {"type": "started"}}')
        assert got == [{"type": "started"}]
    finally:
        relay.close()


class _Provider:
    """An OAuth client whose provider answers every GET with ``body``."""

    def __init__(self, body: bytes):
        self.body = body

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return httpx.Response(200, content=self.body, request=httpx.Request(method, url))


@pytest.mark.parametrize("body", [DEEP.encode(), LONG_INTEGER.encode()], ids=["deep", "long_integer"])
def test_a_provider_answer_that_is_not_usable_json_is_a_bad_gateway(body: bytes) -> None:
    with pytest.raises(oauth.ProviderUnavailable):
        asyncio.run(oauth._get_json(_Provider(body), "https://provider.example/userinfo"))
