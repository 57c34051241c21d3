"""The SpeechEngine port: text in, a voice's audio out (narration for films).

Adapters (one module each): ``speech_espeak`` (the Debian ``espeak-ng`` binary: always there, robotic),
``speech_piper`` (piper-tts neural voices, in-process when the package is installed), ``speech_openai`` (an
OpenAI-compatible ``/v1/audio/speech`` server). ``SpeechCatalog`` puts the voices of every available engine in one
list and routes each call to the voice's engine. ``tests/contract/test_speech_contract.py`` holds every adapter to
the same checks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from studiolo.engines.base import EngineError
from studiolo.engines.scripts import unreadable_script
from studiolo.errors import InvalidInput, ServiceUnavailable

if TYPE_CHECKING:
    from studiolo.settings import Settings

log = logging.getLogger(__name__)

MIN_SPEED = 0.5
MAX_SPEED = 2.0
SILENT_RATE = 22050  # the rate of the empty Speech given for text with nothing to say

# default_voice: the region a bare language means when it has several ("en" -> American English).
_DEFAULT_REGION = {"en": "en-us", "fr": "fr-fr", "pt": "pt-br", "es": "es", "de": "de", "zh": "zh"}
_QUALITY_RANK = {"neural": 0, "robotic": 1, "hosted": 2}


@dataclass(frozen=True)
class Voice:
    id: str  # "espeak:en-us", "espeak:en-us+f3", "piper:en_US-joe-medium", "openai:alloy"
    name: str  # shown to users: "English (America), male — espeak"
    language: str  # "en-US", "de", "fr-FR" ... (BCP-47-ish; the first part is the ISO 639 code); "mul": any
    gender: str | None  # "male" | "female" | None
    age: str | None  # "adult" | "child" | "senior" | None
    engine: str  # "espeak" | "piper" | "openai"
    quality: str  # "robotic" | "neural" | "hosted"


@dataclass
class Speech:
    samples: np.ndarray  # float32, mono, in [-1, 1]
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


@runtime_checkable
class SpeechEngine(Protocol):
    name: str

    def available(self) -> bool:
        """True when this engine can speak here (its binary, package or server is configured)."""
        ...

    def voices(self) -> list[Voice]:
        """Every voice it offers (cheap after the first call)."""
        ...

    def synthesize(self, text: str, voice_id: str, *, speed: float = 1.0) -> Speech:
        """``text`` spoken by ``voice_id`` at ``speed`` (1.0 normal, 2.0 twice as fast).

        Raises EngineError(code="speech_failed") when the engine fails (retryable unless retrying cannot help)."""
        ...


def bcp47(code: str) -> str:
    """An engine's language code in BCP-47 spelling: "en-us" -> "en-US", "en_US" -> "en-US", "fa-latn" -> "fa-Latn",
    "cmn" -> "zh", "yue" -> "zh-yue" (the first part stays an ISO 639 code, two letters where there is one)."""
    parts = code.replace("_", "-").split("-")
    first = parts[0].lower()
    first = {"piqd": "tlh"}.get(first, first)  # espeak names Klingon by its script (pIqaD)
    rest: list[str] = []
    if first in ("cmn", "yue", "hak"):
        rest.append("" if first == "cmn" else first)
        first = "zh"
    private = False
    for part in parts[1:]:
        low = part.lower()
        if private or low == "x":
            private = True
            rest.append(low)
        elif len(part) == 2 and part.isalpha():
            rest.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            rest.append(part.title())
        else:
            rest.append(low)
    return "-".join([first, *[r for r in rest if r]])


def as_speech(samples: np.ndarray, sample_rate: int) -> Speech:
    """Any float array (mono or (frames, channels)) -> a mono float32 Speech clipped to [-1, 1]."""
    a = np.asarray(samples, dtype=np.float32)
    if a.ndim == 2:
        a = a.mean(axis=1, dtype=np.float32) if a.shape[1] > 1 else a[:, 0]
    return Speech(np.clip(a, -1.0, 1.0).astype(np.float32, copy=False), int(sample_rate))


def unknown_voice(voice_id: str) -> InvalidInput:
    return InvalidInput(f"There is no voice {voice_id!r}.", code="unknown_voice", details={"voice": voice_id})


class SpeechCatalog:
    """The voices of every available engine, and the one way the rest of Studiolo makes speech."""

    def __init__(self, engines: Sequence[SpeechEngine]) -> None:
        self._engines = list(engines)
        self._lock = threading.Lock()
        self._index: dict[str, tuple[Voice, SpeechEngine]] | None = None

    def _voices(self) -> dict[str, tuple[Voice, SpeechEngine]]:
        with self._lock:
            if self._index is None:
                index: dict[str, tuple[Voice, SpeechEngine]] = {}
                for engine in self._engines:
                    if not engine.available():
                        continue
                    try:
                        voices = engine.voices()
                    except EngineError as exc:  # one broken engine must not hide the others' voices
                        log.warning("speech engine %s lists no voices: %s", engine.name, exc)
                        continue
                    for voice in voices:
                        index.setdefault(voice.id, (voice, engine))
                self._index = index
            return self._index

    @property
    def engines(self) -> list[SpeechEngine]:
        """The engines that are available here."""
        return [e for e in self._engines if e.available()]

    def voices(self) -> list[Voice]:
        return sorted((v for v, _ in self._voices().values()), key=lambda v: (v.language, v.name, v.id))

    def get(self, voice_id: str) -> Voice:
        found = self._voices().get(voice_id)
        if found is None:
            raise unknown_voice(voice_id)
        return found[0]

    def default_voice(self, language: str = "en") -> Voice:
        """The best voice for ``language`` ("en", "de", "fr-FR"): neural, then espeak, then hosted; a language
        without a voice gets the English default, and no voice at all is ServiceUnavailable("no_voices")."""
        voices = [v for v, _ in self._voices().values()]
        if not voices:
            raise ServiceUnavailable("No text-to-speech voice is installed.", code="no_voices")
        want = language.replace("_", "-").lower()
        for lang, preferred in ((want.split("-")[0], _DEFAULT_REGION.get(want, want)), ("en", "en-us")):
            candidates = [v for v in voices if v.language.lower().split("-")[0] == lang]
            if candidates:
                return min(
                    candidates,
                    key=lambda v: (
                        _QUALITY_RANK.get(v.quality, 3),
                        v.language.lower() != preferred,
                        "+" in v.id,  # an espeak variant (+f3) after its base voice
                        v.id,
                    ),
                )
        return min(voices, key=lambda v: (_QUALITY_RANK.get(v.quality, 3), v.id))

    def check_text(self, voice_id: str, text: str) -> None:
        voice = self.get(voice_id)
        script = unreadable_script(voice.language, text)
        if script is not None:
            raise InvalidInput(
                f"The voice {voice.name!r} cannot read text written in {script} script; choose a voice of the "
                "script's language.",
                code="unsupported_language",
                details={"voice": voice_id, "language": voice.language, "script": script},
            )

    def synthesize(self, text: str, voice_id: str, *, speed: float = 1.0) -> Speech:
        """``text`` spoken by ``voice_id``. Text with no letter or digit is an empty Speech (nothing to say)."""
        found = self._voices().get(voice_id)
        if found is None:
            raise unknown_voice(voice_id)
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise InvalidInput(
                f"Speed must be between {MIN_SPEED} and {MAX_SPEED} (got {speed}).",
                code="invalid_speed",
                details={"speed": speed, "min": MIN_SPEED, "max": MAX_SPEED},
            )
        if not any(ch.isalnum() for ch in text):
            return Speech(np.zeros(0, dtype=np.float32), SILENT_RATE)
        speech = found[1].synthesize(text, voice_id, speed=speed)
        return as_speech(speech.samples, speech.sample_rate)


def build_speech_catalog(settings: Settings) -> SpeechCatalog:
    """espeak-ng (always, if its binary is found), Piper (if importable), the OpenAI-compatible server (if set)."""
    from studiolo.engines.speech_espeak import EspeakSpeech
    from studiolo.engines.speech_openai import OpenAISpeech
    from studiolo.engines.speech_piper import PiperSpeech

    engines: list[SpeechEngine] = [PiperSpeech(voices_dir=settings.film_piper_voices_dir), EspeakSpeech()]
    if settings.film_speech_api_base:
        engines.append(OpenAISpeech(settings.film_speech_api_base, settings.film_speech_api_key))
    return SpeechCatalog(engines)
