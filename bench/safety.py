"""What the output safety steps add to each generated image (issue 17), and what the invisible watermark survives.

Cost: per image, in the worker, the NSFW check (open_nsfw), C2PA signing, the invisible and the visible watermark,
each as milliseconds (median) and as a share of one demo-model 512x512 image (made here, the "standard" quality's
steps, one thread, as the worker runs it) and of a full-size SD-Turbo CPU image (23 s, docs/DESIGN.md); plus the
offline describer per 1 MP photo (describe tab) and reading the watermark (the check API and CLI). The NSFW, C2PA
and describe steps print "not built yet" where their modules are missing, so the bench runs on any branch.

Robustness: the invisible watermark's bit error rate (mean and worst image) after JPEG q90/80/70, resizing to
75 % and 50 %, a 50 % resize then JPEG q80, and a 10 % crop (5 % off each side), on the demo images at 512x512
and enlarged to 1024x1024; how many still read as found; PSNR of marked vs original; and the confidence unmarked
images read at (false positives).

    python -m bench.safety [--images 8] [--repeat 5]
    python -m bench.safety --images 2 --repeat 1      # the smoke run (tests/e2e/test_bench.py)
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from studiolo.domain.safety import invisible
from studiolo.domain.safety.ports import Claim
from studiolo.domain.safety.visible import VisibleMark, apply_visible
from studiolo.engines.base import GenerationRequest, ModelRef
from studiolo.engines.demo.engine import DEFAULT_GUIDANCE, DEMO_MODEL_ID, QUALITY_STEPS, DemoEngine
from studiolo.settings import Settings

MODEL = ModelRef(id=DEMO_MODEL_ID, engine="demo", source="builtin")
SD_TURBO_CPU_MS = 23_000.0  # docs/DESIGN.md: full-size SD-Turbo architecture, 512x512, 1 step, fp32, 2-core machine
PROMPTS = [
    "a lighthouse by the sea at dusk",
    "a snowy mountain under a bright white sky",
    "a dark forest at night with a full moon",
    "a red fox in a green meadow, portrait",
    "a city street at noon, photo",
    "a desert with sand dunes at sunset",
    "a bowl of fruit on a white table, studio light",
    "a castle on a hill, watercolor",
]
PAYLOAD = invisible.payload_for("", b"bench-install-key")


def generate(count: int) -> tuple[list[Image.Image], list[float]]:
    """``count`` demo-model 512x512 images and the milliseconds each took (after one warm-up job)."""
    engine = DemoEngine()
    steps = QUALITY_STEPS["standard"]

    def one(index: int) -> tuple[Image.Image, float]:
        prompt = PROMPTS[index % len(PROMPTS)]
        request = GenerationRequest(model=MODEL, prompt=prompt, seeds=[index], steps=steps, guidance=DEFAULT_GUIDANCE)
        start = time.perf_counter()
        result = engine.generate(request, lambda *_a, **_k: None, lambda: False)
        return result[0].image, (time.perf_counter() - start) * 1000

    one(0)  # loads the weights
    made = [one(i) for i in range(count)]
    return [image for image, _ in made], [ms for _, ms in made]


def median_ms(images: list[Image.Image], step: Callable[[Image.Image], object], repeat: int) -> float:
    """The median milliseconds of ``step`` over every image, ``repeat`` times each (after one warm-up call)."""
    step(images[0])
    times = []
    for _ in range(repeat):
        for image in images:
            start = time.perf_counter()
            step(image)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def nsfw_step(settings: Settings) -> tuple[Callable[[Image.Image], object], str]:
    from studiolo.domain.safety.nsfw import build_nsfw_classifier  # type: ignore[import-not-found,unused-ignore]

    classifier = build_nsfw_classifier(settings.model_copy(update={"nsfw_check": True}))
    start = time.perf_counter()
    classifier.score(Image.new("RGB", (512, 512)))
    return classifier.score, f"{classifier.name}, first call {(time.perf_counter() - start) * 1000:.0f} ms"


def c2pa_step(settings: Settings) -> tuple[Callable[[Image.Image], object], str]:
    from studiolo.domain.safety.provenance import build_credentials  # type: ignore[import-not-found,unused-ignore]

    credentials = build_credentials(settings.model_copy(update={"c2pa_enabled": True}))
    claim = Claim(title="bench.png", model=DEMO_MODEL_ID, kind="txt2img", generation={"prompt": PROMPTS[0]})
    start = time.perf_counter()
    credentials.sign(png_bytes(Image.new("RGB", (512, 512))), "image/png", claim)
    first = (time.perf_counter() - start) * 1000
    pngs: dict[int, bytes] = {}

    def sign(image: Image.Image) -> object:  # the PNG is encoded by the worker anyway: not counted here
        if id(image) not in pngs:  # not setdefault: its default would encode the PNG on every call, and be timed
            pngs[id(image)] = png_bytes(image)
        return credentials.sign(pngs[id(image)], "image/png", claim)

    return sign, f"ES256, first call (makes the install's certificates) {first:.0f} ms"


def describe_step() -> tuple[Callable[[Image.Image], object], str]:
    from studiolo.domain.understanding.offline import OfflineDescriber  # type: ignore[import-not-found,unused-ignore]
    from studiolo.domain.understanding.ports import Photo  # type: ignore[import-not-found,unused-ignore]

    describer = OfflineDescriber()
    pngs: dict[int, bytes] = {}

    def describe(image: Image.Image) -> object:
        return describer.describe(Photo(image=image, png=pngs.setdefault(id(image), png_bytes(image))), "character", "")

    return describe, "1024x1024 (1 MP)"


def optional(name: str, build: Callable[[], tuple[Callable[[Image.Image], object], str]]) -> Any:
    """The step and its note, or None after printing why it cannot run on this branch."""
    try:
        return build()
    except ImportError as exc:
        print(f"{name:<28} not built yet ({exc.name or exc})")
        return None


def cost(images: list[Image.Image], demo_ms: float, repeat: int, settings: Settings) -> None:
    large = [image.resize((1024, 1024), Image.Resampling.LANCZOS) for image in images]
    marked = [invisible.embed(image, PAYLOAD) for image in images]
    steps: list[tuple[str, Any, list[Image.Image], bool]] = [
        ("nsfw check", optional("nsfw check", lambda: nsfw_step(settings)), images, True),
        ("c2pa sign", optional("c2pa sign", lambda: c2pa_step(settings)), images, True),
        ("invisible watermark embed", (lambda i: invisible.embed(i, PAYLOAD), "512x512"), images, True),
        ("visible watermark", (lambda i: apply_visible(i, VisibleMark()), "text, 512x512"), images, True),
        ("invisible watermark 1024", (lambda i: invisible.embed(i, PAYLOAD), "1024x1024"), large, False),
        ("invisible watermark read", (invisible.read, "512x512, check API/CLI only"), marked, False),
        ("describe offline", optional("describe offline", describe_step), large, False),
    ]
    print(f"{'step':<28} {'ms/image':>9} {'of demo 512':>12} {'of SD-Turbo 23 s':>17}  note")
    total = 0.0
    for name, built, inputs, per_output in steps:
        if built is None:
            continue
        step, note = built
        ms = median_ms(inputs, step, repeat)
        total += ms if per_output else 0.0
        print(f"{name:<28} {ms:9.1f} {100 * ms / demo_ms:11.2f}% {100 * ms / SD_TURBO_CPU_MS:16.3f}%  {note}")
    print(
        f"{'worker total per output':<28} {total:9.1f} {100 * total / demo_ms:11.2f}% "
        f"{100 * total / SD_TURBO_CPU_MS:16.3f}%  the steps marked per output above, all on"
    )


# -- robustness -------------------------------------------------------------------------------------------------


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def scaled(image: Image.Image, factor: float) -> Image.Image:
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.BICUBIC)


def cropped(image: Image.Image, share: float) -> Image.Image:
    dx, dy = round(image.width * share / 2), round(image.height * share / 2)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


ATTACKS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "none": lambda i: i,
    "jpeg q90": lambda i: jpeg(i, 90),
    "jpeg q80": lambda i: jpeg(i, 80),
    "jpeg q70": lambda i: jpeg(i, 70),
    "resize 75 %": lambda i: scaled(i, 0.75),
    "resize 50 %": lambda i: scaled(i, 0.5),
    "resize 50 % + jpeg q80": lambda i: jpeg(scaled(i, 0.5), 80),
    "crop 10 %": lambda i: cropped(i, 0.1),
}


def bit_error_rate(got: bytes, want: bytes) -> float:
    a, b = np.unpackbits(np.frombuffer(got, np.uint8)), np.unpackbits(np.frombuffer(want, np.uint8))
    return float(np.mean(a != b))


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(10 * np.log10(255**2 / max(1e-12, float(np.mean(diff**2)))))


def robustness(images: list[Image.Image]) -> None:
    for size in (512, 1024):
        originals = [image.resize((size, size), Image.Resampling.LANCZOS) for image in images]
        marked = [invisible.embed(image, PAYLOAD) for image in originals]
        print(
            f"\ninvisible watermark, {len(images)} demo images at {size}x{size} (64-bit payload, found from "
            f"confidence {invisible.FOUND_AT}):"
        )
        print(f"{'attack':<24} {'BER mean':>9} {'BER max':>8} {'found':>6} {'confidence min':>15}")
        for attack, apply in ATTACKS.items():
            readings = [invisible.read(apply(image)) for image in marked]
            bers = [bit_error_rate(r.payload, PAYLOAD) for r in readings]
            found = sum(r.found and r.payload == PAYLOAD for r in readings)
            print(
                f"{attack:<24} {100 * statistics.mean(bers):8.2f}% {100 * max(bers):7.2f}% "
                f"{found:>3}/{len(readings):<2} {min(r.confidence for r in readings):15.3f}"
            )
        values = [psnr(a, b) for a, b in zip(originals, marked, strict=True)]
        unmarked = [invisible.read(image).confidence for image in originals]
        print(f"PSNR marked vs original {size}: mean {statistics.mean(values):.1f} dB, min {min(values):.1f} dB")
        false = sum(c >= invisible.FOUND_AT for c in unmarked)
        print(f"unmarked {size}: confidence max {max(unmarked):.3f}, found (false positives) {false}/{len(unmarked)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--images", type=int, default=8, help="demo images to make and measure (default 8)")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per image and step (default 5)")
    args = parser.parse_args()
    images, generate_ms = generate(args.images)
    demo_ms = statistics.median(generate_ms)
    steps = QUALITY_STEPS["standard"]
    print(f"demo model 512x512 image: median {demo_ms:.0f} ms ({steps} steps, one thread, {args.images} images)")
    with tempfile.TemporaryDirectory(prefix="studiolo-bench-safety-") as data_dir:
        settings = Settings(data_dir=Path(data_dir), env="test")
        cost(images, demo_ms, args.repeat, settings)
    robustness(images)


if __name__ == "__main__":
    main()
