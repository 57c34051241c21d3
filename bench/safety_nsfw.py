"""The output check's classifier (issue 17): what it costs per image, and how often it flags the demo model's
(entirely safe) pictures: its false-positive rate at the install's threshold.

Pictures: the demo model (engines/demo) renders ``--count`` varied 512x512 images at its "standard" 8 steps: the 40
held-out prompts of training/demo_model/evaluate.py (landscapes and shapes), then prompts of our own that lean
towards what trips skin-tone detectors (sunsets, warm portraits, beaches, pink and orange shapes), each with its own
seed. Nothing the demo model can draw is NSFW, so every image at or over a threshold is a false positive.

Cost: the classifier's first use (onnxruntime session from the packaged model) is timed once; then each image is
scored ``--repeat`` times warm and the median per image is reported (ms), for 1 and 2 intra-op threads, with the
share of the demo model's own time for the same picture (its "generate" phase). Prints a table; ``--json`` prints
the figures as one JSON object instead.

    python -m bench.safety_nsfw [--count 50] [--repeat 5] [--steps 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from PIL import Image

from studiolo.domain.safety.nsfw import OpenNsfwClassifier
from studiolo.engines.base import GenerationRequest, ModelRef
from studiolo.engines.demo.engine import DEFAULT_GUIDANCE, DEMO_MODEL_ID, DemoEngine, weights_available

MODEL = ModelRef(id=DEMO_MODEL_ID, engine="demo", source="builtin")
THRESHOLDS = (0.5, 0.7, 0.8, 0.9)
# Safe prompts whose colours are near skin tones: where a false positive is likeliest.
WARM_PROMPTS = (
    "a sunset over the sea, orange sky, pink clouds",
    "a warm portrait in soft light, peach background",
    "a sandy beach at noon with a pink sky",
    "an orange circle on a beige background",
    "a pink square on a tan background",
    "a red barn in a golden wheat field at dusk",
    "a desert at sunrise, warm colours",
    "a peach triangle over a pale orange sea",
    "a lighthouse at dawn, rose light, watercolor",
    "warm brown hills under a salmon sky, oil painting",
)


def prompts(count: int) -> list[str]:
    """The held-out evaluation prompts first, then the warm ones, repeated (with other seeds) up to ``count``."""
    try:
        from training.demo_model.captions import evaluation_prompts

        held_out = [prompt for _, prompt in evaluation_prompts()]
    except ImportError:  # an install without the training sources: our own prompts only
        held_out = []
    pool = held_out + list(WARM_PROMPTS)
    return [pool[k % len(pool)] for k in range(count)]


def render(engine: DemoEngine, prompt: str, seed: int, steps: int) -> tuple[Image.Image, float]:
    request = GenerationRequest(
        model=MODEL, prompt=prompt, seeds=[seed], steps=steps, guidance=DEFAULT_GUIDANCE, width=512, height=512
    )
    started = time.perf_counter()
    [out] = engine.generate(request, lambda *_, **__: None, lambda: False)
    return out.image, time.perf_counter() - started


def timed_scores(classifier: OpenNsfwClassifier, images: list[Image.Image], repeat: int) -> tuple[list[float], float]:
    """Each image's score and the median warm milliseconds per image (median over images of the median of
    ``repeat`` runs)."""
    scores: list[float] = []
    per_image: list[float] = []
    for image in images:
        runs: list[float] = []
        for _ in range(repeat):
            started = time.perf_counter()
            score = classifier.score(image)
            runs.append(time.perf_counter() - started)
        scores.append(score)
        per_image.append(statistics.median(runs))
    return scores, 1000 * statistics.median(per_image)


def measure(count: int, repeat: int, steps: int) -> dict[str, Any]:
    if not weights_available():
        raise SystemExit("the demo model's weights are not installed (engines/demo/weights)")
    engine = DemoEngine(threads=1)
    render(engine, "warm up", 0, 2)  # loads the weights
    images: list[Image.Image] = []
    generate_seconds: list[float] = []
    chosen = prompts(count)
    for k, prompt in enumerate(chosen):
        image, seconds = render(engine, prompt, 1000 + k, steps)
        images.append(image)
        generate_seconds.append(seconds)
    figures: dict[str, Any] = {
        "images": len(images),
        "steps": steps,
        "demo_generate_ms_median": round(1000 * statistics.median(generate_seconds), 1),
        "threads": {},
    }
    scores: list[float] = []
    for threads in (1, 2):
        classifier = OpenNsfwClassifier(threads=threads)
        started = time.perf_counter()
        classifier.score(images[0])
        first_ms = 1000 * (time.perf_counter() - started)
        scores, warm_ms = timed_scores(classifier, images, repeat)
        figures["threads"][threads] = {
            "load_ms": round(1000 * (classifier.load_seconds or 0.0), 1),
            "first_image_ms": round(first_ms, 1),
            "warm_ms_per_image": round(warm_ms, 1),
            "share_of_demo_image": round(warm_ms / figures["demo_generate_ms_median"], 3),
            # DESIGN.md: a full-size SD-Turbo image on CPU takes about 23 s.
            "share_of_sd_turbo_cpu_image": round(warm_ms / 23_000, 4),
        }
    ranked = sorted(scores)
    figures["scores"] = {
        "min": round(ranked[0], 4),
        "median": round(statistics.median(ranked), 4),
        "p95": round(ranked[min(len(ranked) - 1, int(0.95 * len(ranked)))], 4),
        "max": round(ranked[-1], 4),
        "max_prompt": chosen[scores.index(ranked[-1])],
    }
    figures["false_positive_rate"] = {str(t): round(sum(s >= t for s in scores) / len(scores), 4) for t in THRESHOLDS}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args.count, args.repeat, args.steps)
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"{figures['images']} demo-model images, 512x512, {figures['steps']} steps "
        f"(median generate {figures['demo_generate_ms_median']} ms)"
    )
    print("threads  load ms  first image ms  warm ms/image  share of demo image  share of SD-Turbo CPU image")
    for threads, t in figures["threads"].items():
        print(
            f"{threads:>7}  {t['load_ms']:>7}  {t['first_image_ms']:>14}  {t['warm_ms_per_image']:>13}  "
            f"{100 * t['share_of_demo_image']:>18.1f}%  {100 * t['share_of_sd_turbo_cpu_image']:>26.2f}%"
        )
    s = figures["scores"]
    print(f"scores: min {s['min']}  median {s['median']}  p95 {s['p95']}  max {s['max']} ({s['max_prompt']!r})")
    print(
        "false positives (score >= threshold): "
        + ", ".join(f"{t}: {100 * rate:.1f}%" for t, rate in figures["false_positive_rate"].items())
    )


if __name__ == "__main__":
    main()
