"""Gallery imaging: A1111 parameters text, PNG metadata, thumbnails, content keys, upload checks."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from typing import Any, TypedDict

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from PIL import Image, ImageFile

from studiolo.domain.gallery.imaging import (
    NEGATIVE_PROMPT_LABEL,
    PNG_MAGIC,
    THUMBNAIL_SIZES,
    a1111_parameters,
    content_key,
    encode_png,
    fit_within,
    load_upload,
    make_thumbnails,
    parse_a1111_parameters,
    read_png_metadata,
)
from studiolo.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from studiolo.storage.local import validate_key

MiB = 1024 * 1024

# --------------------------------------------------------------------------- helpers


def _encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks = []
    position = len(PNG_MAGIC)
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunks.append((kind, data[position + 8 : position + 8 + length]))
        position += 12 + length
    return chunks


def _blank_bilevel_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of zeros: tiny on disk, ``width * height`` pixels once decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then packed pixels
    compressor = zlib.compressobj(9)
    rows_per_block = 1000
    idat = b"".join(
        compressor.compress(row * min(rows_per_block, height - start)) for start in range(0, height, rows_per_block)
    )
    idat += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return PNG_MAGIC + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _load(data: bytes, **options: Any) -> Image.Image:
    options.setdefault("max_bytes", 8 * MiB)
    options.setdefault("max_pixels", 16_000_000)
    return load_upload(data, **options)


# --------------------------------------------------------------------------- A1111 parameters


class _Settings(TypedDict):
    steps: int
    sampler: str
    cfg_scale: float
    seed: int
    width: int
    height: int
    model: str


STANDARD: _Settings = {
    "steps": 20,
    "sampler": "Euler a",
    "cfg_scale": 7.0,
    "seed": 123,
    "width": 512,
    "height": 768,
    "model": "sd-turbo",
}


def test_a1111_parameters_exact_text() -> None:
    text = a1111_parameters(
        prompt="a cat, sitting: on a mat\nhigh quality",
        negative_prompt="blurry, lowres",
        **STANDARD,
        extra={"Denoising strength": 0.75, "Lora hashes": "add_detail: 7c6bad76eb54", "Clip skip": 2},
    )
    assert text == (
        "a cat, sitting: on a mat\n"
        "high quality\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x768, Model: sd-turbo, "
        'Denoising strength: 0.75, Lora hashes: "add_detail: 7c6bad76eb54", Clip skip: 2'
    )


def test_a1111_parameters_without_negative_prompt() -> None:
    text = a1111_parameters(prompt="a lighthouse", negative_prompt="", **STANDARD)
    assert text == (
        "a lighthouse\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x768, Model: sd-turbo"
    )
    assert NEGATIVE_PROMPT_LABEL not in text


def test_a1111_parameters_quotes_values_like_a1111() -> None:
    text = a1111_parameters(
        prompt="p",
        negative_prompt="",
        steps=4,
        sampler="DPM++ 2M",
        cfg_scale=1.5,
        seed=-1,
        width=64,
        height=64,
        model='my model, v2: "final"',
    )
    assert text.endswith('CFG scale: 1.5, Seed: -1, Size: 64x64, Model: "my model, v2: \\"final\\""')


@pytest.mark.parametrize("key", ["Steps", "Model", "prompt", "negative_prompt", "bad:key", "x", " lead", "a,b"])
def test_a1111_parameters_refuses_unreadable_or_reserved_keys(key: str) -> None:
    with pytest.raises(ValueError):
        a1111_parameters(prompt="p", negative_prompt="", extra={key: 1}, **STANDARD)


def test_parse_a1111_text_as_a1111_writes_it() -> None:
    text = (
        "masterpiece, 1girl, <lora:add_detail:1>\n"
        "Negative prompt: (worst quality:1.4), lowres\n"
        "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.0, Seed: 2229474337, Size: 512x768, "
        'Model hash: 7f96a1a9ca, Model: anything, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.6.0'
    )
    assert parse_a1111_parameters(text) == {
        "prompt": "masterpiece, 1girl, <lora:add_detail:1>",
        "negative_prompt": "(worst quality:1.4), lowres",
        "Steps": "30",
        "Sampler": "DPM++ 2M Karras",
        "CFG scale": "7.0",
        "Seed": "2229474337",
        "Size": "512x768",
        "Model hash": "7f96a1a9ca",
        "Model": "anything",
        "Lora hashes": "add_detail: 7c6bad76eb54",
        "Version": "v1.6.0",
    }


def test_parse_text_without_settings_is_all_prompt() -> None:
    assert parse_a1111_parameters("just a prompt, with: colons\nand lines") == {
        "prompt": "just a prompt, with: colons\nand lines",
        "negative_prompt": "",
    }
    assert parse_a1111_parameters("") == {"prompt": "", "negative_prompt": ""}


_RESERVED = {*("Steps", "Sampler", "CFG scale", "Seed", "Size", "Model"), "Prompt", "Negative prompt"}
_RESERVED |= {"prompt", "negative_prompt"}
_keys = st.from_regex(r"\w[\w \-/]+", fullmatch=True).filter(lambda key: key not in _RESERVED)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_values = st.one_of(st.text(), st.integers(), _finite)


@given(
    prompt=st.text(),
    negative_prompt=st.text(),
    sampler=st.text(),
    model=st.text(),
    steps=st.integers(1, 1000),
    cfg_scale=_finite,
    seed=st.integers(-1, 2**64),
    width=st.integers(1, 8192),
    height=st.integers(1, 8192),
    extra=st.dictionaries(_keys, _values, max_size=4),
)
def test_a1111_parameters_round_trip(
    prompt: str,
    negative_prompt: str,
    sampler: str,
    model: str,
    steps: int,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    extra: dict[str, str | int | float],
) -> None:
    # The format's two inherent losses (see a1111_parameters): leading whitespace of the prompt, and
    # a prompt line that itself starts with the negative prompt label.
    written_prompt = prompt.lstrip()
    assume(not any(line.startswith(NEGATIVE_PROMPT_LABEL) for line in written_prompt.split("\n")))
    text = a1111_parameters(
        prompt=prompt,
        negative_prompt=negative_prompt,
        steps=steps,
        sampler=sampler,
        cfg_scale=cfg_scale,
        seed=seed,
        width=width,
        height=height,
        model=model,
        extra=extra,
    )
    parsed = parse_a1111_parameters(text)
    assert parsed.pop("prompt") == written_prompt
    assert parsed.pop("negative_prompt") == negative_prompt
    assert int(parsed.pop("Steps")) == steps
    assert parsed.pop("Sampler") == sampler
    assert float(parsed.pop("CFG scale")) == cfg_scale
    assert int(parsed.pop("Seed")) == seed
    assert parsed.pop("Size") == f"{width}x{height}"
    assert parsed.pop("Model") == model
    assert parsed.keys() == extra.keys()
    for key, value in extra.items():
        assert type(value)(parsed[key]) == value


# --------------------------------------------------------------------------- PNG metadata


def test_png_metadata_round_trip() -> None:
    image = _noise(32, 24)
    parameters = "a cat, on: a mat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"
    metadata = {"job": "0f3c", "seeds": [1, 2], "prompt": "a cat", "nested": {"ok": True}}
    data = encode_png(image, parameters=parameters, metadata=metadata)

    assert read_png_metadata(data) == (parameters, metadata)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "PNG"
        # What A1111's "PNG Info" tab and Civitai read.
        assert decoded.info["parameters"] == parameters
        assert np.array_equal(np.asarray(decoded), np.asarray(image))
    chunks = dict(_png_chunks(data))
    assert chunks[b"tEXt"] == b"parameters\0" + parameters.encode("latin-1")
    assert chunks[b"iTXt"].endswith(json.dumps(metadata, separators=(",", ":")).encode())


def test_png_parameters_beyond_latin1_use_itxt() -> None:
    parameters = "猫が座っている, ñandú\nSteps: 4, Sampler: Euler, CFG scale: 1, Seed: 7"
    metadata = {"prompt": "猫"}
    data = encode_png(Image.new("RGB", (8, 8)), parameters=parameters, metadata=metadata)
    assert read_png_metadata(data) == (parameters, metadata)
    kinds = [(kind, payload.split(b"\0", 1)[0]) for kind, payload in _png_chunks(data)]
    assert (b"iTXt", b"parameters") in kinds
    assert (b"iTXt", b"studiolo") in kinds
    assert b"tEXt" not in {kind for kind, _ in kinds}
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.info["parameters"] == parameters


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "CMYK"])
def test_encode_png_keeps_or_converts_modes(mode: str) -> None:
    data = encode_png(Image.new(mode, (4, 4)), parameters="p", metadata={})
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == ("RGB" if mode == "CMYK" else mode)
    assert read_png_metadata(data) == ("p", {})


def test_encode_png_refuses_metadata_that_is_not_json() -> None:
    with pytest.raises(ValueError):
        encode_png(Image.new("RGB", (4, 4)), parameters="p", metadata={"x": float("nan")})
    with pytest.raises(TypeError):
        encode_png(Image.new("RGB", (4, 4)), parameters="p", metadata={"x": object()})


def test_read_png_metadata_of_other_pngs() -> None:
    assert read_png_metadata(_encode(Image.new("RGB", (4, 4)), "PNG")) == (None, None)
    foreign = _png_chunks(_encode(Image.new("RGB", (4, 4)), "PNG"))
    chunk = _png_chunk(b"iTXt", b"studiolo\0\0\0\0\0not json")
    data = PNG_MAGIC + b"".join(_png_chunk(kind, payload) for kind, payload in foreign[:1]) + chunk
    data += b"".join(_png_chunk(kind, payload) for kind, payload in foreign[1:])
    assert read_png_metadata(data) == (None, None)
    with pytest.raises(ValueError):
        read_png_metadata(_encode(Image.new("RGB", (4, 4)), "JPEG"))


# --------------------------------------------------------------------------- content keys


def test_content_key() -> None:
    digest = hashlib.sha256(b"hello").hexdigest()
    assert digest.startswith("2cf24dba")
    assert content_key(b"hello", "png") == f"images/2c/{digest}.png"
    assert content_key(b"hello", "webp", prefix="thumbs/300") == f"thumbs/300/2c/{digest}.webp"
    assert content_key(b"hello", "png") == content_key(b"hello", "png")
    assert content_key(b"hello!", "png") != content_key(b"hello", "png")
    assert validate_key(content_key(b"", "png")) == content_key(b"", "png")


@pytest.mark.parametrize(
    ("ext", "prefix"),
    [
        (".png", "images"),
        ("PNG", "images"),
        ("", "images"),
        ("png/x", "images"),
        ("png", "/images"),
        ("png", "images/"),
        ("png", "../x"),
        ("png", ""),
        ("png", "a//b"),
        ("png", "Images"),
    ],
)
def test_content_key_refuses_bad_parts(ext: str, prefix: str) -> None:
    with pytest.raises(ValueError):
        content_key(b"data", ext, prefix=prefix)


# --------------------------------------------------------------------------- thumbnails


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((512, 512), {150: (150, 150), 300: (300, 300), 800: (512, 512), 1920: (512, 512)}),
        ((1024, 512), {150: (150, 75), 300: (300, 150), 800: (800, 400), 1920: (1024, 512)}),
        ((300, 1200), {150: (38, 150), 300: (75, 300), 800: (200, 800), 1920: (300, 1200)}),
        ((2500, 3), {150: (150, 1), 300: (300, 1), 800: (800, 1), 1920: (1920, 2)}),
    ],
)
def test_thumbnail_sizes(size: tuple[int, int], expected: dict[int, tuple[int, int]]) -> None:
    thumbnails = make_thumbnails(_noise(*size))
    assert tuple(thumbnails) == THUMBNAIL_SIZES
    for box, data in thumbnails.items():
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
        with Image.open(io.BytesIO(data)) as thumbnail:
            assert thumbnail.format == "WEBP"
            assert thumbnail.size == expected[box] == fit_within(*size, box)


def test_thumbnails_are_never_upscaled_and_share_bytes() -> None:
    thumbnails = make_thumbnails(_noise(512, 512))
    assert thumbnails[800] is thumbnails[1920]
    small = make_thumbnails(_noise(100, 60))
    assert len({id(data) for data in small.values()}) == 1
    with Image.open(io.BytesIO(small[150])) as thumbnail:
        assert thumbnail.size == (100, 60)


def test_thumbnails_use_a_real_resampling_filter() -> None:
    # One-pixel black and white stripes: a filter averages them to grey, point sampling keeps stripes.
    stripes = np.zeros((512, 512), dtype=np.uint8)
    stripes[:, ::2] = 255
    with Image.open(io.BytesIO(make_thumbnails(Image.fromarray(stripes))[150])) as thumbnail:
        pixels = np.asarray(thumbnail.convert("L"), dtype=np.float64)
    assert abs(pixels.mean() - 127.5) < 8
    assert pixels.std() < 12


def test_thumbnails_keep_transparency_and_convert_other_modes() -> None:
    rgba = Image.new("RGBA", (400, 200), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 200, 200))
    with Image.open(io.BytesIO(make_thumbnails(rgba)[150])) as thumbnail:
        assert thumbnail.mode == "RGBA"
        opaque, clear = thumbnail.getpixel((10, 10)), thumbnail.getpixel((140, 60))
        assert isinstance(opaque, tuple) and isinstance(clear, tuple)
        assert (opaque[3], clear[3]) == (255, 0)

    palette = Image.new("P", (64, 64), 3)
    palette.info["transparency"] = 3
    for source, mode in ((palette, "RGBA"), (Image.new("L", (64, 64), 90), "RGB"), (Image.new("CMYK", (8, 8)), "RGB")):
        with Image.open(io.BytesIO(make_thumbnails(source)[150])) as thumbnail:
            assert thumbnail.mode == mode


def test_thumbnails_scale_16_bit_grey_instead_of_clipping() -> None:
    grey16 = Image.new("I;16", (64, 64), 32768)
    with Image.open(io.BytesIO(make_thumbnails(grey16)[150])) as thumbnail:
        assert abs(np.asarray(thumbnail.convert("L"), dtype=np.float64).mean() - 128) < 3


# --------------------------------------------------------------------------- uploads: rejections


def test_upload_empty() -> None:
    with pytest.raises(InvalidInput) as caught:
        _load(b"", field="init_image")
    assert caught.value.code == "empty_upload"
    assert caught.value.details == {"field": "init_image"}


def test_upload_too_many_bytes() -> None:
    data = _encode(_noise(64, 64), "PNG")
    with pytest.raises(PayloadTooLarge) as caught:
        _load(data, max_bytes=1000)
    assert caught.value.code == "upload_too_large"
    assert caught.value.status_code == 413
    assert caught.value.details == {"field": "image", "limit": 1000, "actual": len(data)}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', id="svg"),
        pytest.param(b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', id="svg-xml"),
        pytest.param(b"<!DOCTYPE html><html><body>hi</body></html>", id="html"),
        pytest.param(b"just some text saved as picture.png\n", id="text-named-png"),
        pytest.param(b"PNG\r\n\x1a\n but not quite", id="near-png"),
        pytest.param(_encode(Image.new("RGB", (8, 8)), "BMP"), id="bmp"),
        pytest.param(_encode(Image.new("RGB", (8, 8)), "TIFF"), id="tiff"),
        pytest.param(b"RIFF\x10\x00\x00\x00WAVEfmt ", id="riff-wave"),
    ],
)
def test_upload_unsupported_types(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        _load(data)
    assert caught.value.code == "unsupported_media_type"
    assert caught.value.status_code == 415
    assert caught.value.details["field"] == "image"
    assert "image/png" in caught.value.details["allowed"]


def test_upload_decompression_bomb() -> None:
    bomb = _blank_bilevel_png(30_000, 30_000)
    assert len(bomb) < 200_000  # 900 million pixels once decoded
    max_pixels_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(PayloadTooLarge) as caught:
        _load(bomb, max_pixels=10**12)  # Pillow's own guard, left at its default, stops this one
    assert caught.value.code == "image_too_large"
    assert caught.value.details["limit"] == 10**12
    with pytest.raises(PayloadTooLarge) as caught:
        _load(bomb)
    assert caught.value.code == "image_too_large"
    assert max_pixels_before == Image.MAX_IMAGE_PIXELS


def test_upload_header_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(PayloadTooLarge) as caught:
        _load(_blank_bilevel_png(8_000, 8_000), max_pixels=1_000_000)
    assert caught.value.code == "image_too_large"
    assert caught.value.details == {
        "field": "image",
        "limit": 1_000_000,
        "actual": 64_000_000,
        "width": 8_000,
        "height": 8_000,
    }


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_upload_pillow_bomb_warning_raised_as_error() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        _load(_blank_bilevel_png(10_000, 10_000), max_pixels=10**12)
    assert caught.value.code == "image_too_large"


def test_upload_pixel_limit() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        _load(_encode(_noise(64, 40), "JPEG"), max_pixels=2000, field="mask")
    assert caught.value.code == "image_too_large"
    assert caught.value.details == {"field": "mask", "limit": 2000, "actual": 2560, "width": 64, "height": 40}
    assert _load(_encode(_noise(64, 40), "JPEG"), max_pixels=2560).size == (64, 40)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "GIF"])
def test_upload_truncated(image_format: str) -> None:
    data = _encode(_noise(96, 96), image_format)
    with pytest.raises(InvalidInput) as caught:
        _load(data[: len(data) // 2])
    assert caught.value.code == "image_corrupt"
    assert caught.value.details["format"] == image_format
    assert caught.value.details["field"] == "image"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(PNG_MAGIC + b"\x00" * 64, id="png-garbage"),
        pytest.param(b"\xff\xd8\xff\xe0" + b"\x13" * 64, id="jpeg-garbage"),
        pytest.param(b"GIF89a" + b"\x00" * 3, id="gif-stub"),
        pytest.param(b"RIFF\x00\x00\x00\x00WEBPVP8 ", id="webp-stub"),
    ],
)
def test_upload_corrupt(data: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        _load(data)
    assert caught.value.code == "image_corrupt"


def test_upload_png_with_bad_pixel_data() -> None:
    data = bytearray(_encode(_noise(64, 64), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 100 : idat + 400] = bytes(300)
    with pytest.raises(InvalidInput) as caught:
        _load(bytes(data))
    assert caught.value.code == "image_corrupt"


def test_upload_mode_must_be_known() -> None:
    with pytest.raises(ValueError):
        _load(_encode(Image.new("RGB", (4, 4)), "PNG"), mode="CMYK")


# --------------------------------------------------------------------------- uploads: acceptance


def test_upload_jpeg_exif_orientation_applied_and_stripped() -> None:
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned, display rotated 90 degrees clockwise
    exif[0x010F] = "PhoneMaker"
    data = _encode(stored, "JPEG", exif=exif, quality=95)

    image = _load(data)
    assert image.mode == "RGB"
    assert image.size == (20, 40)
    red, blue = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert isinstance(red, tuple) and isinstance(blue, tuple)
    assert red[0] > 200 and red[2] < 60
    assert blue[2] > 200 and blue[0] < 60
    assert image.info == {}
    assert len(image.getexif()) == 0


def test_upload_rgba_png_flattened_onto_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 128), (0, 0, 5, 10))
    image = _load(_encode(rgba, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((8, 5)) == (255, 255, 255)
    left = image.getpixel((2, 5))
    assert isinstance(left, tuple)
    assert left[0] == 255 and 120 < left[1] < 135


def test_upload_rgba_kept_when_asked() -> None:
    rgba = Image.new("RGBA", (10, 10), (10, 20, 30, 0))
    image = _load(_encode(rgba, "PNG"), mode="RGBA")
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0)) == (10, 20, 30, 0)


def test_upload_mask_as_grey() -> None:
    mask = Image.new("RGB", (16, 16), (0, 0, 0))
    mask.paste((255, 255, 255), (8, 0, 16, 16))
    image = _load(_encode(mask, "PNG"), mode="L", field="mask")
    assert image.mode == "L"
    assert (image.getpixel((2, 2)), image.getpixel((12, 2))) == (0, 255)

    # White strokes painted on a transparent canvas: the untouched area must read as "keep" (black).
    strokes = Image.new("RGBA", (16, 16), (255, 255, 255, 0))
    strokes.paste((255, 255, 255, 255), (8, 0, 16, 16))
    image = _load(_encode(strokes, "PNG"), mode="L")
    assert (image.getpixel((2, 2)), image.getpixel((12, 2))) == (0, 255)


def test_upload_webp_and_gif_first_frame() -> None:
    webp = _load(_encode(Image.new("RGB", (20, 10), (0, 200, 0)), "WEBP", lossless=True))
    assert webp.size == (20, 10)
    assert webp.getpixel((5, 5)) == (0, 200, 0)

    frames = [Image.new("RGB", (12, 12), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    gif = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    image = _load(gif)
    assert image.mode == "RGB"
    assert image.getpixel((6, 6)) == (255, 0, 0)


def test_upload_metadata_stripped() -> None:
    data = encode_png(_noise(8, 8), parameters="secret prompt", metadata={"user": "someone"})
    image = _load(data)
    assert image.info == {}
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert b"secret prompt" not in buffer.getvalue()


def test_upload_16_bit_grey_png_scaled() -> None:
    image = _load(_encode(Image.new("I;16", (8, 8), 65535 // 4), "PNG"), mode="L")
    assert image.mode == "L"
    value = image.getpixel((0, 0))
    assert isinstance(value, int) and 60 <= value <= 66


def test_upload_png_accepted() -> None:
    image = _load(_encode(_noise(33, 17), "PNG"))
    assert image.size == (33, 17)
    assert image.mode == "RGB"
