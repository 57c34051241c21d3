"""The MusicEngine port: a seeded, mood-driven music bed for films (no sample files, no network).

``ProceduralMusic`` synthesises the score of ``music_score.compose`` with numpy alone: pads (detuned, slow attack,
low-passed by mood), an arpeggio (pluck, bell or soft), bass, drums made of noise and pitch sweeps, and a reverb.
Each distinct part of the score is rendered once and laid out where it repeats, and the reverb runs at a quarter of
the sample rate as one batched, partitioned FFT convolution, so 300 s of 48 kHz stereo costs about one CPU second
(``python -m bench.media`` prints the figures per mood). ``FluidsynthMusic`` plays the same score through a General
MIDI soundfont when one is configured (engines/music_fluidsynth.py).
"""

from __future__ import annotations

import math
import shutil
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from studiolo.engines.music_fluidsynth import FluidsynthMusic, write_midi
from studiolo.engines.music_score import HAT, KICK, MOODS, SNARE, TOM, MusicSpec, Part, Score, compose, rng_for

if TYPE_CHECKING:
    from studiolo.settings import Settings

__all__ = [
    "MOODS",
    "FluidsynthMusic",
    "MusicEngine",
    "MusicSpec",
    "ProceduralMusic",
    "build_music_engine",
    "finish",
    "write_midi",
]

PEAK = 0.89  # every bed is normalised to this peak (the contract allows 0.9)
_SEND = {"pad": 1.0, "arp": 0.8, "bass": 0.15, "drums": 0.35}
_GAIN = {"pad": 0.16, "arp": 0.2, "bass": 0.3, "drums": 0.55}  # a bed under a voice: drums kept back
_DRUM_PANS = {KICK: 0.0, SNARE: 0.1, HAT: 0.35, TOM: -0.3}
_REVERB_RATE = 12000  # the reverb's own sample rate: its tail is dark anyway, and 4x fewer samples to convolve


@runtime_checkable
class MusicEngine(Protocol):
    name: str

    def render(self, spec: MusicSpec, sample_rate: int = 48000) -> np.ndarray:
        """float32 stereo, shape (round(seconds * sample_rate), 2), peak <= 0.9; bit-identical for the same spec."""
        ...


def _hz(pitch: float) -> float:
    return float(440.0 * 2.0 ** ((pitch - 69) / 12.0))


def _sine(freq: float, n: int, sr: int, harmonics: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """Sum of harmonics of ``freq`` (amplitudes given), float32.

    The phase is a 32-bit integer that wraps by itself (uint32 arithmetic), which is exact and several times
    cheaper than wrapping a float64 phase; the frequency error is sr / 2**32 Hz."""
    base = _phase(freq, n, sr)
    out = np.zeros(n, dtype=np.float32)
    for h, amp in enumerate(harmonics, start=1):
        if amp and freq * h < sr * 0.45:
            out += np.float32(amp) * np.sin(base * np.float32(h) if h > 1 else base)
    return out


def _phase(freq: float, n: int, sr: int) -> np.ndarray:
    """2*pi*freq*t for n samples, wrapped to [0, 2*pi), float32."""
    step = np.uint32(round(freq / sr * 2.0**32) % 2**32)
    return (np.arange(n, dtype=np.uint32) * step).astype(np.float32) * np.float32(2 * math.pi / 2.0**32)


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average over ``width`` samples along axis 0 (a cheap low-pass), same length, float32."""
    if width <= 1:
        return x
    if width <= 8:  # a few shifted adds beat a cumulative sum
        out = x.astype(np.float32, copy=True)
        for k in range(1, width):
            out[k:] += x[:-k]
        return out * np.float32(1.0 / width)
    c = np.cumsum(np.concatenate([np.zeros((width, *x.shape[1:]), dtype=np.float64), x]), axis=0)
    return np.asarray((c[width:] - c[:-width]) / width, dtype=np.float32)


def _stereo(mono: np.ndarray, pan: float) -> np.ndarray:
    """Mono -> (n, 2) with a constant-power pan (-1 left .. 1 right)."""
    angle = (pan + 1.0) * math.pi / 4
    return np.stack([mono * np.float32(math.cos(angle)), mono * np.float32(math.sin(angle))], axis=1)


class _Synth:
    """Renders one score at one sample rate; every distinct note and Part is synthesised once."""

    def __init__(self, score: Score, sr: int, rng: np.random.Generator) -> None:
        self.score = score
        self.style = score.style
        self.sr = sr
        self.beat = 60.0 / score.tempo * sr  # samples per beat
        self.noise = rng.standard_normal(int(0.6 * sr)).astype(np.float32)  # drum noise, seeded
        self.pans = rng.uniform(-0.5, 0.5, 128)  # arpeggio pan per pitch
        self.ir_noise = rng.standard_normal((2, int(_REVERB_RATE * 6))).astype(np.float32)
        self.notes: dict[tuple[str, int, int], np.ndarray] = {}

    # --- instruments: one note at velocity 1, kept for the next time it sounds -----------------------------------
    def note(self, role: str, pitch: int, length: int) -> np.ndarray:
        key = (role, pitch, length if role in ("pad", "bass") else 0)
        found = self.notes.get(key)
        if found is None:
            if role == "pad":
                found = self.pad_note(pitch, length)
            elif role == "arp":
                found = _stereo(self.arp_note(pitch), float(self.pans[pitch]))
            elif role == "bass":
                found = _stereo(self.bass_note(pitch, length), 0.0)
            else:
                found = _stereo(self.drum(pitch), _DRUM_PANS.get(pitch, 0.0))
            self.notes[key] = found
        return found

    def pad_note(self, pitch: int, length: int) -> np.ndarray:
        b = self.style.brightness
        harmonics = tuple(h ** -(2.2 - 1.4 * b) for h in range(1, 3 + round(b * 4)))
        release = int(1.2 * self.sr)
        n = length + release
        t = np.arange(n, dtype=np.float32) / np.float32(self.sr)
        env = np.minimum(np.float32(1.0), t / np.float32(self.style.pad_attack)) ** 2
        env[length:] *= np.exp(-np.arange(release, dtype=np.float32) / np.float32(0.3 * self.sr))
        env *= np.float32(1.0) + np.float32(0.08) * np.sin(np.float32(2 * math.pi * 0.23) * t)  # slow swell
        f = _hz(pitch)
        left = _sine(f * 2 ** (7 / 1200), n, self.sr, harmonics)  # detuned a few cents each way: width
        right = _sine(f * 2 ** (-7 / 1200), n, self.sr, harmonics)
        wave = np.stack([left * env, right * env], axis=1)
        return _smooth(wave, 1 + round((1.0 - b) * 6))  # darker moods: a lower low-pass

    def arp_note(self, pitch: int) -> np.ndarray:
        f = _hz(pitch)
        timbre = self.style.arp_timbre
        decay = {"pluck": 0.35, "bell": 1.1, "soft": 0.6}[timbre]
        n = int(decay * 3.5 * self.sr)
        t = np.arange(n, dtype=np.float32) / np.float32(self.sr)
        env = np.exp(-t / np.float32(decay)) * np.minimum(
            np.float32(1.0), t / np.float32(0.004 if timbre != "soft" else 0.03)
        )
        if timbre == "bell":  # two-operator FM: a modulator at 3.5x, fading out, gives the metallic strike
            mod = np.sin(_phase(f * 3.5, n, self.sr)) * (np.float32(2.5) * np.exp(-t / np.float32(0.25)))
            wave = np.sin(_phase(f, n, self.sr) + mod)
        elif timbre == "pluck":  # bright at the strike, then mostly the fundamental
            wave = _sine(f, n, self.sr, (1.0, 0.45, 0.25, 0.12)) * np.exp(-t / np.float32(0.12))
            wave = (wave + _sine(f, n, self.sr)) * np.float32(0.6)
        else:
            wave = _sine(f, n, self.sr, (1.0, 0.2, 0.08))
        return np.asarray(wave * env, dtype=np.float32)

    def bass_note(self, pitch: int, length: int) -> np.ndarray:
        tail = int(0.15 * self.sr)
        t = np.arange(length + tail, dtype=np.float32) / np.float32(self.sr)
        env = np.minimum(np.float32(1.0), t / np.float32(0.01))
        env[length:] *= np.exp(-np.arange(tail, dtype=np.float32) / np.float32(0.04 * self.sr))
        if self.style.bass != "hold":  # picked notes: a thump that settles
            env *= np.float32(0.55) + np.float32(0.45) * np.exp(-t / np.float32(0.25))
        return np.asarray(_sine(_hz(pitch), len(t), self.sr, (1.0, 0.35, 0.1)) * env, dtype=np.float32)

    def drum(self, drum: int) -> np.ndarray:
        t = np.arange(len(self.noise), dtype=np.float32) / np.float32(self.sr)
        noise = self.noise
        if drum == KICK:  # a sine falling from ~135 Hz to 45 Hz, plus a click
            phase = 45.0 * t + 90.0 * 0.04 * (1.0 - np.exp(-t / np.float32(0.04)))
            wave = np.sin(np.float32(2 * math.pi) * phase) * np.exp(-t / np.float32(0.22))
            wave += np.float32(0.3) * noise * np.exp(-t / np.float32(0.003))
        elif drum == SNARE:  # band-passed noise and a 185 Hz body
            band = _smooth(noise, 3) - _smooth(noise, 24)
            wave = np.float32(1.4) * band * np.exp(-t / np.float32(0.11))
            wave += np.float32(0.5) * np.sin(np.float32(2 * math.pi * 185) * t) * np.exp(-t / np.float32(0.06))
        elif drum == HAT:  # high-passed noise, very short
            wave = np.float32(0.35) * (noise - _smooth(noise, 6)) * np.exp(-t / np.float32(0.025))
        else:  # tom: a sine falling from ~150 Hz to 95 Hz
            phase = 95.0 * t + 55.0 * 0.08 * (1.0 - np.exp(-t / np.float32(0.08)))
            wave = np.sin(np.float32(2 * math.pi) * phase) * np.exp(-t / np.float32(0.3))
        return np.asarray(wave, dtype=np.float32)

    # --- parts and the whole -------------------------------------------------------------------------------------
    def part(self, part: Part) -> np.ndarray:
        """One part as (n, 2) float32 from its unit's start, tails included."""
        placed = []
        for note in part.notes:
            start = round(note.beat * self.beat)
            audio = self.note(part.role, note.pitch, max(1, round(note.beats * self.beat)))
            placed.append((start, audio, np.float32(note.velocity)))
        out = np.zeros((max((s + len(a) for s, a, _ in placed), default=0), 2), dtype=np.float32)
        for s, a, v in placed:
            out[s : s + len(a)] += a * v
        return out * np.float32(_GAIN[part.role])

    def render(self, frames: int) -> np.ndarray:
        unit = self.score.unit_seconds * self.sr
        r = max(1, self.sr // _REVERB_RATE)
        cache: dict[Part, tuple[np.ndarray, np.ndarray]] = {}
        size = frames + int(6 * self.sr)
        dry = np.zeros((size, 2), dtype=np.float32)
        send = np.zeros((2, size // r + 1), dtype=np.float32)  # channels first: contiguous for the FFT
        for u, parts in enumerate(self.score.units):
            start = round(u * unit)
            for part in parts:
                if part not in cache:
                    audio = self.part(part)
                    usable = len(audio) - len(audio) % r
                    low = sum(audio[k:usable:r] for k in range(r)) * np.float32(_SEND[part.role] / r)
                    cache[part] = (audio, np.ascontiguousarray(low.T, dtype=np.float32))
                audio, low = cache[part]
                end = min(size, start + len(audio))
                dry[start:end] += audio[: end - start]
                s = start // r
                e = min(send.shape[1], s + low.shape[1])
                send[:, s:e] += low[:, : e - s]
        out = dry[:frames]
        self.add_reverb(out, send[:, : frames // r + 2], r)
        return out

    def _reverb(self, send: np.ndarray, r: int) -> np.ndarray:
        """``send`` ((2, n) at sr / r) convolved with a decaying-noise impulse response -> (n, 2)."""
        rate = self.sr / r
        seconds = self.style.reverb_seconds
        n_ir = max(8, int(seconds * rate))
        t = np.arange(n_ir, dtype=np.float32) / np.float32(rate)
        envelope = np.exp(np.float32(-6.9) * t / np.float32(seconds)) * np.minimum(
            np.float32(1.0), t / np.float32(0.02)
        )
        ir = _smooth((self.ir_noise[:, :n_ir] * envelope).T, 2).T  # a touch of low-pass on the tail
        ir = ir / np.float32(np.sqrt((ir.astype(np.float64) ** 2).sum(axis=1).mean()) or 1.0)
        # Uniformly partitioned FFT convolution, all blocks in one batched transform: blocks of B >= the response,
        # transforms of 2B (cache-sized), overlap-added. Four times faster here than one transform of the whole bed.
        n = send.shape[1]
        block = max(4096, 1 << (n_ir - 1).bit_length())
        count = -(-n // block)
        blocks = np.zeros((2, count * block), dtype=np.float32)
        blocks[:, :n] = send
        spectra = np.fft.rfft(blocks.reshape(2, count, block), 2 * block, axis=2)
        spectra *= np.fft.rfft(ir, 2 * block, axis=1)[:, None, :]
        pieces = np.fft.irfft(spectra, 2 * block, axis=2).astype(np.float32)
        wet = np.zeros((2, (count + 1) * block), dtype=np.float32)
        wet[:, : count * block] += pieces[:, :, :block].reshape(2, -1)
        wet[:, block:] += pieces[:, :, block:].reshape(2, -1)
        return np.ascontiguousarray(wet[:, :n].T)

    def add_reverb(self, out: np.ndarray, send: np.ndarray, r: int) -> None:
        """``out`` += the reverb of ``send`` (at sr / r), brought back to the full rate by linear interpolation,
        written one phase of r at a time (small temporaries instead of several full-length ones)."""
        wet = self._reverb(send, r) * np.float32(self.style.reverb)
        for j in range(r):
            a = np.float32(j / r)
            target = out[j::r]
            m = len(target)
            lo = wet[:m]
            hi = wet[1 : m + 1]
            if len(hi) < m:
                hi = np.concatenate([hi, wet[-1:].repeat(m - len(hi), axis=0)])
            target += lo * (np.float32(1.0) - a) + hi * a if j else lo


def finish(audio: np.ndarray, frames: int, sample_rate: int) -> np.ndarray:
    """Exactly ``frames`` stereo frames, faded in and out, normalised to PEAK; float32."""
    out = np.zeros((frames, 2), dtype=np.float32)
    n = min(frames, len(audio))
    out[:n] = audio[:n]
    fade_in = min(int(1.5 * sample_rate), frames // 4)
    fade_out = min(int(4.0 * sample_rate), frames // 3)
    if fade_in:
        out[:fade_in] *= np.linspace(0.0, 1.0, fade_in, dtype=np.float32)[:, None]
    if fade_out:
        out[frames - fade_out :] *= np.linspace(1.0, 0.0, fade_out, dtype=np.float32)[:, None] ** 2
    peak = float(np.abs(out).max()) if frames else 0.0
    if peak > 0:
        out *= np.float32(PEAK / peak)
    return out


class ProceduralMusic:
    name = "procedural"

    def render(self, spec: MusicSpec, sample_rate: int = 48000) -> np.ndarray:
        score = compose(spec)
        frames = round(spec.seconds * sample_rate)
        if frames == 0:
            return np.zeros((0, 2), dtype=np.float32)
        audio = _Synth(score, sample_rate, rng_for(spec, 1)).render(frames)
        return finish(audio, frames, sample_rate)


def build_music_engine(settings: Settings) -> MusicEngine:
    """FluidsynthMusic when a soundfont is configured and ``fluidsynth`` is on PATH, else ProceduralMusic."""
    soundfont = settings.film_soundfont
    binary = shutil.which("fluidsynth")
    if soundfont is not None and soundfont.is_file() and binary is not None:
        return FluidsynthMusic(soundfont, binary=binary)
    return ProceduralMusic()
