"""How a film's stills move (pipeline.py, motion stage): Ken Burns pan and zoom by ffmpeg, or an installed
image-to-video model's frames (Stable Video Diffusion, engines/image_to_video.py) in its place.

A model's motion for a shot covers the shot's whole span: the frames shown inside the previous clip's crossfade,
then its slot. Both clips that show a shot (its own, and the previous one's crossfade) cut their frames from the
same generated video, so the motion runs on across the crossfade as Ken Burns does. The frames are made only when a
clip that shows them is not in the cache, and live in the render's work folder, not the store (a minute of raw
frames is gigabytes; the clips they went into are what is kept).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from PIL import Image

from studiolo.domain.film import render
from studiolo.engines.base import EngineError
from studiolo.engines.ffmpeg import FFmpeg
from studiolo.engines.image_to_video import ImageToVideo, MotionModel

KEN_BURNS = "kenburns"


class Motion:
    """The clips of one render and the motion they show."""

    def __init__(
        self,
        ff: FFmpeg,
        frame: render.Frame,
        work: Path,
        *,
        engine: ImageToVideo | None = None,
        model: MotionModel | None = None,
        should_stop: Callable[[], bool] | None = None,
    ):
        if model is not None and engine is None:
            raise ValueError("a motion model needs an image-to-video engine")
        self.ff, self.frame, self.work = ff, frame, work
        self.engine, self.model, self.should_stop = engine, model, should_stop
        self._totals: dict[Path, int] = {}

    def plan(self, shots: Sequence[render.Shot], *, crossfade: float, burn: bool) -> list[render.ClipSpec]:
        specs = render.plan_clips(shots, self.frame, crossfade=crossfade, burn=burn)
        if self.model is None:
            return specs
        moving = []
        for spec in specs:
            total = spec.offset_frames + spec.frame_count
            made_of = [self.model.id, spec.shot.image_hash, spec.shot.motion_seed, total, self.frame.width,
                       self.frame.height, self.frame.fps]  # fmt: skip
            digest = hashlib.sha256(json.dumps(made_of).encode()).hexdigest()
            video = self.work / f"motion-{digest[:24]}.mp4"
            self._totals[video] = total
            moving.append(replace(spec.shot, video=video, video_hash=digest))
        return render.plan_clips(moving, self.frame, crossfade=crossfade, burn=burn)

    def render_clip(self, spec: render.ClipSpec, out: Path) -> None:
        """Render clip ``spec`` to ``out``, first making the model motion it shows if it is not made yet."""
        for shot in (spec.shot, spec.next_shot if spec.fade_frames else None):
            if shot is not None and shot.video is not None and not shot.video.exists():
                self._make(shot)
        render.render_clip(self.ff, spec, out, should_stop=self.should_stop)

    def _make(self, shot: render.Shot) -> None:
        assert self.engine is not None and self.model is not None and shot.video is not None
        total = self._totals[shot.video]
        with Image.open(shot.image) as opened:
            still = opened.convert("RGB")
        pictures = self.engine.frames(
            self.model,
            still,
            width=self.frame.width,
            height=self.frame.height,
            count=total,
            fps=self.frame.fps,
            seed=shot.motion_seed,
            should_stop=self.should_stop,
        )
        if len(pictures) != total:
            raise EngineError(
                f"The motion model made {len(pictures)} frames, not {total}.", code="motion_failed", retryable=True
            )
        raw = shot.video.with_suffix(".rgb")
        try:
            with raw.open("wb") as sink:
                for picture in pictures:
                    sink.write(picture.convert("RGB").tobytes())
            del pictures
            render.encode_frames(self.ff, raw, self.frame, total, shot.video)
        finally:
            raw.unlink(missing_ok=True)
