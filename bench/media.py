"""Film media engines: music bed render time per mood, and narration speed (real-time factor) per speech engine.

    python -m bench.media                       # 300 s of 48 kHz music per mood; espeak-ng and Piper on 3 texts
    python -m bench.media --seconds 5 --texts 1 # smallest run (tests/e2e/test_bench.py)

Prints wall and CPU seconds; the issue's budget for music is 300 s in well under 3 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from studiolo.engines.music import MOODS, FluidsynthMusic, MusicSpec, ProceduralMusic
from studiolo.engines.speech import SpeechCatalog
from studiolo.engines.speech_espeak import EspeakSpeech
from studiolo.engines.speech_piper import PiperSpeech

TEXTS = [
    "The lighthouse keeper climbed the stairs as the storm rolled in from the west.",
    "Far away, a ship turned its bow toward the harbour, its lights flickering in the rain. "
    "Nobody on the shore saw it yet.",
    "By morning the sea lay quiet. The keeper wrote one line in the log, closed the book, and went down to sleep.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="length of each music bed")
    parser.add_argument("--texts", type=int, default=len(TEXTS), help="narration texts per voice (1-3)")
    parser.add_argument("--soundfont", default="", help="also time FluidsynthMusic with this .sf2")
    args = parser.parse_args()

    engine = ProceduralMusic()
    engine.render(MusicSpec("calm", 1.0, 0))  # imports and first-call costs out of the figures
    for mood in MOODS:
        wall, cpu = time.perf_counter(), time.process_time()
        audio = engine.render(MusicSpec(mood, args.seconds, seed=1))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"music procedural {mood:<11} {args.seconds:.0f} s at 48 kHz: wall {wall:.2f} s, cpu {cpu:.2f} s, "
            f"{args.seconds / wall:.0f}x real time, {audio.nbytes / 2**20:.0f} MiB"
        )
    if args.soundfont:
        wall = time.perf_counter()
        FluidsynthMusic(Path(args.soundfont)).render(MusicSpec("uplifting", args.seconds, 1))
        print(f"music fluidsynth uplifting {args.seconds:.0f} s: wall {time.perf_counter() - wall:.2f} s")

    catalog = SpeechCatalog([EspeakSpeech(), PiperSpeech()])
    for voice in ("espeak:en-us", "piper:en_US-joe-medium"):
        if voice not in {v.id for v in catalog.voices()}:
            print(f"speech {voice}: not installed")
            continue
        wall = time.perf_counter()
        catalog.synthesize("Hello.", voice)
        first = time.perf_counter() - wall
        spoken = made = 0.0
        for text in TEXTS[: max(1, args.texts)]:
            wall = time.perf_counter()
            speech = catalog.synthesize(text, voice)
            made += time.perf_counter() - wall
            spoken += speech.seconds
        print(
            f"speech {voice}: first call {first:.2f} s, {spoken:.1f} s of speech in {made:.2f} s, "
            f"real-time factor {made / spoken:.3f}"
        )


if __name__ == "__main__":
    main()
