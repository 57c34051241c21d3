"""Hosted voices from an OpenAI-compatible speech server: ``POST {base}/v1/audio/speech``.

Body ``{"model": "tts-1", "input", "voice", "response_format": "wav", "speed"}`` with ``Authorization: Bearer
<key>``; the answer is the WAV itself. The voices speak many languages, so their language is "mul" (any script).
The API takes at most 4,096 characters per call: longer text goes in several calls, cut between sentences.
"""

from __future__ import annotations

import re

import httpx
import numpy as np

from studiolo.engines.base import EngineError
from studiolo.engines.speech import Speech, Voice, as_speech, unknown_voice
from studiolo.engines.wavcodec import WavError, decode_wav

MODEL = "tts-1"
MAX_INPUT = 4096
# (voice, gender as OpenAI's voice guide presents it; None where it reads as neither)
VOICES: tuple[tuple[str, str | None], ...] = (
    ("alloy", None),
    ("echo", "male"),
    ("fable", None),
    ("onyx", "male"),
    ("nova", "female"),
    ("shimmer", "female"),
)
_SENTENCE_END = re.compile("(?<=[.!?\u3002\uff01\uff1f])\\s+")  # also the ideographic full stop, ! and ?


def split_input(text: str, limit: int = MAX_INPUT) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut after sentences (or, for one huge sentence, hard)."""
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(text.strip()):
        while len(sentence) > limit:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:limit])
            sentence = sentence[limit:]
        if current and len(current) + 1 + len(sentence) > limit:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return pieces


class OpenAISpeech:
    name = "openai"

    def __init__(self, api_base: str, api_key: str = "", *, timeout: float = 60.0) -> None:
        self.api_base = api_base.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def available(self) -> bool:
        return bool(self.api_base)

    def voices(self) -> list[Voice]:
        return [
            Voice(
                id=f"openai:{v}",
                name=f"{v.title()}{', ' + g if g else ''} — hosted",
                language="mul",
                gender=g,
                age="adult",
                engine=self.name,
                quality="hosted",
            )
            for v, g in VOICES
        ]

    def synthesize(self, text: str, voice_id: str, *, speed: float = 1.0) -> Speech:
        voice = voice_id.removeprefix("openai:")
        if not voice_id.startswith("openai:") or voice not in dict(VOICES):
            raise unknown_voice(voice_id)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        parts: list[np.ndarray] = []
        rate = 0
        with httpx.Client(timeout=self.timeout, headers=headers) as client:
            for piece in split_input(text):
                samples, piece_rate = self._one(client, piece, voice, speed)
                if rate and piece_rate != rate:
                    raise EngineError("The speech server changed its sample rate mid-text.", code="speech_failed")
                rate = piece_rate
                parts.append(samples)
        if not parts:
            return Speech(np.zeros(0, dtype=np.float32), 24000)
        return as_speech(np.concatenate(parts), rate)

    def _one(self, client: httpx.Client, text: str, voice: str, speed: float) -> tuple[np.ndarray, int]:
        body = {"model": MODEL, "input": text, "voice": voice, "response_format": "wav", "speed": speed}
        try:
            response = client.post(f"{self.api_base}/v1/audio/speech", json=body)
        except httpx.HTTPError as exc:
            raise EngineError(f"The speech server is unreachable: {exc}", code="speech_failed", retryable=True) from exc
        if response.status_code != 200:
            # 429 and 5xx pass; any other refusal (bad key, bad voice) will be the same next time
            retryable = response.status_code == 429 or response.status_code >= 500
            raise EngineError(
                f"The speech server answered {response.status_code}: {_reason(response)}",
                code="speech_failed",
                retryable=retryable,
            )
        try:
            samples, rate = decode_wav(response.content)
        except WavError as exc:
            raise EngineError(f"The speech server sent no WAV audio: {exc}", code="speech_failed") from exc
        return as_speech(samples, rate).samples, rate


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:300]
    return response.text[:300]
