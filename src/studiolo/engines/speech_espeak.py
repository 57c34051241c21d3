"""espeak-ng, the always-available robotic voice: the Debian ``espeak-ng`` binary run as a subprocess.

Voices: every language ``espeak-ng --voices`` lists, as its own (male) voice and with the ``+f3`` variant (female);
the two main English accents also get espeak's senior variants. Variants work with every language, but offering all
of them would make a list of 500 voices nobody can choose from.
"""

from __future__ import annotations

import shutil
import subprocess
import threading

from studiolo.engines.base import EngineError
from studiolo.engines.speech import Speech, Voice, as_speech, bcp47, unknown_voice
from studiolo.engines.wavcodec import WavError, decode_wav

NORMAL_WPM = 175  # espeak's own default rate: speed 1.0
_MIN_WPM, _MAX_WPM = 80, 450  # espeak-ng's accepted range
_TIMEOUT = 120.0
# variant, gender, age, extra languages it is offered for (None: all)
_VARIANTS: tuple[tuple[str, str, str, frozenset[str] | None], ...] = (
    ("", "", "adult", None),  # the language's own voice: its listed gender
    ("f3", "female", "adult", None),
    ("grandpa", "male", "senior", frozenset({"en-us", "en-gb"})),
    ("grandma", "female", "senior", frozenset({"en-us", "en-gb"})),
)
_GENDERS = {"M": "male", "F": "female"}


class EspeakSpeech:
    name = "espeak"

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary if binary is not None else shutil.which("espeak-ng")
        self._lock = threading.Lock()
        self._voices: dict[str, Voice] | None = None

    def available(self) -> bool:
        return self.binary is not None and shutil.which(self.binary) is not None

    def _run(self, args: list[str], stdin: bytes | None = None) -> bytes:
        if self.binary is None:
            raise EngineError("espeak-ng is not installed.", code="speech_failed")
        try:
            done = subprocess.run([self.binary, *args], input=stdin, capture_output=True, timeout=_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EngineError(f"espeak-ng did not run: {exc}", code="speech_failed", retryable=True) from exc
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip()[-500:]
            raise EngineError(
                f"espeak-ng failed (exit {done.returncode}): {tail}", code="speech_failed", retryable=True
            )
        return done.stdout

    def voices(self) -> list[Voice]:
        with self._lock:
            if self._voices is None:
                self._voices = {v.id: v for v in self._list()}
            return list(self._voices.values())

    def _list(self) -> list[Voice]:
        out = self._run(["--voices"]).decode("utf-8", "replace")
        voices: list[Voice] = []
        seen: set[str] = set()
        for line in out.splitlines()[1:]:
            # Pty Language Age/Gender VoiceName File Other-Languages (names use "_" for spaces)
            parts = line.split()
            if len(parts) < 5 or parts[1] in seen or parts[1] == "variant":
                continue
            code, age_gender, label = parts[1], parts[2], parts[3].replace("_", " ").strip()
            seen.add(code)
            own_gender = _GENDERS.get(age_gender.rpartition("/")[2].upper())
            for variant, gender, age, only in _VARIANTS:
                if only is not None and code.lower() not in only:
                    continue
                g = gender or own_gender
                described = " ".join(x for x in ("senior" if age == "senior" else "", g or "") if x)
                voices.append(
                    Voice(
                        id=f"espeak:{code}+{variant}" if variant else f"espeak:{code}",
                        name=f"{label}, {described} — espeak" if described else f"{label} — espeak",
                        language=bcp47(code),
                        gender=g,
                        age=age,
                        engine=self.name,
                        quality="robotic",
                    )
                )
        return voices

    def synthesize(self, text: str, voice_id: str, *, speed: float = 1.0) -> Speech:
        known = {v.id for v in self.voices()}
        if voice_id not in known:
            raise unknown_voice(voice_id)
        wpm = min(_MAX_WPM, max(_MIN_WPM, round(NORMAL_WPM * speed)))
        voice = voice_id.removeprefix("espeak:")
        # Text through stdin, never argv: a line starting with "-" must not read as an option. -b 1: UTF-8 input.
        wav = self._run(["--stdout", "-b", "1", "-v", voice, "-s", str(wpm), "--stdin"], stdin=text.encode("utf-8"))
        try:
            samples, rate = decode_wav(wav)
        except WavError as exc:
            raise EngineError(f"espeak-ng wrote no audio: {exc}", code="speech_failed", retryable=True) from exc
        return as_speech(samples, rate)
