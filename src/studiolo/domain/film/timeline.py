"""A film's clock (pipeline.py): narration placed per scene, scene slots of whole frames, subtitle cues.

Scene k owns a slot [T_k, T_k+1). Its narration starts LEAD seconds in; the slot ends TAIL seconds after the
narration (the crossfade into the next scene happens in those last seconds) and lasts at least MIN_SLOT. The film
lasts exactly the sum of the slots, which the render's last stage checks with ffprobe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from studiolo.domain.film import subtitles

SAMPLE_RATE = 48000
LEAD = 0.4  # seconds of picture before a scene's narration starts
SENTENCE_PAUSE = 0.25  # between two sentences of one speaker
SPEAKER_PAUSE = 0.45  # between two speakers (podcast mode)
TAIL = 0.7  # after a scene's narration: the crossfade into the next scene happens in here
MIN_SLOT = 2.0


def whole_frames(seconds: float, fps: int) -> int:
    return max(1, round(seconds * fps))


@dataclass
class NarratedScene:
    """A scene's narration: its samples (SAMPLE_RATE, mono) and its cues relative to the narration's start."""

    samples: np.ndarray
    cues: list[subtitles.Cue]

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass
class Timeline:
    """Where each scene sits in the film (seconds) and its subtitle cues on the film's clock."""

    fps: int
    starts: list[float] = field(default_factory=list)
    slots: list[float] = field(default_factory=list)
    cues: list[list[subtitles.Cue]] = field(default_factory=list)  # per scene, on the film's clock

    @property
    def seconds(self) -> float:
        return sum(self.slots)

    def as_dict(self, scene_ids: Sequence[str]) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "fps": self.fps,
            "scenes": [
                {
                    "id": sid,
                    "start": round(start, 3),
                    "seconds": round(slot, 3),
                    "cues": [{"start": round(c.start, 3), "end": round(c.end, 3), "text": c.text} for c in cues],
                }
                for sid, start, slot, cues in zip(scene_ids, self.starts, self.slots, self.cues, strict=True)
            ],
        }


def plan_timeline(narrations: Sequence[NarratedScene], fps: int) -> Timeline:
    """Slots of whole frames: LEAD + narration + TAIL, at least MIN_SLOT."""
    timeline = Timeline(fps=fps)
    t = 0.0
    for narrated in narrations:
        slot = whole_frames(max(MIN_SLOT, LEAD + narrated.seconds + TAIL), fps) / fps
        timeline.starts.append(t)
        timeline.slots.append(slot)
        timeline.cues.append([subtitles.Cue(t + LEAD + c.start, t + LEAD + c.end, c.text) for c in narrated.cues])
        t += slot
    return timeline


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at SAMPLE_RATE (linear interpolation: speech engines give 16-24 kHz)."""
    mono: np.ndarray = np.asarray(samples, dtype=np.float32)
    if rate == SAMPLE_RATE or len(mono) == 0:
        return mono
    n = max(1, round(len(mono) * SAMPLE_RATE / rate))
    x = np.linspace(0, len(mono) - 1, n)
    resampled: np.ndarray = np.interp(x, np.arange(len(mono)), mono).astype(np.float32)
    return resampled
