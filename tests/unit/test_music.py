"""Music beds (engines/music*.py): the seeded score, the procedural synthesiser, the MIDI writer (read back by an
independent reader below) and fluidsynth with a real General MIDI soundfont (Debian ``fluidsynth`` and
``timgm6mb-soundfont``). Render speed is printed by bench/media.py, never asserted here."""

from __future__ import annotations

import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from studiolo.engines.music import (
    MOODS,
    FluidsynthMusic,
    MusicEngine,
    MusicSpec,
    ProceduralMusic,
    build_music_engine,
    write_midi,
)
from studiolo.engines.music_score import HAT, KICK, SNARE, STYLES, compose
from studiolo.errors import InvalidInput
from tests.conftest import make_settings

SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
RATE = 22050  # most checks here do not need 48 kHz


@pytest.fixture(scope="module")
def procedural() -> ProceduralMusic:
    return ProceduralMusic()


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def test_the_same_spec_renders_bit_identical(procedural: ProceduralMusic) -> None:
    spec = MusicSpec("uplifting", 12.5, seed=1234)
    first = procedural.render(spec)
    second = ProceduralMusic().render(spec)
    assert first.dtype == np.float32 and first.shape == (round(12.5 * 48000), 2)
    assert first.tobytes() == second.tobytes()


def test_seeds_moods_and_tempos_differ(procedural: ProceduralMusic) -> None:
    base = procedural.render(MusicSpec("calm", 10, seed=1), RATE)
    for other in (MusicSpec("calm", 10, seed=2), MusicSpec("epic", 10, seed=1), MusicSpec("calm", 10, 1, tempo=100)):
        changed = procedural.render(other, RATE)
        assert changed.shape == base.shape
        assert _rms(changed - base) > 0.05 * _rms(base), other
    assert compose(MusicSpec("calm", 10, 1)).tempo == STYLES["calm"].tempo
    assert compose(MusicSpec("calm", 10, 1, tempo=100)).tempo == 100


@pytest.mark.parametrize("mood", MOODS)
def test_every_mood_renders_a_stereo_bed_within_the_peak(procedural: ProceduralMusic, mood: str) -> None:
    seconds = 20.3
    audio = procedural.render(MusicSpec(mood, seconds, seed=7), RATE)
    assert audio.shape == (round(seconds * RATE), 2) and audio.dtype == np.float32
    assert np.isfinite(audio).all()
    peak = float(np.abs(audio).max())
    assert 0.8 < peak <= 0.9
    assert _rms(audio) > 0.03  # music, not near-silence
    assert abs(float(audio.mean())) < 0.01  # no DC offset
    assert _rms(audio[:, 0] - audio[:, 1]) > 0.01  # stereo, not two copies
    assert float(np.abs(audio[:10]).max()) < 0.01 and float(np.abs(audio[-10:]).max()) < 0.01  # faded in and out
    middle = audio[len(audio) // 3 : 2 * len(audio) // 3]
    assert _rms(middle) > 0.05


def test_drums_follow_the_mood(procedural: ProceduralMusic) -> None:
    def drum_notes(mood: str) -> set[int]:
        score = compose(MusicSpec(mood, 60, seed=3))
        return {n.pitch for unit in score.units for part in unit if part.role == "drums" for n in part.notes}

    assert drum_notes("calm") == set()
    assert {KICK, SNARE, HAT} <= drum_notes("uplifting")
    assert drum_notes("mysterious") == {HAT}

    # the beat shows in the audio: an uplifting bed has more of its energy above 5 kHz (hats, snares) than a calm one
    def highs(mood: str) -> float:
        a = procedural.render(MusicSpec(mood, 20, seed=3), RATE)[:, 0].astype(np.float64)
        spectrum = np.abs(np.fft.rfft(a)) ** 2
        return float(spectrum[int(5000 / RATE * len(a)) :].sum() / spectrum.sum())

    assert highs("uplifting") > 2 * highs("calm")


def test_score_structure() -> None:
    score = compose(MusicSpec("epic", 95, seed=11))
    unit = score.unit_seconds
    assert len(score.units) == math.ceil(95 / unit)
    assert [p.role for p in score.units[0]] == ["pad"]  # the bed opens on the pad alone
    assert "drums" not in [p.role for p in score.units[-1]]  # and ends without drums
    assert any("drums" in [p.role for p in u] for u in score.units)
    assert compose(MusicSpec("epic", 95, seed=11)) == score
    assert compose(MusicSpec("epic", 95, seed=12)) != score


def test_tempo_sets_the_pulse(procedural: ProceduralMusic) -> None:
    """The kick's onsets come every bar at the given tempo: the envelope's autocorrelation peaks at a beat's lag."""
    rate = 8000
    for tempo in (90, 150):
        audio = procedural.render(MusicSpec("uplifting", 30, seed=5, tempo=tempo), rate)[:, 0].astype(np.float64)
        env = np.abs(audio[rate * 5 : rate * 25]).reshape(-1, 40).mean(axis=1)  # 200 Hz envelope
        env -= env.mean()
        corr = np.correlate(env, env, "full")[len(env) - 1 :]
        beat = 60 / tempo * 200
        lags = np.arange(len(corr))
        window = (lags > 0.6 * beat) & (lags < 1.4 * beat)
        found = lags[window][np.argmax(corr[window])]
        assert abs(found - beat) <= 2, (tempo, found, beat)


def test_edge_cases_and_bad_specs(procedural: ProceduralMusic) -> None:
    assert procedural.render(MusicSpec("calm", 0, seed=1)).shape == (0, 2)
    short = procedural.render(MusicSpec("playful", 0.3, seed=1), RATE)
    assert short.shape == (round(0.3 * RATE), 2) and float(np.abs(short).max()) <= 0.9
    assert procedural.render(MusicSpec("calm", 5, seed=-3), RATE).shape == (5 * RATE, 2)  # any int seed
    assert procedural.render(MusicSpec("calm", 5, seed=2**80), RATE).shape == (5 * RATE, 2)
    with pytest.raises(InvalidInput) as caught:
        procedural.render(MusicSpec("none", 5, seed=1))
    assert caught.value.code == "unknown_music" and caught.value.details["moods"] == list(MOODS)
    for bad in (MusicSpec("calm", -1, 1), MusicSpec("calm", float("nan"), 1), MusicSpec("calm", 5, 1, tempo=10)):
        with pytest.raises(InvalidInput):
            procedural.render(bad)


def test_a_five_minute_bed_renders(procedural: ProceduralMusic) -> None:
    audio = procedural.render(MusicSpec("melancholic", 300, seed=9))
    assert audio.shape == (300 * 48000, 2)
    assert float(np.abs(audio).max()) <= 0.9
    # the arrangement keeps playing to the end (no silent stretch of 10 s anywhere before the fade-out)
    blocks = np.abs(audio[: 290 * 48000, 0]).reshape(-1, 48000 * 10).max(axis=1)
    assert blocks.min() > 0.05


# --- MIDI and fluidsynth ------------------------------------------------------------------------------------------


def _read_midi(data: bytes) -> tuple[tuple[int, int, int], list[list[tuple[int, bytes]]]]:
    """An independent Standard MIDI File reader: (format, tracks, division) and per track (tick, event) pairs."""
    assert data[:4] == b"MThd"
    length, fmt, ntracks, division = struct.unpack(">IHHH", data[4:14])
    pos = 8 + length
    tracks = []
    for _ in range(ntracks):
        assert data[pos : pos + 4] == b"MTrk"
        (size,) = struct.unpack(">I", data[pos + 4 : pos + 8])
        body, pos = data[pos + 8 : pos + 8 + size], pos + 8 + size
        i, tick, events, status = 0, 0, [], 0
        while i < len(body):
            delta = 0
            while True:
                byte = body[i]
                i += 1
                delta = (delta << 7) | (byte & 0x7F)
                if not byte & 0x80:
                    break
            tick += delta
            if body[i] == 0xFF:
                n = body[i + 2]
                events.append((tick, body[i : i + 3 + n]))
                i += 3 + n
                continue
            status = body[i]
            n = 2 if status >> 4 in (0x8, 0x9, 0xB, 0xE) else 1
            events.append((tick, body[i : i + 1 + n]))
            i += 1 + n
        assert events[-1][1] == b"\xff\x2f\x00"
        tracks.append(events)
    assert pos == len(data)
    return (fmt, ntracks, division), tracks


def test_midi_writer_output_reads_back_as_the_score() -> None:
    score = compose(MusicSpec("playful", 40, seed=21))
    (fmt, ntracks, division), tracks = _read_midi(write_midi(score))
    assert (fmt, ntracks, division) == (1, 5, 480)
    tempo = next(e for _, e in tracks[0] if e[:2] == b"\xff\x51")
    assert int.from_bytes(tempo[3:6], "big") == round(60_000_000 / score.tempo)
    expected = sorted(
        (round((u * score.style.beats + n.beat) * 480), n.pitch, {"pad": 0, "arp": 1, "bass": 2, "drums": 9}[p.role])
        for u, parts in enumerate(score.units)
        for p in parts
        for n in p.notes
    )
    ons = sorted((t, e[1], e[0] & 0x0F) for track in tracks[1:] for t, e in track if e[0] >> 4 == 0x9 and e[2] > 0)
    assert ons == expected
    for track in tracks[1:]:  # every note-on is followed by its note-off
        sounding: dict[tuple[int, int], int] = {}
        for _, e in track:
            if e[0] >> 4 == 0x9:
                sounding[(e[0] & 0x0F, e[1])] = sounding.get((e[0] & 0x0F, e[1]), 0) + 1
            elif e[0] >> 4 == 0x8:
                sounding[(e[0] & 0x0F, e[1])] -= 1
        assert all(v == 0 for v in sounding.values())
    programs = [e[1] for track in tracks[1:4] for _, e in track if e[0] >> 4 == 0xC]
    assert programs == list(score.style.programs)


def test_fluidsynth_renders_the_score_with_a_soundfont() -> None:
    assert shutil.which("fluidsynth") and SOUNDFONT.is_file()  # Debian fluidsynth + timgm6mb-soundfont
    engine = FluidsynthMusic(SOUNDFONT)
    spec = MusicSpec("uplifting", 8.5, seed=4)
    audio = engine.render(spec, 48000)
    assert audio.shape == (round(8.5 * 48000), 2) and audio.dtype == np.float32
    assert 0.8 < float(np.abs(audio).max()) <= 0.9 and _rms(audio) > 0.03
    assert engine.render(spec, 48000).tobytes() == audio.tobytes()
    assert _rms(engine.render(MusicSpec("calm", 8.5, seed=4), 48000) - audio) > 0.05
    assert engine.render(MusicSpec("calm", 0, seed=4)).shape == (0, 2)


def test_build_music_engine(tmp_path: Path) -> None:
    procedural: MusicEngine = build_music_engine(make_settings(tmp_path / "a"))
    assert isinstance(procedural, ProceduralMusic)
    chosen = build_music_engine(make_settings(tmp_path / "b", film_soundfont=SOUNDFONT))
    assert isinstance(chosen, FluidsynthMusic) and chosen.soundfont == SOUNDFONT
    missing = build_music_engine(make_settings(tmp_path / "c", film_soundfont=tmp_path / "none.sf2"))
    assert isinstance(missing, ProceduralMusic)
