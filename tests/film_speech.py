"""Narration voices for the film API tests: the real speech catalog (engines/speech.py, espeak-ng) when this build
has it, else a small catalog of the same shape (CONTRACTS.md section 1) whose voices speak a tone.

The double is only for builds where the speech engines have not landed yet; the tests never depend on which one
answers: they ask GET /films/voices for ids and use the default voice for English text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from studiolo.errors import InvalidInput, ServiceUnavailable
from studiolo.services import Services


@dataclass(frozen=True)
class _Voice:
    id: str
    name: str
    language: str
    gender: str | None
    age: str | None
    engine: str
    quality: str


@dataclass
class _Speech:
    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


_VOICES = (
    _Voice("tone:de", "German, female — tone", "de", "female", "adult", "tone", "robotic"),
    _Voice("tone:en-us", "English (US), male — tone", "en-US", "male", "adult", "tone", "robotic"),
    _Voice("tone:ja", "Japanese, female — tone", "ja", "female", "adult", "tone", "robotic"),
)


def _writing_system(text: str) -> str | None:
    for ch in text:
        code = ord(ch)
        if 0x3040 <= code <= 0x30FF or 0x4E00 <= code <= 0x9FFF:
            return "cjk"
        if 0x0400 <= code <= 0x04FF:
            return "cyrillic"
    return "latin" if any(ch.isalpha() for ch in text) else None


class ToneSpeech:
    """SpeechCatalog-shaped: voices, get, default_voice, check_text, synthesize (a 440 Hz tone per word)."""

    def voices(self) -> list[_Voice]:
        return list(_VOICES)

    def get(self, voice_id: str) -> _Voice:
        for voice in _VOICES:
            if voice.id == voice_id:
                return voice
        raise InvalidInput(f"Unknown voice '{voice_id}'.", code="unknown_voice", details={"voice": voice_id})

    def default_voice(self, language: str = "en") -> _Voice:
        if not _VOICES:
            raise ServiceUnavailable("No voices.", code="no_voices")
        return next((v for v in _VOICES if v.language.split("-")[0] == language), _VOICES[1])

    def check_text(self, voice_id: str, text: str) -> None:
        voice = self.get(voice_id)
        script = _writing_system(text)
        can = {"cjk"} if voice.language == "ja" else {"latin"}
        if script is not None and script not in can:
            raise InvalidInput(
                f"The voice {voice.name} cannot speak this script.",
                code="unsupported_language",
                details={"voice": voice_id, "language": voice.language, "script": script},
            )

    def synthesize(self, text: str, voice_id: str, *, speed: float = 1.0) -> _Speech:
        self.get(voice_id)
        rate = 16000
        seconds = max(0.2, 0.3 * len(text.split()) / speed)
        t = np.arange(int(seconds * rate), dtype=np.float32) / rate
        return _Speech((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


def give_voices(services: Services) -> None:
    """The real catalog when this build has the speech engines; the tone catalog otherwise."""
    try:
        import studiolo.engines.speech  # noqa: F401
    except ImportError:
        services.film.speech = ToneSpeech()


def patch_voices(monkeypatch: Any) -> None:
    """give_voices for services the code under test builds itself (the CLI): the real catalog when this build has
    the speech engines, else the tone catalog."""
    try:
        import studiolo.engines.speech  # noqa: F401
    except ImportError:
        monkeypatch.setattr("studiolo.services._speech_catalog", lambda settings: ToneSpeech())
