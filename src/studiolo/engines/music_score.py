"""The composition behind a music bed: moods, their styles, and the seeded score both music engines play.

A score is a list of chord units (one chord each, 4 or 8 beats); each unit holds the parts that sound in it (pad,
arpeggio, bass, drums). Parts are immutable and repeat (a 4-chord progression comes back every few units), so the
procedural synthesiser renders each distinct part once and the MIDI writer simply writes them all out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from studiolo.errors import InvalidInput

MOODS: tuple[str, ...] = ("calm", "uplifting", "dramatic", "mysterious", "playful", "melancholic", "epic")
MIN_TEMPO, MAX_TEMPO = 40, 240
MAX_SECONDS = 3600.0

# General MIDI drum notes (channel 10)
KICK, SNARE, HAT, TOM = 36, 38, 42, 45

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)


@dataclass(frozen=True)
class MusicSpec:
    mood: str
    seconds: float
    seed: int
    tempo: int | None = None  # BPM; None: the mood's


@dataclass(frozen=True)
class Style:
    tempo: int
    minor: bool
    progressions: tuple[tuple[int, ...], ...]  # scale degrees, 0 = the tonic chord
    beats: int  # beats per chord
    sevenths: bool
    arp_step: float  # beats between arpeggio notes
    arp_timbre: str  # "pluck" | "bell" | "soft"
    arp_octave: int  # octaves above the pad
    arp_rest: float  # share of arpeggio steps left silent
    bass: str  # "hold" | "beats" | "eighths"
    drums: str  # "none" | "tick" | "soft" | "pop" | "bounce" | "halftime" | "epic"
    pad_attack: float  # seconds
    brightness: float  # 0..1: how many harmonics pass the pads' low-pass
    reverb: float  # send level
    reverb_seconds: float
    programs: tuple[int, int, int]  # General MIDI programs of pad, arpeggio, bass (the fluidsynth engine)


STYLES: dict[str, Style] = {
    "calm": Style(72, False, ((0, 4, 5, 3), (0, 3, 0, 4), (5, 3, 0, 4)), 8, True, 1.0, "bell", 1, 0.15,
                  "hold", "none", 1.5, 0.3, 0.45, 2.8, (89, 11, 32)),
    "uplifting": Style(116, False, ((0, 4, 5, 3), (3, 0, 4, 5), (0, 5, 3, 4)), 4, False, 0.5, "pluck", 1, 0.0,
                       "eighths", "pop", 0.4, 0.6, 0.3, 1.8, (88, 46, 33)),
    "dramatic": Style(84, True, ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 4)), 4, False, 0.5, "soft", 0, 0.0,
                      "beats", "halftime", 0.6, 0.5, 0.4, 2.5, (48, 45, 43)),
    "mysterious": Style(64, True, ((0, 5, 3, 4), (0, 1, 0, 6), (0, 3, 5, 4)), 8, True, 1.0, "bell", 1, 0.4,
                        "hold", "tick", 2.0, 0.25, 0.55, 3.2, (94, 10, 32)),
    "playful": Style(126, False, ((0, 5, 3, 4), (0, 3, 4, 3), (0, 1, 4, 0)), 4, False, 0.25, "pluck", 1, 0.1,
                     "beats", "bounce", 0.15, 0.7, 0.2, 1.2, (89, 12, 33)),
    "melancholic": Style(70, True, ((0, 5, 3, 4), (0, 3, 6, 2), (5, 3, 0, 4)), 8, True, 0.5, "soft", 1, 0.1,
                         "hold", "soft", 1.2, 0.35, 0.45, 2.6, (89, 0, 32)),
    "epic": Style(96, True, ((0, 5, 2, 6), (0, 6, 5, 6), (0, 5, 6, 4)), 4, False, 0.5, "pluck", 0, 0.0,
                  "eighths", "epic", 0.5, 0.65, 0.45, 2.8, (48, 45, 43)),
}  # fmt: skip


@dataclass(frozen=True)
class Note:
    beat: float  # from the start of its unit
    beats: float  # length
    pitch: int  # MIDI note (drums: the General MIDI drum)
    velocity: float  # 0..1


@dataclass(frozen=True)
class Part:
    role: str  # "pad" | "arp" | "bass" | "drums"
    notes: tuple[Note, ...]


@dataclass(frozen=True)
class Score:
    mood: str
    style: Style
    tempo: int
    units: tuple[tuple[Part, ...], ...]  # the parts sounding in each chord unit, in order

    @property
    def unit_seconds(self) -> float:
        return self.style.beats * 60.0 / self.tempo


def validate(spec: MusicSpec) -> None:
    if spec.mood not in STYLES:
        raise InvalidInput(
            f"There is no music mood {spec.mood!r}.",
            code="unknown_music",
            details={"music": spec.mood, "moods": list(MOODS)},
        )
    if not 0 <= spec.seconds <= MAX_SECONDS or not math.isfinite(spec.seconds):
        raise InvalidInput(f"Music lasts 0 to {MAX_SECONDS:.0f} seconds (got {spec.seconds}).", code="invalid_input")
    if spec.tempo is not None and not MIN_TEMPO <= spec.tempo <= MAX_TEMPO:
        raise InvalidInput(f"Tempo is {MIN_TEMPO} to {MAX_TEMPO} BPM (got {spec.tempo}).", code="invalid_input")


def rng_for(spec: MusicSpec, stream: int) -> np.random.Generator:
    """A generator for one purpose (0: the score, 1: the synthesiser's noise) of one spec's seed and mood."""
    return np.random.default_rng([spec.seed & (2**64 - 1), MOODS.index(spec.mood), stream])


def _chord(scale: tuple[int, ...], degree: int, sevenths: bool) -> list[int]:
    """Semitones above the tonic of the chord on ``degree`` (stacked thirds of the scale)."""
    steps = (0, 2, 4, 6) if sevenths else (0, 2, 4)
    return [scale[(degree + s) % 7] + 12 * ((degree + s) // 7) for s in steps]


def _voice(semitones: list[int], tonic: int, center: int = 62) -> tuple[int, ...]:
    """The chord's notes, each moved by octaves next to ``center`` (close voicing, smooth from chord to chord)."""
    notes = []
    for s in semitones:
        p = tonic + s
        p += 12 * round((center - p) / 12)
        notes.append(p)
    return tuple(sorted(set(notes)))


def _arp(chord: tuple[int, ...], style: Style, order: str, rng: np.random.Generator) -> Part:
    tones = [p + 12 * style.arp_octave for p in chord] + [p + 12 * (style.arp_octave + 1) for p in chord]
    if order == "down":
        tones = tones[::-1]
    elif order == "updown":
        tones = tones + tones[-2:0:-1]
    elif order == "broken":
        tones = [t for pair in zip(tones[0::2], tones[1::2], strict=False) for t in pair[::-1]]
    steps = round(style.beats / style.arp_step)
    notes = []
    for k in range(steps):
        if k and rng.random() < style.arp_rest:
            continue
        accent = 1.0 if (k * style.arp_step) % 1 == 0 else 0.8
        velocity = float(np.clip(accent * (0.75 + 0.15 * rng.random()), 0.0, 1.0))
        notes.append(Note(k * style.arp_step, style.arp_step * 1.6, tones[k % len(tones)], round(velocity, 3)))
    return Part("arp", tuple(notes))


def _bass(root: int, style: Style) -> Part:
    pitch = 36 + (root - 36) % 12
    if style.bass == "hold":
        return Part("bass", (Note(0.0, float(style.beats), pitch, 0.8),))
    step = 1.0 if style.bass == "beats" else 0.5
    count = round(style.beats / step)
    return Part(
        "bass", tuple(Note(k * step, step * 0.9, pitch, 0.85 if k * step % 2 == 0 else 0.7) for k in range(count))
    )


_DRUM_PATTERNS: dict[str, dict[int, tuple[float, ...]]] = {
    # drum -> beats (of a 4-beat bar) where it hits
    "tick": {HAT: (0.5, 1.5, 2.5, 3.5)},
    "soft": {KICK: (0.0,), HAT: (1.0, 2.0, 3.0)},
    "pop": {KICK: (0.0, 2.0, 2.5), SNARE: (1.0, 3.0), HAT: tuple(k / 2 for k in range(8))},
    "bounce": {KICK: (0.0, 1.5, 2.0), SNARE: (1.0, 3.0), HAT: tuple(k / 4 for k in range(16))},
    "halftime": {KICK: (0.0, 0.75), SNARE: (2.0,), HAT: (0.0, 1.0, 2.0, 3.0)},
    "epic": {KICK: (0.0, 0.75, 2.0), SNARE: (1.0, 3.0), HAT: tuple(k / 2 for k in range(8))},
}
_DRUM_LEVELS = {"tick": 0.35, "soft": 0.55, "pop": 0.9, "bounce": 0.8, "halftime": 0.95, "epic": 1.0}


def _drums(style: Style, fill: bool, rng: np.random.Generator) -> Part:
    pattern = _DRUM_PATTERNS[style.drums]
    level = _DRUM_LEVELS[style.drums]
    notes = []
    for bar in range(style.beats // 4):
        last = fill and bar == style.beats // 4 - 1 and style.drums not in ("tick", "soft")  # quiet beds: no fills
        for drum, beats in pattern.items():
            for b in beats:
                if last and b >= 3.0 and drum != HAT:
                    continue
                v = level * (0.85 + 0.15 * rng.random()) * (1.0 if b % 1 == 0 else 0.75)
                notes.append(Note(bar * 4 + b, 0.25, drum, round(float(v), 3)))
        if last:  # a fill into the next section: toms on the last beat (snares where the style has no toms)
            drum = TOM if style.drums in ("epic", "halftime") else SNARE
            for k in range(4):
                notes.append(Note(bar * 4 + 3.0 + k / 4, 0.25, drum, round(level * (0.6 + 0.1 * k), 3)))
    return Part("drums", tuple(sorted(notes, key=lambda n: (n.beat, n.pitch))))


def compose(spec: MusicSpec) -> Score:
    """The seeded score of ``spec``: the same spec always gives the same score."""
    validate(spec)
    style = STYLES[spec.mood]
    tempo = spec.tempo or style.tempo
    rng = rng_for(spec, 0)
    scale = _MINOR if style.minor else _MAJOR
    tonic = 55 + int(rng.integers(0, 12))  # the key: G3..F#4
    picks = rng.permutation(len(style.progressions))
    orders = ("up", "updown", "down", "broken")
    sections = []
    for prog_index in (int(picks[0]), int(picks[1])):
        order = orders[int(rng.integers(0, len(orders)))]
        chords = []
        for degree in style.progressions[prog_index]:
            semis = _chord(scale, degree, style.sevenths)
            voiced = _voice(semis, tonic)
            pad = Part("pad", tuple(Note(0.0, float(style.beats), p, 0.7) for p in voiced))
            chords.append((pad, _arp(voiced, style, order, rng), _bass(tonic + semis[0], style)))
        sections.append(chords)
    drums = (_drums(style, False, rng), _drums(style, True, rng)) if style.drums != "none" else None

    unit_seconds = style.beats * 60.0 / tempo
    count = max(1, math.ceil(spec.seconds / unit_seconds))
    per_section = len(sections[0]) * (1 if style.beats >= 8 else 2)
    units: list[tuple[Part, ...]] = []
    for u in range(count):
        section = u // per_section
        pad, arp, bass = sections[1 if section % 3 == 2 else 0][u % len(sections[0])]
        parts = [pad]
        if u >= 1 or count <= 2:
            parts += [arp, bass]
        breakdown = per_section * 2 <= u % (per_section * 4) < per_section * 2 + 2
        if drums is not None and u >= 2 and u < count - 1 and not breakdown:
            end_of_section = (u + 1) % per_section == 0 and u + 1 < count - 1
            parts.append(drums[1] if end_of_section else drums[0])
        units.append(tuple(parts))
    return Score(spec.mood, style, tempo, tuple(units))
