"""The film render (issue 16): a 60-second, 10-scene film at 720p with the demo model and espeak-ng, in this process
on a fresh data directory, the way `studiolo serve` runs it (one worker; the render and its scene images share it).

Prints the wall time of the whole render and the seconds of each stage, the video's real-time ratio (seconds of
film per second spent making the picture: the motion stage, which encodes each scene's clip, plus the encode stage,
which joins them and muxes the sound), then the same film after a one-scene edit (a new prompt for scene 5: one new
image, two clips) as a share of the full render, and the same storyboard at 1080p (images and narration reused).

    python -m bench.film [--scenes 10] [--seconds 60] [--smoke]

Targets (issue 16): the whole render <= 90 s; video >= 1.5x real time at 720p; a one-scene edit <= 25 % of a full
render.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.film import pipeline
from studiolo.domain.film.schemas import STAGES, FilmCreate, FilmPatch, ScenePatch
from studiolo.domain.generation.worker import Worker
from studiolo.engines.demo import DEMO_MODEL_ID, weights_available
from studiolo.services import Services, build_services
from studiolo.settings import Settings

SENTENCES = [
    "The old lighthouse stood alone on the northern cliff.",
    "Every evening the keeper climbed its narrow stairs.",
    "Far below, the fishing boats turned toward the harbour.",
    "A storm gathered slowly over the dark grey sea.",
    "Rain hammered the windows and the lamp flickered once.",
    "The keeper wiped the glass and trimmed the wick again.",
    "Out in the waves, a small boat fought against the wind.",
    "The beam swept across the water and found its sails.",
    "By dawn the storm had passed and the sky was clear.",
    "The boat came home, and the village cheered on the quay.",
    "Gulls circled the harbour in the pale morning light.",
    "The keeper slept at last, while the lamp cooled above him.",
]


def script_for(scenes: int, seconds: int) -> str:
    """``scenes`` paragraphs making a film of about ``seconds``: each scene's slot is its narration plus 1.1 s of
    picture around it (timeline.py), and espeak-ng speaks about 2 words a second at speed 1, pauses included."""
    words_per_scene = max(4, round((seconds / scenes - 1.1) * 2.0))
    paragraphs = []
    k = 0
    for _ in range(scenes):
        words: list[str] = []
        while len(words) < words_per_scene:
            words.extend(SENTENCES[k % len(SENTENCES)].split())
            k += 1
        paragraphs.append(" ".join(words))
    return "\n\n".join(paragraphs)


def run_render(svc: Services, film_id: str) -> tuple[float, dict[str, Any]]:
    worker = Worker("bench-worker", svc.queue, svc.runner, svc.dispatch, svc.settings)
    stop = threading.Event()
    accepted = svc.film.render(LOCAL_USER_ID, film_id)
    started = time.perf_counter()
    while True:
        while worker.run_once(stop):
            pass
        job = svc.generation.get(LOCAL_USER_ID, accepted.job_id)
        if job.status in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.02)
    wall = time.perf_counter() - started
    if job.status != "succeeded":
        raise SystemExit(f"the render {job.status}: {job.error}")
    view = svc.film.get(LOCAL_USER_ID, film_id)
    assert view.render is not None and view.outputs is not None
    return wall, {"stages": view.render.stages, "duration": view.outputs.duration}


def report(label: str, wall: float, result: dict[str, Any]) -> None:
    stages = result["stages"]
    duration = result["duration"]
    video = sum(float(stages[s].seconds or 0.0) for s in ("motion", "encode"))
    print(f"\n{label}: {duration:.1f} s of film in {wall:.1f} s wall")
    for name in STAGES:
        entry = stages[name]
        print(f"  {name:<10} {float(entry.seconds or 0.0):7.2f} s  {entry.state}")
    if video:
        print(f"  video real-time ratio (film seconds / (motion + encode) seconds): {duration / video:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--smoke", action="store_true", help="3 scenes, echo images (tests/e2e/test_bench.py)")
    args = parser.parse_args()
    if args.smoke:
        args.scenes, args.seconds = 3, 20
    pipeline.IMAGE_POLL_SECONDS = 0.05  # the in-thread loop runs the scene images meanwhile
    with tempfile.TemporaryDirectory() as tmp:
        use_demo = weights_available() and not args.smoke
        settings = Settings(
            env="test",
            data_dir=Path(tmp) / "data",
            inline_workers=0,
            enable_echo_engine=not use_demo,
            default_model=DEMO_MODEL_ID if use_demo else "echo",
        )
        svc = build_services(settings)
        try:
            film = svc.film.create(
                LOCAL_USER_ID,
                FilmCreate(
                    title="Bench",
                    script=script_for(args.scenes, args.seconds),
                    target_seconds=max(60, args.seconds),
                    voice="espeak:en-us",
                    music="calm",
                    seed=1,
                ),
            )
            print(f"{len(film.scenes)} scenes, images by {'the demo model' if use_demo else 'the echo engine'}")
            full_wall, full = run_render(svc, film.id)
            report("720p full render", full_wall, full)

            scene = film.scenes[min(4, len(film.scenes) - 1)]
            svc.film.update_scene(LOCAL_USER_ID, film.id, scene.id, ScenePatch(prompt=scene.prompt + ", at sunrise"))
            edit_wall, edit = run_render(svc, film.id)
            report("720p after a one-scene edit", edit_wall, edit)
            print(f"  one-scene edit / full render: {edit_wall / full_wall:.0%} (target <= 25 %)")

            svc.film.update(LOCAL_USER_ID, film.id, FilmPatch(resolution="1080p"))
            hd_wall, hd = run_render(svc, film.id)
            report("1080p (images and narration reused)", hd_wall, hd)
        finally:
            svc.close(timeout=10)


if __name__ == "__main__":
    main()
