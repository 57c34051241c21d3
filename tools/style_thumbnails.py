"""Make the style picker's thumbnails: every built-in style drawn by Studiolo's own demo model.

    python tools/style_thumbnails.py            # writes src/studiolo/web/static/styles/<slug>.webp
    python tools/style_thumbnails.py --sheet sheet.png   # and a contact sheet of them, to look at

Each picture is a real job through the product's own path (GenerationService.submit applies the style
template exactly as it does for a user, the worker runs the demo engine with the default steps and guidance),
in a throw-away data directory, with one fixed seed: running it again gives the same pictures.

The demo model knows few words (a 64x64 toy world). Drawn from one subject, the styles whose words it never
learned came out as the same lighthouse (issue 14), so each style has its own subject (SUBJECTS): a scene the model
draws in words it knows that suit the style's look (a sunset for cinematic, a cottage on a green hillside for
Ghibli, a pyramid for 3D render). Where the model's vocabulary has no word for the look itself, the picture is
post-processed here, after generation, and only in these thumbnails (POST_PROCESSED, each step named there):

- photorealistic: sharpened, a little more contrast
- cinematic: teal-and-orange grade, film grain, letterbox bars
- ghibli: pastel (lifted, softened colours), warm
- anime: cel shading (smoothed, posterised, more saturated) with dark outlines
- comic: posterised flat colours, halftone dots, bold ink outlines
- 3d-render: studio lighting (a vignette and a soft highlight)
- oil-painting: brush blobs (a mode filter) with an embossed impasto relief
- fantasy: bloom on the bright parts, purple-and-gold grade

The others (none, pixel art, cyberpunk, watercolor, pencil sketch, minimalist, vaporwave) are the model's own
pictures: its vocabulary has their words. Thumbnails from a real model can replace these files (same names,
128x128 WebP); tests/integration/test_style_thumbnails.py checks no two are near-identical.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.domain.generation.styles import BUILTIN_STYLES
from studiolo.domain.generation.worker import Worker
from studiolo.engines.demo.engine import DEMO_MODEL_ID
from studiolo.services import Services, build_services
from studiolo.settings import Settings

OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "studiolo" / "web" / "static" / "styles"
SUBJECT = "a lighthouse by the sea at dusk"
# Per style, a subject in words the demo model knows that suits the style's look (the style's template is applied
# to it as for any user); styles not listed draw SUBJECT.
SUBJECTS: dict[str, str] = {
    "photorealistic": "snowy mountains under a blue sky at noon",
    "cinematic": "mountains over a calm ocean at sunset",
    "ghibli": "a little cottage on a green hillside with trees in the morning",
    "anime": "a pink house near a lake at twilight",
    "comic": "a red house on a hill at noon",
    "pixel-art": "a red house on a green hill at noon",
    "cyberpunk": "a tall tower at midnight",
    "3d-render": "a golden pyramid on a gray background",
    "oil-painting": "a cabin in a pine forest at sunset",
    "watercolor": "a house by a lake at dawn",
    "pencil-sketch": "a cottage in the snowy woods",
    "fantasy": "a tall tower on the mountains at twilight",
    "minimalist": "a yellow circle on a teal background",
    "vaporwave": "a magenta pyramid at sunset, synthwave",
}
SEED = 7
SIDE = 128
QUALITY = 80


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def _image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array.round().clip(0, 255).astype(np.uint8), "RGB")


def _luma(array: np.ndarray) -> np.ndarray:
    return (array @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None] / 255.0


def _outlines(image: Image.Image, threshold: int, width: int) -> np.ndarray:
    """A mask (H, W, 1) of 1 on the picture's strong edges, ``width`` (odd) pixels wide."""
    edges = ImageOps.grayscale(image).filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > threshold else 0)
    if width > 1:
        edges = edges.filter(ImageFilter.MaxFilter(width))
    return (np.asarray(edges, dtype=np.float32) / 255.0)[..., None]


def photographic(image: Image.Image) -> Image.Image:
    sharp = image.filter(ImageFilter.UnsharpMask(radius=2, percent=140, threshold=2))
    return ImageEnhance.Contrast(sharp).enhance(1.12)


def cinematic(image: Image.Image) -> Image.Image:
    pixels = _array(image)
    tone = _luma(pixels) - 0.5  # shadows to teal, highlights to orange
    pixels = pixels + tone * np.array([70, 15, -70], dtype=np.float32)
    pixels += np.random.default_rng(0).normal(0, 7, pixels.shape[:2])[..., None]  # grain
    bar = image.height // 9  # letterbox bars: a wide frame inside the square
    pixels[:bar], pixels[image.height - bar :] = 0, 0
    return _image(pixels)


def pastel(image: Image.Image) -> Image.Image:
    soft = ImageEnhance.Color(image.filter(ImageFilter.GaussianBlur(0.5))).enhance(0.9)
    pixels = _array(soft) * 0.82 + 255 * 0.18 + np.array([10, 4, -8], dtype=np.float32)
    return _image(pixels)


def cel(image: Image.Image) -> Image.Image:
    smooth = ImageEnhance.Color(image.filter(ImageFilter.ModeFilter(5))).enhance(1.5)
    flat = ImageOps.posterize(smooth, 3)
    lines = _outlines(flat, 60, 1)
    return _image(_array(flat) * (1 - lines) + 30 * lines)


def comic(image: Image.Image) -> Image.Image:
    flat = ImageOps.posterize(ImageEnhance.Color(image).enhance(1.6), 2)
    pixels = _array(flat)
    ys, xs = np.mgrid[0 : image.height, 0 : image.width]
    # Halftone: dots on a 4-pixel grid, larger where the picture is darker.
    cell = np.hypot((xs % 4) - 1.5, (ys % 4) - 1.5)
    dots = (cell < (1 - _luma(pixels)[..., 0]) * 2.6)[..., None]
    pixels = np.where(dots, pixels * 0.55, pixels)
    lines = _outlines(flat, 40, 3)
    return _image(pixels * (1 - lines))


def studio_light(image: Image.Image) -> Image.Image:
    pixels = _array(ImageEnhance.Contrast(image).enhance(1.15))
    ys, xs = np.mgrid[0 : image.height, 0 : image.width].astype(np.float32)
    cx, cy = image.width * 0.4, image.height * 0.35
    distance = np.hypot(xs - cx, ys - cy) / max(image.size)
    light = (1.25 - 0.9 * distance**1.5)[..., None]  # a key light up left, falling off to dark corners
    highlight = np.exp(-((distance / 0.12) ** 2))[..., None] * 60
    return _image(pixels * light + highlight)


def oil(image: Image.Image) -> Image.Image:
    blobs = ImageEnhance.Color(image.filter(ImageFilter.ModeFilter(7))).enhance(1.2)
    relief = _array(ImageOps.grayscale(blobs.filter(ImageFilter.EMBOSS)).convert("RGB")) - 128
    return _image(_array(blobs) + 0.45 * relief)


def magical(image: Image.Image) -> Image.Image:
    pixels = _array(image)
    bright = np.clip(_luma(pixels) - 0.35, 0, None) * pixels * 3.0
    bloom = _array(_image(bright).filter(ImageFilter.GaussianBlur(5)))
    tone = _luma(pixels) - 0.5  # shadows to purple, highlights to gold
    graded = (
        pixels
        + bloom
        + tone * np.array([40, 10, -60], dtype=np.float32)
        + (0.5 - _luma(pixels)) * np.array([25, -15, 45], dtype=np.float32)
    )
    return ImageEnhance.Color(_image(graded)).enhance(1.3)


POST_PROCESSED: dict[str, Callable[[Image.Image], Image.Image]] = {
    "photorealistic": photographic,
    "cinematic": cinematic,
    "ghibli": pastel,
    "anime": cel,
    "comic": comic,
    "3d-render": studio_light,
    "oil-painting": oil,
    "fantasy": magical,
}


def contact_sheet(images: list[tuple[str, Image.Image]], columns: int = 5) -> Image.Image:
    from PIL import ImageDraw

    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * (SIDE + 8) + 8, rows * (SIDE + 24) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (slug, image) in enumerate(images):
        x, y = 8 + (index % columns) * (SIDE + 8), 8 + (index // columns) * (SIDE + 24)
        sheet.paste(image, (x, y))
        draw.text((x, y + SIDE + 4), slug, fill="black")
    return sheet


def _run_job(services: Services, params: GenerationParams) -> Image.Image:
    accepted, _ = services.generation.submit(LOCAL_USER_ID, params)
    worker = Worker("thumbnails", services.queue, services.runner, services.dispatch, services.settings)
    worker.run_once(threading.Event())
    view = services.generation.get(LOCAL_USER_ID, accepted.id)
    if view.status != "succeeded" or not view.outputs:
        raise SystemExit(f"style {params.style}: job {view.status}: {view.error}")
    key, _ = services.gallery.file(LOCAL_USER_ID, view.outputs[0].image_id, "original")
    return Image.open(io.BytesIO(services.gallery.read(key))).convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder for <slug>.webp (default: the package's)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--sheet", type=Path, help="also write a contact sheet of every thumbnail here (PNG)")
    args = parser.parse_args()
    made: list[tuple[str, Image.Image]] = []
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="studiolo-thumbnails-") as data_dir:
        settings = Settings(
            env="development", data_dir=Path(data_dir), inline_workers=0, default_model=DEMO_MODEL_ID, device="cpu"
        )
        services = build_services(settings)
        try:
            for style in BUILTIN_STYLES:
                started = time.monotonic()
                subject = SUBJECTS.get(style.slug, SUBJECT)
                params = GenerationParams(
                    prompt=subject, style=style.slug, size=f"{SIDE}x{SIDE}", seed=args.seed, model=DEMO_MODEL_ID
                )
                image = _run_job(services, params)
                if image.size != (SIDE, SIDE):
                    image = image.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
                post = POST_PROCESSED.get(style.slug)
                if post is not None:
                    image = post(image)
                made.append((style.slug, image))
                path = args.out / f"{style.slug}.webp"
                # method 6: the encoder's best effort; these files are made once and downloaded by every visitor.
                image.save(path, format="WEBP", quality=QUALITY, method=6)
                seconds = time.monotonic() - started
                note = f" + {post.__name__}" if post else ""
                prompt = style.apply(subject, "")[0]
                print(f"{path}  {path.stat().st_size:6d} bytes  {seconds:.1f} s  {prompt!r}{note}")
        finally:
            services.close()
    if args.sheet:
        contact_sheet(made).save(args.sheet)


if __name__ == "__main__":
    main()
