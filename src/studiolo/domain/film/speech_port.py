"""The speech engines as the film service sees them (engines/speech.py, CONTRACTS.md section 1), and what it does
with their output: voice samples as WAV files, and the default voice's language guessed from a script."""

from __future__ import annotations

import io
import wave
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

# A sentence per language that voice samples speak when no text is given (GET /films/voices/{id}/sample).
_SAMPLES = {
    "en": "Hello! This is how I sound when I narrate your film.",
    "de": "Hallo! So klinge ich, wenn ich deinen Film spreche.",
    "fr": "Bonjour ! Voici ma voix pour raconter votre film.",
    "es": "¡Hola! Así suena mi voz cuando narro tu película.",
    "it": "Ciao! Ecco la mia voce quando racconto il tuo film.",
    "pt": "Olá! É assim que eu soo ao narrar o seu filme.",
    "nl": "Hallo! Zo klink ik als ik je film vertel.",
    "ru": "Привет! Так звучит мой голос в вашем фильме.",
    "ja": "こんにちは。これがあなたの映画を語る私の声です。",
    "zh": "你好。这是我为你的电影配音的声音。",
}
_SAMPLE_PREFIX = "films/voice-samples"


class VoiceInfo(Protocol):
    """engines.speech.Voice, as far as this service reads it."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def gender(self) -> str | None: ...
    @property
    def age(self) -> str | None: ...
    @property
    def engine(self) -> str: ...
    @property
    def quality(self) -> str: ...


class SpeechOut(Protocol):
    """engines.speech.Speech."""

    samples: Any
    sample_rate: int


class SpeechPort(Protocol):
    """engines.speech.SpeechCatalog (CONTRACTS.md section 1), the methods this service uses."""

    def voices(self) -> Sequence[VoiceInfo]: ...
    def get(self, voice_id: str) -> VoiceInfo: ...
    def default_voice(self, language: str = "en") -> VoiceInfo: ...
    def check_text(self, voice_id: str, text: str) -> None: ...
    def synthesize(self, text: str, voice_id: str, *, speed: float = 1.0) -> SpeechOut: ...


def wav_bytes(samples: Any, sample_rate: int) -> bytes:
    """Float samples in [-1, 1] (mono, or (n, 2) stereo) as a 16-bit PCM WAV file."""
    data = np.asarray(samples, dtype=np.float32)
    channels = 1 if data.ndim == 1 else int(data.shape[1])
    pcm = (np.clip(data, -1.0, 1.0) * 32767.0).round().astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return out.getvalue()


def guess_language(text: str) -> str:
    """The ISO 639-1 code the script's writing system suggests, for the default voice: ja (kana), zh (Han), ko,
    ru (Cyrillic), el, ar, he, hi (Devanagari), th; anything else en."""
    counts: dict[str, int] = {}
    for ch in text:
        code = ord(ch)
        lang = (
            "ja"
            if 0x3040 <= code <= 0x30FF
            else "zh"
            if 0x4E00 <= code <= 0x9FFF
            else "ko"
            if 0xAC00 <= code <= 0xD7AF
            else "ru"
            if 0x0400 <= code <= 0x04FF
            else "el"
            if 0x0370 <= code <= 0x03FF
            else "ar"
            if 0x0600 <= code <= 0x06FF
            else "he"
            if 0x0590 <= code <= 0x05FF
            else "hi"
            if 0x0900 <= code <= 0x097F
            else "th"
            if 0x0E00 <= code <= 0x0E7F
            else "en"
            if ch.isalpha()
            else ""
        )
        if lang:
            counts[lang] = counts.get(lang, 0) + 1
    if counts.get("ja"):
        return "ja"  # Japanese mixes kana with Han characters
    return max(counts, key=lambda k: counts[k]) if counts else "en"


def sample_text(language: str) -> str:
    """The sentence a voice sample speaks when none is given, in the voice's language (English otherwise)."""
    return _SAMPLES.get(language.split("-")[0].lower(), _SAMPLES["en"])
