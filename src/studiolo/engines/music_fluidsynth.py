"""Music through a General MIDI soundfont: the score written as a Standard MIDI File, rendered by ``fluidsynth``.

Used only where ``settings.film_soundfont`` names a ``.sf2`` and the Debian ``fluidsynth`` binary is on PATH
(engines/music.py ``build_music_engine``). The MIDI writer is ours (format 1, 480 ticks per beat, one track per
part), a few dozen lines rather than a dependency; tests parse its output back with an independent reader.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from studiolo.engines.base import EngineError
from studiolo.engines.music_score import MusicSpec, Score, compose
from studiolo.engines.wavcodec import WavError, decode_wav

TICKS_PER_BEAT = 480
_CHANNELS = {"pad": 0, "arp": 1, "bass": 2, "drums": 9}  # channel 10 (index 9) is General MIDI's drum kit
_TIMEOUT = 300.0


def _vlq(value: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits per byte, high bit set on all but the last."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def _track(events: list[tuple[int, int, bytes]]) -> bytes:
    """events: (tick, order, message) -> an MTrk chunk (delta times, ends with End of Track)."""
    body = bytearray()
    now = 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        body += _vlq(tick - now) + message
        now = tick
    body += _vlq(0) + b"\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(body)) + bytes(body)


def write_midi(score: Score) -> bytes:
    """The score as a format-1 Standard MIDI File: a tempo track, then one track per part role."""
    tempo = round(60_000_000 / score.tempo)  # microseconds per quarter note
    conductor = [
        (0, 0, b"\xff\x51\x03" + tempo.to_bytes(3, "big")),
        (0, 0, b"\xff\x58\x04\x04\x02\x18\x08"),  # 4/4
    ]
    tracks: dict[str, list[tuple[int, int, bytes]]] = {role: [] for role in _CHANNELS}
    programs = dict(zip(("pad", "arp", "bass"), score.style.programs, strict=True))
    for role, program in programs.items():
        tracks[role].append((0, 0, bytes([0xC0 | _CHANNELS[role], program & 0x7F])))
    for u, parts in enumerate(score.units):
        unit_beat = u * score.style.beats
        for part in parts:
            channel = _CHANNELS[part.role]
            for note in part.notes:
                on = round((unit_beat + note.beat) * TICKS_PER_BEAT)
                off = on + max(1, round(note.beats * TICKS_PER_BEAT))
                velocity = max(1, min(127, round(note.velocity * 127)))
                # order: at one tick, note-offs (1) go before note-ons (2), so a repeated note re-sounds
                tracks[part.role].append((on, 2, bytes([0x90 | channel, note.pitch & 0x7F, velocity])))
                tracks[part.role].append((off, 1, bytes([0x80 | channel, note.pitch & 0x7F, 0])))
    chunks = [_track(conductor)] + [_track(events) for events in tracks.values()]
    header = b"MThd" + struct.pack(">IHHH", 6, 1, len(chunks), TICKS_PER_BEAT)
    return header + b"".join(chunks)


class FluidsynthMusic:
    name = "fluidsynth"

    def __init__(self, soundfont: Path, *, binary: str | None = None) -> None:
        self.soundfont = soundfont
        self.binary = binary or shutil.which("fluidsynth") or "fluidsynth"

    def render(self, spec: MusicSpec, sample_rate: int = 48000) -> np.ndarray:
        from studiolo.engines.music import finish  # music.py imports this module: import at call time

        score = compose(spec)
        frames = round(spec.seconds * sample_rate)
        if frames == 0:
            return np.zeros((0, 2), dtype=np.float32)
        with tempfile.TemporaryDirectory(prefix="studiolo-music-") as tmp:
            mid = Path(tmp) / "score.mid"
            wav = Path(tmp) / "out.wav"
            mid.write_bytes(write_midi(score))
            # -ni: no shell, no MIDI input; -F: render the file as fast as possible; float output: no dither noise,
            # so the same spec gives the same samples; -g 0.5 keeps a full arrangement out of clipping.
            args = [self.binary, "-ni", "-q", "-g", "0.5", "-O", "float", "-F", str(wav), "-r", str(sample_rate)]
            try:
                done = subprocess.run(
                    [*args, str(self.soundfont), str(mid)], capture_output=True, timeout=_TIMEOUT, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise EngineError(f"fluidsynth did not run: {exc}", code="music_failed", retryable=True) from exc
            if done.returncode != 0 or not wav.is_file():
                tail = (done.stderr or done.stdout).decode("utf-8", "replace").strip()[-500:]
                raise EngineError(
                    f"fluidsynth failed (exit {done.returncode}): {tail}", code="music_failed", retryable=True
                )
            try:
                audio, rate = decode_wav(wav.read_bytes())
            except WavError as exc:
                raise EngineError(f"fluidsynth wrote no audio: {exc}", code="music_failed", retryable=True) from exc
        if rate != sample_rate:
            raise EngineError(f"fluidsynth wrote {rate} Hz, not {sample_rate} Hz", code="music_failed")
        if audio.shape[1] == 1:
            audio = np.repeat(audio, 2, axis=1)
        return finish(audio[:, :2], frames, sample_rate)
