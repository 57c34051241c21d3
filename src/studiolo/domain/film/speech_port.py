"""The speech engines as the film service sees them (engines/speech.py), the sentence a voice sample speaks, and
the default voice's language guessed from a script's writing system (engines/scripts.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from studiolo.engines.scripts import scripts_in

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


# The language a script's writing system suggests (engines/scripts.py names the scripts); others count as English.
_SCRIPT_LANGUAGE = {
    "Kana": "ja",
    "CJK": "zh",
    "Hangul": "ko",
    "Cyrillic": "ru",
    "Greek": "el",
    "Arabic": "ar",
    "Hebrew": "he",
    "Devanagari": "hi",
    "Thai": "th",
}


def guess_language(text: str) -> str:
    """The ISO 639-1 code the script's writing system suggests, for the default voice: ja (kana), zh (Han), ko,
    ru (Cyrillic), el, ar, he, hi (Devanagari), th; anything else en."""
    counts: Counter[str] = Counter()
    for script, letters in scripts_in(text).items():
        counts[_SCRIPT_LANGUAGE.get(script, "en")] += letters
    if counts.get("ja"):
        return "ja"  # Japanese mixes kana with Han characters
    return max(counts, key=lambda k: counts[k]) if counts else "en"


def sample_text(language: str) -> str:
    """The sentence a voice sample speaks when none is given, in the voice's language (English otherwise)."""
    return _SAMPLES.get(language.split("-")[0].lower(), _SAMPLES["en"])
