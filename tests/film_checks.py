"""Helpers of the film tests (issue 16): make a film through the service, run its render to the end in this thread,
and look at the MP4 the way a viewer would (ffprobe, a frame at a time)."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.film.schemas import FilmCreate
from studiolo.domain.generation.schemas import JobView
from studiolo.engines.ffmpeg import FFmpeg, find_ffmpeg
from studiolo.services import Services
from tests.helpers import drain

THREE_SCENES = (
    "The lighthouse keeper climbed the stairs at dusk. The lamp was cold.\n\n"
    "A storm rolled in from the sea, and the waves broke over the rocks.\n\n"
    "By morning the sky was clear. The ships came home safely."
)


def make_film(services: Services, owner: str = LOCAL_USER_ID, **fields: Any) -> str:
    values: dict[str, Any] = {
        "title": "The lighthouse",
        "script": THREE_SCENES,
        "target_seconds": 60,
        "music": "calm",
        "voice": "espeak:en-us",
        "seed": 11,
    }
    values.update(fields)
    view = services.film.create(owner, FilmCreate(**values))
    return view.id


def run_until_done(services: Services, job_id: str, owner: str = LOCAL_USER_ID, timeout: float = 240.0) -> JobView:
    """Run every ready job (the render and the scene images it queues) until the render ends."""
    deadline = time.monotonic() + timeout
    while True:
        drain(services)
        job = services.generation.get(owner, job_id)
        if job.status in ("succeeded", "failed", "canceled"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"the render did not end in {timeout:.0f} s: {job.status}")
        time.sleep(0.05)


def ffmpeg() -> FFmpeg:
    found = find_ffmpeg()
    assert found is not None, "the tests need ffmpeg (imageio-ffmpeg is a dependency)"
    return found


def frame_at(path: Path, seconds: float) -> PILImage.Image:
    """The video's frame at ``seconds``, decoded by ffmpeg."""
    out = subprocess.run(
        [
            ffmpeg().ffmpeg,
            "-v",
            "error",
            "-ss",
            f"{seconds:.3f}",
            "-i",
            str(path),
            "-frames:v",
            "1",
            "-f",
            "image2",
            "-c:v",
            "png",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return PILImage.open(io.BytesIO(out)).convert("RGB")


def signature(image: PILImage.Image, size: tuple[int, int] = (16, 9)) -> np.ndarray:
    """A small grey thumbnail: what two pictures share when one is a cropped, slowly zoomed copy of the other."""
    return np.asarray(image.convert("L").resize(size, PILImage.Resampling.BILINEAR), dtype=np.float32)


def distance(a: PILImage.Image, b: PILImage.Image, size: tuple[int, int] = (16, 9)) -> float:
    return float(np.abs(signature(a, size) - signature(b, size)).mean())


def cover(image: PILImage.Image, width: int, height: int) -> PILImage.Image:
    """``image`` cropped to the frame's aspect (as the film shows it, before the motion)."""
    scale = max(width / image.width, height / image.height)
    w, h = round(image.width * scale), round(image.height * scale)
    resized = image.resize((w, h), PILImage.Resampling.BILINEAR)
    left, top = (w - width) // 2, (h - height) // 2
    return resized.crop((left, top, left + width, top + height))
