"""The contract every SpeechEngine adapter passes (engines/speech.py; docs/DESIGN.md, habit 9).

To add an adapter, write a factory that returns a ``SpeechCase`` (the engine and one of its voices that reads
``TEXT``) and append it to ADAPTERS. Engine-specific behaviour is tested in tests/unit/test_speech.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from studiolo.engines.speech import SpeechCatalog, SpeechEngine
from studiolo.engines.speech_espeak import EspeakSpeech
from studiolo.engines.speech_openai import OpenAISpeech
from studiolo.engines.speech_piper import PiperSpeech
from studiolo.errors import InvalidInput
from tests.speech_server import SpeechServer

TEXT = "A small boat drifted toward the island at dawn."
LONGER = TEXT + " The fishermen waved from the pier, and the gulls circled above the harbour walls."


@dataclass(frozen=True)
class SpeechCase:
    engine: SpeechEngine
    voice: str  # a voice of the engine that reads TEXT


@pytest.fixture(scope="module")
def speech_server() -> Iterator[SpeechServer]:
    with SpeechServer(api_key="sk-contract") as server:
        yield server


def _espeak(request: pytest.FixtureRequest) -> SpeechCase:
    return SpeechCase(EspeakSpeech(), "espeak:en-us")


def _piper(request: pytest.FixtureRequest) -> SpeechCase:
    return SpeechCase(PiperSpeech(), "piper:en_US-joe-medium")


def _openai(request: pytest.FixtureRequest) -> SpeechCase:
    server: SpeechServer = request.getfixturevalue("speech_server")
    return SpeechCase(OpenAISpeech(server.url, "sk-contract"), "openai:alloy")


ADAPTERS = [pytest.param(_espeak, id="espeak"), pytest.param(_piper, id="piper"), pytest.param(_openai, id="openai")]


@pytest.fixture(params=ADAPTERS)
def case(request: pytest.FixtureRequest) -> SpeechCase:
    factory: Callable[[pytest.FixtureRequest], SpeechCase] = request.param
    return factory(request)


def test_is_available_and_lists_well_formed_voices(case: SpeechCase) -> None:
    engine = case.engine
    assert isinstance(engine, SpeechEngine)
    assert engine.available()
    voices = engine.voices()
    ids = [v.id for v in voices]
    assert case.voice in ids and len(ids) == len(set(ids))
    for v in voices:
        assert v.engine == engine.name and v.id.startswith(f"{engine.name}:")
        assert re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]+)*", v.language), v.language
        assert v.gender in ("male", "female", None)
        assert v.age in ("adult", "child", "senior", None)
        assert v.quality in ("robotic", "neural", "hosted")
        assert v.name.strip()
    assert engine.voices() == voices  # stable


def test_speaks_mono_float_audio(case: SpeechCase) -> None:
    speech = case.engine.synthesize(TEXT, case.voice)
    assert speech.samples.dtype == np.float32 and speech.samples.ndim == 1
    assert speech.sample_rate >= 8000
    assert 1.0 < speech.seconds < 10.0  # nine words
    assert float(np.abs(speech.samples).max()) <= 1.0
    assert float(np.sqrt(np.mean(np.square(speech.samples, dtype=np.float64)))) > 0.01


def test_longer_text_lasts_longer_and_speed_shortens_it(case: SpeechCase) -> None:
    normal = case.engine.synthesize(LONGER, case.voice)
    assert normal.seconds > 1.8 * case.engine.synthesize(TEXT, case.voice).seconds
    fast = case.engine.synthesize(LONGER, case.voice, speed=2.0)
    slow = case.engine.synthesize(LONGER, case.voice, speed=0.5)
    assert fast.seconds < 0.75 * normal.seconds
    assert slow.seconds > 1.3 * normal.seconds


def test_unknown_voice_is_refused(case: SpeechCase) -> None:
    with pytest.raises(InvalidInput) as caught:
        case.engine.synthesize(TEXT, f"{case.engine.name}:no-such-voice")
    assert caught.value.code == "unknown_voice"


def test_the_catalog_routes_to_it(case: SpeechCase) -> None:
    catalog = SpeechCatalog([case.engine])
    assert catalog.get(case.voice).engine == case.engine.name
    assert catalog.default_voice().engine == case.engine.name
    catalog.check_text(case.voice, TEXT)
    speech = catalog.synthesize(TEXT, case.voice, speed=1.5)
    assert speech.seconds > 0.5 and speech.samples.dtype == np.float32
