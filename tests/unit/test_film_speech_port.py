"""The film service's speech helpers: the default voice's language guessed from a script, voice samples as WAV."""

# ruff: noqa: RUF001 -- scripts in other languages

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from studiolo.domain.film.speech_port import guess_language, sample_text
from studiolo.engines.wavcodec import encode_wav


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("The lighthouse keeper woke before dawn.", "en"),
        ("東京へ行った。とても楽しかった！", "ja"),
        ("日本語の文章です。", "ja"),  # Han characters with kana: Japanese
        ("我们走吧。好的！", "zh"),
        ("안녕하세요.", "ko"),
        ("Привет, как дела?", "ru"),
        ("Γειά σου κόσμε.", "el"),
        ("... 123 !!!", "en"),
    ],
)
def test_guess_language(text: str, language: str) -> None:
    assert guess_language(text) == language


def test_sample_text_by_language() -> None:
    assert sample_text("de-DE").startswith("Hallo")
    assert sample_text("en-US") == sample_text("xx")  # English where there is no sentence of the language


def test_voice_samples_are_16_bit_wav_mono_and_stereo() -> None:
    mono = np.array([0.0, 0.5, -0.5, 1.5, -2.0], dtype=np.float32)
    with wave.open(io.BytesIO(encode_wav(mono, 16000))) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 5)
        frames = np.frombuffer(w.readframes(5), dtype="<i2")
    assert frames.tolist() == [0, 16384, -16384, 32767, -32767]  # clipped to [-1, 1]
    stereo = np.zeros((48, 2), dtype=np.float32)
    with wave.open(io.BytesIO(encode_wav(stereo, 48000))) as w:
        assert (w.getnchannels(), w.getnframes()) == (2, 48)
