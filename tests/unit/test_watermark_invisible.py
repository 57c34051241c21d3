"""The invisible watermark (safety/invisible.py): the payload survives what sharing an image does to it (JPEG q80, a
50 % resize, both), stays invisible (PSNR), reads as noise on unmarked images, and leaves small images alone."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studiolo.domain.safety import invisible
from studiolo.domain.safety.outputs import OutputGuard, OwnerTerms

PAYLOAD = invisible.payload_for("", b"install-key")


def photo(width: int = 512, height: int = 512, seed: int = 0) -> Image.Image:
    """A photo-like picture: a sky gradient, a horizon, shapes, a white highlight and sensor noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    sky = np.array([90, 150, 230]) * (1 - y) + np.array([235, 220, 200]) * y + 20 * x
    pixels = np.clip(sky + rng.normal(0, 4, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height * 2 // 3, width, height), fill=(40, 110, 50))
    draw.ellipse((width // 5, height // 5, width // 2, height // 2), fill=(250, 250, 245))
    draw.polygon(
        [(width * 0.6, height * 0.7), (width * 0.8, height * 0.3), (width * 0.95, height * 0.7)], fill=(90, 60, 50)
    )
    return image


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def half(image: Image.Image) -> Image.Image:
    return image.resize((image.width // 2, image.height // 2), Image.Resampling.BICUBIC)


def bit_errors(got: bytes, want: bytes) -> int:
    return int(
        np.count_nonzero(np.unpackbits(np.frombuffer(got, np.uint8)) != np.unpackbits(np.frombuffer(want, np.uint8)))
    )


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(10 * np.log10(255**2 / np.mean(diff**2)))


@pytest.fixture(scope="module")
def marked() -> tuple[Image.Image, Image.Image]:
    original = photo()
    return original, invisible.embed(original, PAYLOAD)


def test_round_trip_is_exact_and_invisible(marked: tuple[Image.Image, Image.Image]) -> None:
    original, image = marked
    reading = invisible.read(image)
    assert reading.payload == PAYLOAD and reading.found
    assert reading.confidence > 0.95
    assert image.size == original.size and image.mode == "RGB"
    assert psnr(original, image) >= 40


@pytest.mark.parametrize(
    "attack",
    [lambda i: jpeg(i, 80), lambda i: jpeg(i, 70), half, lambda i: jpeg(half(i), 80)],
    ids=["jpeg80", "jpeg70", "resize50", "resize50+jpeg80"],
)
def test_payload_survives_jpeg_and_resizing(marked: tuple[Image.Image, Image.Image], attack) -> None:  # type: ignore[no-untyped-def]
    reading = invisible.read(attack(marked[1]))
    assert bit_errors(reading.payload, PAYLOAD) == 0
    assert reading.found


def test_large_and_non_square_images_survive() -> None:
    for size in ((1024, 1024), (768, 512)):
        image = invisible.embed(photo(*size, seed=1), PAYLOAD)
        assert invisible.read(jpeg(half(image), 80)).payload == PAYLOAD
        assert invisible.read(image.resize((size[0] * 3 // 4, size[1] * 3 // 4))).payload == PAYLOAD


def test_unmarked_images_read_as_noise() -> None:
    # A flat image's coefficients are all zero: without the dither they would all read as 0 bits, unanimously.
    for image in (photo(seed=2), Image.new("RGB", (512, 512), (128, 128, 128)), Image.new("RGB", (512, 512), "white")):
        reading = invisible.read(image)
        assert not reading.found
        assert 0.5 <= reading.confidence < 0.65


def test_saturated_images_still_carry_the_payload() -> None:
    # White and black clip half of every change; what R and G lost is made up by the channels that can move (on
    # whole planes for a white image, on the clipped pixels alone for a white band over a fifth of the picture).
    band = photo()
    band.paste((255, 255, 255), (0, 0, 512, 100))
    for image in (Image.new("RGB", (512, 512), "white"), Image.new("RGB", (512, 512), "black"), band):
        marked = invisible.embed(image, PAYLOAD)
        assert invisible.read(jpeg(marked, 80)).payload == PAYLOAD
        assert invisible.read(marked).confidence > 0.95


def test_another_payload_reads_as_itself(marked: tuple[Image.Image, Image.Image]) -> None:
    other = invisible.payload_for("", b"another-install")
    reading = invisible.read(invisible.embed(marked[0], other))
    assert reading.payload == other != PAYLOAD


def test_payload_for() -> None:
    assert invisible.payload_for("acme", b"k") == b"acme\0\0\0\0"
    assert invisible.payload_for("acme-studio-x", b"k") == b"acme-stu"
    derived = invisible.payload_for("", b"key-one")
    assert len(derived) == invisible.PAYLOAD_BYTES and derived.startswith(b"SL")
    assert derived == invisible.payload_for("", b"key-one") != invisible.payload_for("", b"key-two")


def test_modes_and_sizes() -> None:
    assert invisible.fits(Image.new("RGB", (256, 256))) and not invisible.fits(Image.new("RGB", (255, 256)))
    for mode in ("RGBA", "L", "P"):
        image = invisible.embed(photo().convert(mode), PAYLOAD)
        assert image.mode == "RGB" and invisible.read(image).payload == PAYLOAD
    with pytest.raises(ValueError):
        invisible.read(photo(), nbytes=1000)
    assert invisible.extract(invisible.embed(photo(), PAYLOAD))[0] == PAYLOAD


def test_output_guard_leaves_small_images_untouched() -> None:
    guard = OutputGuard(
        classifier=None,
        threshold=0.8,
        credentials=None,
        mark=None,
        payload=PAYLOAD,
        terms=lambda _owner: OwnerTerms(watermark=False, nsfw_policy="allow"),
    )
    small = photo(200, 200)
    guarded = guard.inspect("owner", small)
    assert guarded is not None
    assert np.array_equal(np.asarray(guarded.image), np.asarray(small))
    assert "invisible_watermark" not in guarded.safety
    big = guard.inspect("owner", photo())
    assert big is not None and big.safety["invisible_watermark"] is True
    assert invisible.read(big.image).payload == PAYLOAD
