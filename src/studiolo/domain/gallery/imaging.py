"""Image bytes for the gallery: PNG with generation metadata, WebP thumbnails, content-addressed
keys and validation of uploaded images. Pure functions: no database, no object store.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zlib
from collections.abc import Mapping
from typing import Any, Final, Literal

from PIL import Image, ImageOps, PngImagePlugin

from studiolo.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

__all__ = [
    "ALLOWED_UPLOAD_TYPES",
    "PNG_COMPRESS_LEVEL",
    "THUMBNAIL_SIZES",
    "WEBP_METHOD",
    "WEBP_QUALITY",
    "ParamValue",
    "UploadMode",
    "a1111_parameters",
    "content_key",
    "encode_png",
    "fit_within",
    "load_upload",
    "make_thumbnails",
    "parse_a1111_parameters",
    "read_png_metadata",
    "sniff_image_format",
]

ParamValue = str | int | float

# --------------------------------------------------------------------------- AUTOMATIC1111 text

NEGATIVE_PROMPT_LABEL: Final = "Negative prompt:"
_STANDARD_KEYS: Final = ("Steps", "Sampler", "CFG scale", "Seed", "Size", "Model")
_RESERVED_KEYS: Final = frozenset({*_STANDARD_KEYS, "Prompt", "Negative prompt", "prompt", "negative_prompt"})
# The pattern AUTOMATIC1111 reads its own text with (modules/infotext_utils.py, ``re_param_code``).
# Keys are limited to what it matches, so A1111, Civitai and the tools that copied it read ours.
_PARAM_RE: Final = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_KEY_RE: Final = re.compile(r"\w[\w \-/]+")
# A1111 takes the last line as settings only when it holds at least this many "Key: value" pairs.
_MIN_SETTINGS_PAIRS: Final = 3


# Our sampler ids -> the names AUTOMATIC1111 writes (and Civitai and PNG-info readers expect).
A1111_SAMPLER_NAMES: Final = {
    "euler": "Euler",
    "euler_a": "Euler a",
    "heun": "Heun",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "ddim": "DDIM",
    "lms": "LMS",
    "pndm": "PLMS",
    "unipc": "UniPC",
}


def a1111_sampler_name(sampler: str) -> str:
    """A1111's display name for one of our sampler ids (unknown ids are passed through)."""
    return A1111_SAMPLER_NAMES.get(sampler, sampler)


def _format_scalar(value: ParamValue) -> str:
    # 7.0 is written "7": the form people type and the one Civitai shows.
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _quote(text: str) -> str:
    """Quote a value the way A1111 does (``infotext_utils.quote``), plus two cases it misses.

    A1111 quotes values holding ',', ':' or a newline. Values that start with '"' or have outer
    whitespace are quoted too: its parser would otherwise unquote or trim them on the way back.
    """
    if any(char in text for char in ",:\n") or text.startswith('"') or text != text.strip():
        return json.dumps(text, ensure_ascii=False)
    return text


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:  # a quoted value parses as one JSON string or not at all: it cannot nest
            return text
        if isinstance(value, str):
            return value
    return text


def a1111_parameters(
    *,
    prompt: str,
    negative_prompt: str,
    steps: int,
    sampler: str,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model: str,
    extra: Mapping[str, ParamValue] | None = None,
) -> str:
    """The generation settings as AUTOMATIC1111 writes them into a PNG's "parameters" text.

    ``prompt``, then ``Negative prompt: …`` when there is one, then one line of ``Key: value`` pairs:
    ``Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x512, Model: name`` followed by
    ``extra`` in order. Like A1111 the whole text is stripped, so leading whitespace of the prompt is
    lost. The format has no escape for a prompt line that starts with "Negative prompt:"; such a
    prompt is written as is and reads back split. Raises ValueError for an ``extra`` key A1111 could
    not read back or one that would shadow a standard key.
    """
    pairs: list[tuple[str, ParamValue]] = [
        ("Steps", steps),
        ("Sampler", sampler),
        ("CFG scale", cfg_scale),
        ("Seed", seed),
        ("Size", f"{width}x{height}"),
        ("Model", model),
    ]
    for key, value in (extra or {}).items():
        if not _KEY_RE.fullmatch(key):
            raise ValueError(f"parameter name {key!r} is not readable in the A1111 format")
        if key in _RESERVED_KEYS:
            raise ValueError(f"parameter name {key!r} is reserved")
        pairs.append((key, value))
    settings = ", ".join(f"{key}: {_quote(_format_scalar(value))}" for key, value in pairs)
    negative = f"\n{NEGATIVE_PROMPT_LABEL} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{settings}".strip()


def parse_a1111_parameters(text: str) -> dict[str, str]:
    """Read A1111 "parameters" text: ``prompt``, ``negative_prompt`` and each ``Key: value`` setting.

    Values stay text as written ("Size" is "512x512", "CFG scale" is "7"); quoted values are unquoted.
    Text without a settings line is all prompt. Unlike A1111 (which strips every line) lines are
    kept as written, so whatever ``a1111_parameters`` wrote reads back unchanged.
    """
    lines = text.strip().split("\n")
    settings: list[tuple[str, str]] = []
    if len(found := _PARAM_RE.findall(lines[-1])) >= _MIN_SETTINGS_PAIRS:
        settings = found
        lines.pop()
    prompt_lines: list[str] = []
    negative_lines: list[str] | None = None
    for line in lines:
        if negative_lines is not None:
            negative_lines.append(line)
        elif line.startswith(NEGATIVE_PROMPT_LABEL):
            negative_lines = [line.removeprefix(NEGATIVE_PROMPT_LABEL).removeprefix(" ")]
        else:
            prompt_lines.append(line)
    result = {"prompt": "\n".join(prompt_lines), "negative_prompt": "\n".join(negative_lines or [])}
    for key, raw in settings:
        result[key] = _unquote(raw)
    return result


# --------------------------------------------------------------------------- PNG with metadata

PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
# Measured on one core with synthetic generation-like images (smooth colour fields, light grain):
# level 4 is ~15% smaller than level 1 and within 2% of levels 6-9 in about half their time
# (512x512: 30-50 ms, 1024x1024: 135-195 ms). Generation itself takes seconds.
PNG_COMPRESS_LEVEL: Final = 4
_PNG_MODES: Final = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})
_METADATA_CHUNK: Final = "studiolo"
_PARAMETERS_CHUNK: Final = "parameters"


def encode_png(image: Image.Image, *, parameters: str, metadata: Mapping[str, Any]) -> bytes:
    """Encode ``image`` as PNG with the A1111 ``parameters`` text and our ``metadata`` as JSON.

    "parameters" is a tEXt chunk (what A1111's PNG Info and Civitai read), or iTXt when the text is
    not latin-1. "studiolo" is an iTXt chunk holding compact UTF-8 JSON. Raises ValueError (NaN) or
    TypeError when ``metadata`` is not plain JSON.
    """
    info = PngImagePlugin.PngInfo()
    info.add_text(_PARAMETERS_CHUNK, parameters)  # Pillow itself falls back to iTXt beyond latin-1
    info.add_itxt(
        _METADATA_CHUNK,
        json.dumps(dict(metadata), ensure_ascii=False, separators=(",", ":"), allow_nan=False),
    )
    if image.mode not in _PNG_MODES:
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def read_png_metadata(data: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """The "parameters" text and the "studiolo" JSON object of a PNG, each None when absent.

    Reads the text chunks that come before the image data, where A1111, ComfyUI and ``encode_png``
    put them; pixels are not decoded. A "studiolo" chunk that is not a JSON object reads as None.
    Raises ValueError when ``data`` is not a PNG.
    """
    if not data.startswith(PNG_MAGIC):
        raise ValueError("not a PNG image")
    with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
        parameters = image.info.get(_PARAMETERS_CHUNK)
        raw_metadata = image.info.get(_METADATA_CHUNK)
    metadata: dict[str, Any] | None = None
    if isinstance(raw_metadata, str):
        try:
            decoded = json.loads(raw_metadata)
        except (ValueError, RecursionError):  # too deeply nested, or a number past the 4300-digit limit, too
            decoded = None
        if isinstance(decoded, dict):
            metadata = decoded
    return (str(parameters) if isinstance(parameters, str) else None), metadata


# --------------------------------------------------------------------------- content keys

_EXT_RE: Final = re.compile(r"[a-z0-9]{1,10}")
_PREFIX_RE: Final = re.compile(r"[a-z0-9_-]+(?:/[a-z0-9_-]+)*")


def content_key(data: bytes, ext: str, prefix: str = "images") -> str:
    """``prefix/ab/<sha256>.ext``: same bytes, same key; two hex characters fan out the directories.

    ``ext`` and ``prefix`` are lower-case (a case-insensitive file system must not merge two keys).
    """
    if not _EXT_RE.fullmatch(ext):
        raise ValueError(f"invalid extension {ext!r}: expected 1-10 lower-case letters or digits, no dot")
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"invalid key prefix {prefix!r}")
    digest = hashlib.sha256(data).hexdigest()
    return f"{prefix}/{digest[:2]}/{digest}.{ext}"


# --------------------------------------------------------------------------- thumbnails

THUMBNAIL_SIZES: Final = (150, 300, 800, 1920)
WEBP_QUALITY: Final = 80
# libwebp "method" trades speed for size. Measured on one core, all four sizes: method 2 takes
# ~22 ms for a 512x512 input and ~100 ms for 1024x1024; method 4 (Pillow's default) takes 38 and
# 175 ms for files only 3-5% smaller.
WEBP_METHOD: Final = 2
# Pillow first shrinks by an integer factor with a box filter, then applies Lanczos for the last
# >= 3x; its documentation calls the result indistinguishable from a plain Lanczos pass.
_REDUCING_GAP: Final = 3.0


def fit_within(width: int, height: int, box: int) -> tuple[int, int]:
    """The size of a ``width`` x ``height`` image fitted into a ``box`` square: aspect kept, never enlarged."""
    if width <= box and height <= box:
        return width, height
    if width >= height:
        return box, max(1, round(height * box / width))
    return max(1, round(width * box / height)), box


def _to_8bit(image: Image.Image) -> Image.Image:
    # Pillow clips 16-bit grey (depth maps, scans) to 255 when converting to 8 bits; scale instead.
    if image.mode == "I" or image.mode.startswith("I;16"):
        return image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    return image


def _encode_webp(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
    return buffer.getvalue()


def make_thumbnails(image: Image.Image) -> dict[int, bytes]:
    """WebP thumbnails keyed by box size (every entry of THUMBNAIL_SIZES).

    Each is ``image`` fitted into a size x size box (see ``fit_within``); sizes that come out the same
    share one encoding, so a 512x512 image's 800 and 1920 entries are the same 512x512 bytes.
    Transparency is kept; other modes become RGB. ``image`` should already be upright.
    """
    source = _to_8bit(image)
    if source.mode not in ("RGB", "RGBA"):
        source = source.convert("RGBA" if source.has_transparency_data else "RGB")
    encoded: dict[tuple[int, int], bytes] = {}
    thumbnails: dict[int, bytes] = {}
    for box in THUMBNAIL_SIZES:
        size = fit_within(source.width, source.height, box)
        if size not in encoded:
            resized = (
                source
                if size == source.size
                else source.resize(size, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)
            )
            encoded[size] = _encode_webp(resized)
        thumbnails[box] = encoded[size]
    return thumbnails


# --------------------------------------------------------------------------- uploads

UploadMode = Literal["RGB", "RGBA", "L"]
ALLOWED_UPLOAD_TYPES: Final = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_UPLOAD_MODES: Final = ("RGB", "RGBA", "L")
# What Pillow's parsers and decoders raise on malformed input. Uploads are hostile, so beyond
# OSError/SyntaxError (truncation, bad chunks) this covers the parser bugs fuzzers find.
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
)


def sniff_image_format(data: bytes) -> str | None:
    """Pillow's name for the format ``data`` starts with ("PNG", "JPEG", "WEBP", "GIF"), else None."""
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _upload_to_mode(image: Image.Image, mode: UploadMode) -> Image.Image:
    image = _to_8bit(image)
    if mode == "RGBA" or not image.has_transparency_data:
        result = image.convert(mode)
    else:
        # Transparent areas become white in a picture (A1111 flattens img2img input onto white too)
        # and black in a mask: nothing was painted there, so nothing is repainted.
        background = (255, 255, 255, 255) if mode == "RGB" else (0, 0, 0, 255)
        canvas = Image.new("RGBA", image.size, background)
        result = Image.alpha_composite(canvas, image.convert("RGBA")).convert(mode)
    # EXIF, ICC, text chunks: nothing from the upload travels further.
    result.info.clear()
    return result


def load_upload(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    field: str = "image",
    mode: UploadMode = "RGB",
) -> Image.Image:
    """Validate and decode an uploaded image (img2img source, inpainting mask).

    The type comes from the magic bytes alone: a declared file name or content type is never
    trusted. PNG, JPEG, WebP and GIF (first frame) are accepted. Width x height from the header is
    checked against ``max_pixels`` before any pixel is decoded; the image is then fully decoded so a
    truncated file is refused, turned upright by its EXIF orientation and returned in ``mode``
    without any metadata.

    Raises InvalidInput ("empty_upload", "image_corrupt"), PayloadTooLarge ("upload_too_large",
    "image_too_large") or UnsupportedMediaType ("unsupported_media_type"); ``details`` names
    ``field`` and the limit that was crossed.
    """
    if mode not in _UPLOAD_MODES:
        raise ValueError(f"mode must be one of {_UPLOAD_MODES}, not {mode!r}")
    if not data:
        raise InvalidInput("The uploaded image is empty.", code="empty_upload", details={"field": field})
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"The uploaded image is larger than {max_bytes} bytes.",
            code="upload_too_large",
            details={"field": field, "limit": max_bytes, "actual": len(data)},
        )
    image_format = sniff_image_format(data)
    if image_format is None:
        raise UnsupportedMediaType(
            "Upload a PNG, JPEG, WebP or GIF image.",
            code="unsupported_media_type",
            details={"field": field, "allowed": sorted(ALLOWED_UPLOAD_TYPES.values())},
        )
    too_large = f"The uploaded image has more than {max_pixels} pixels."
    try:
        # ``formats`` keeps Pillow from trying any other parser on these bytes.
        with Image.open(io.BytesIO(data), formats=[image_format]) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    too_large,
                    code="image_too_large",
                    details={
                        "field": field,
                        "limit": max_pixels,
                        "actual": width * height,
                        "width": width,
                        "height": height,
                    },
                )
            opened.load()
            upright = ImageOps.exif_transpose(opened)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (Image.MAX_IMAGE_PIXELS, process-wide and left alone) fires in open()
        # before our check; the warning arrives as an exception where warnings are errors.
        raise PayloadTooLarge(too_large, code="image_too_large", details={"field": field, "limit": max_pixels}) from exc
    except _DECODE_ERRORS as exc:
        raise InvalidInput(
            "The uploaded image is truncated or corrupt.",
            code="image_corrupt",
            details={"field": field, "format": image_format, "reason": str(exc)},
        ) from exc
    return _upload_to_mode(upright, mode)
