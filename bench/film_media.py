"""What the film media steps cost: one clip per resolution (720p and 1080p, 16:9), and the steps after it.

For each ffmpeg binary (the one find_ffmpeg picks, and the other of bundled imageio-ffmpeg / system where both
exist) and each resolution, times in the same run:
- render_clip: a --seconds Ken Burns clip with its crossfade into the next shot (two stills, the demo model's or,
  with --stills textured, noisy ones as a worst case for the encoder; prescaled 2x, zoompan, xfade, libx264
  veryfast CRF 20), and the real-time ratio (clip seconds / wall seconds: above 1 is faster than real time; the
  issue asks >= 1.5 at 720p);
- the same clip with burned-in subtitles;
- concat of two clips (stream copy), mix (narration + music, ducking, loudnorm, AAC), mux (+ SRT track),
  thumbnail, quality_check.

    python -m bench.film_media [--seconds 6] [--resolutions 720p,1080p] [--ffmpeg found|bundled|system|both]
                               [--stills demo|textured]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from studiolo.domain.film.render import (
    Shot,
    concat,
    frame_for,
    mix,
    mux,
    plan_clips,
    quality_check,
    render_clip,
    thumbnail,
)
from studiolo.domain.film.subtitles import split_cue, to_srt
from studiolo.engines.ffmpeg import FFmpeg, find_ffmpeg, write_wav

SENTENCE = "The lighthouse keeper climbed the stairs at dusk and counted every step aloud for the ships at sea."


def _textured(path: Path, seed: int) -> Path:
    """A 1024x1024 picture with smooth shapes under per-pixel noise: a worst case for the encoder under motion."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((8, 8, 3)) * 255
    smooth = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((1024, 1024), Image.Resampling.BICUBIC))
    texture = rng.normal(0, 12, (1024, 1024, 3))
    Image.fromarray(np.clip(smooth + texture, 0, 255).astype(np.uint8)).save(path)
    return path


def _stills(kind: str, folder: Path) -> tuple[str, list[Path]]:
    """Two scene images: the demo model's (what bench/film.py renders) where its weights are installed."""
    if kind == "demo":
        from studiolo.engines.base import GenerationRequest, ModelRef
        from studiolo.engines.demo.engine import DEMO_MODEL_ID, DemoEngine, weights_available

        if weights_available():
            request = GenerationRequest(
                model=ModelRef(id=DEMO_MODEL_ID, engine="demo", source="builtin"),
                prompt="a lighthouse by the sea at dusk",
                seeds=[7, 8],
                width=768,
                height=448,
                steps=8,
            )
            paths = []
            for k, made in enumerate(DemoEngine().generate(request, lambda *_, **__: None, lambda: False)):
                made.image.save(folder / f"demo{k}.png")
                paths.append(folder / f"demo{k}.png")
            return "demo model 768x448", paths
    return "textured 1024x1024", [_textured(folder / f"still{k}.png", k) for k in range(2)]


def _binaries(which: str) -> list[tuple[str, FFmpeg]]:
    import imageio_ffmpeg

    found = find_ffmpeg()
    if found is None:
        raise SystemExit("no ffmpeg runs here")
    bundled_path = imageio_ffmpeg.get_ffmpeg_exe()
    bundled = find_ffmpeg(bundled_path)
    system_path = shutil.which("ffmpeg")
    system = find_ffmpeg(system_path) if system_path else None
    if which == "found":
        return [("found", found)]
    if which == "bundled":
        return [("bundled", bundled)] if bundled else []
    if which == "system":
        return [("system", system)] if system else []
    return [(name, ff) for name, ff in (("bundled", bundled), ("system", system)) if ff is not None]


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(action: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds, and the CPU seconds spent (this process's Pillow prescaling plus ffmpeg's): the machine is
    shared, so the CPU figure is the steadier one, and CPU / wall shows how much of the 2 cores a step used."""
    cpu, started = _cpu(), time.perf_counter()
    action()
    return time.perf_counter() - started, _cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the clip")
    parser.add_argument("--resolutions", default="720p,1080p")
    parser.add_argument("--ffmpeg", choices=("found", "bundled", "system", "both"), default="both")
    parser.add_argument("--stills", choices=("demo", "textured"), default="demo", help="scene images to move")
    options = parser.parse_args()
    seconds = options.seconds

    with tempfile.TemporaryDirectory(prefix="bench-film-media-") as folder:
        work = Path(folder)
        described, stills = _stills(options.stills, work)
        print(f"scene images: {described}")
        cues = tuple(split_cue(0.2, seconds - 0.2, SENTENCE))
        shots = [Shot(still, f"still{k}", seconds, 10 + k, cues) for k, still in enumerate(stills)]
        rate = 24000
        t = np.arange(int(seconds * 2 * rate)) / rate
        voice = np.where((t % 2.0) < 1.2, 0.4 * np.sin(2 * np.pi * 180 * t) * np.sin(2 * np.pi * 3 * t), 0.0)
        write_wav(work / "narration.wav", voice.astype(np.float32), rate)
        t = np.arange(int(seconds * 2 * 48000)) / 48000
        bed = 0.2 * np.sin(2 * np.pi * 110 * t) + 0.1 * np.sin(2 * np.pi * 165 * t)
        write_wav(work / "music.wav", np.stack([bed, bed], axis=1).astype(np.float32), 48000)
        (work / "film.srt").write_text(to_srt(list(cues)), encoding="utf-8")

        for name, ff in _binaries(options.ffmpeg):
            print(f"ffmpeg {name}: {ff.version} ({ff.ffmpeg}); ffprobe: {ff.ffprobe or 'none (ffmpeg -i)'}")
            for resolution in options.resolutions.split(","):
                frame = frame_for("16:9", resolution)
                specs = plan_clips(shots, frame, crossfade=0.5)
                label = f"{name} {resolution} {frame.width}x{frame.height}"
                clip0, clip1 = work / f"{name}-{resolution}-0.mp4", work / f"{name}-{resolution}-1.mp4"
                for what, spec, out in (
                    (f"render_clip {seconds:.1f} s clip", specs[0], clip0),
                    ("render_clip, subtitles burned", replace(specs[0], burn=True), work / "burned.mp4"),
                ):
                    wall, cpu = _timed(partial(render_clip, ff, spec, out))
                    print(f"{label} {what:34s} {wall:6.2f} s  cpu {cpu:6.2f} s  real-time ratio {seconds / wall:5.2f}x")
                render_clip(ff, specs[1], clip1)
                film_seconds = 2 * seconds
                video, audio, movie = work / "video.mp4", work / "mix.m4a", work / "film.mp4"
                steps: list[tuple[str, Callable[[], object]]] = [
                    ("concat 2 clips (stream copy)", partial(concat, ff, [clip0, clip1], video)),
                    (
                        f"mix {film_seconds:.0f} s (ducking, loudnorm, AAC)",
                        partial(mix, ff, work / "narration.wav", work / "music.wav", film_seconds, audio),
                    ),
                    (
                        "mux (+ SRT as mov_text, faststart)",
                        partial(mux, ff, video, audio, movie, subtitles=work / "film.srt"),
                    ),
                    ("thumbnail", partial(thumbnail, ff, movie, work / "thumb.jpg")),
                    ("quality_check", partial(quality_check, ff, movie, seconds=film_seconds, frame=frame)),
                ]
                for step, action in steps:
                    wall, cpu = _timed(action)
                    print(f"{label} {step:34s} {wall:6.2f} s  cpu {cpu:6.2f} s")


if __name__ == "__main__":
    main()
