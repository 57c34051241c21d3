"""Caption grammar for the demo world: random scenes, paraphrased captions, and the held-out evaluation split.

Every concept has several words or phrasings so the text encoder learns meanings rather than one fixed
sentence per picture. Some (object, time-or-colour, style) combinations never appear in training: the
blind check (evaluate.py) draws its 40 prompts from exactly those, so a good score means the model composes
concepts it has only seen apart.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from training.demo_model.world import COLORS, LANDSCAPE_MAINS, SETTINGS, SHAPES, STYLES, TIMES, Scene

TIME_WORDS: dict[str, tuple[str, ...]] = {
    "day": ("at noon", "during the day", "in daylight", "on a sunny day", "in the afternoon", "by day"),
    "dusk": ("at dusk", "at sunset", "in the evening", "at twilight", "at sundown"),
    "night": ("at night", "at midnight", "under the stars", "by moonlight", "in the dark night"),
    "dawn": ("at dawn", "at sunrise", "in the early morning", "at daybreak", "in the morning"),
}
MAIN_WORDS: dict[str, tuple[str, ...]] = {
    "lighthouse": ("a lighthouse", "a light house", "a lighthouse tower", "an old lighthouse"),
    "house": ("a house", "a cottage", "a cabin", "a small house", "a little home", "a hut"),
    "mountains": ("mountains", "a mountain range", "snowy peaks", "tall mountains", "a mountain"),
    "sea": ("the sea", "the ocean", "the open sea", "calm sea water"),
    "lake": ("a lake", "a pond", "a quiet lake", "a mountain lake"),
    "hills": ("hills", "rolling hills", "green hills", "a hillside"),
    "trees": ("trees", "a forest", "pine trees", "woods", "a grove of trees"),
}
# How a setting attaches to the main object: "a house" + " by a lake".
SETTING_WORDS: dict[str, tuple[str, ...]] = {
    "sea": ("by the sea", "on the coast", "by the ocean", "at the seaside"),
    "lake": ("by a lake", "near a lake", "beside a pond", "over a lake"),
    "hills": ("in the hills", "on a hill", "among rolling hills"),
    "mountains": ("in the mountains", "below mountains", "with mountains behind"),
    "trees": ("in the forest", "among trees", "in the woods", "surrounded by trees"),
}
COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "tangerine"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "lime"),
    "blue": ("blue", "azure", "navy"),
    "purple": ("purple", "violet", "lilac"),
    "pink": ("pink", "rose", "magenta"),
    "brown": ("brown", "chocolate", "tan"),
    "black": ("black", "jet black", "dark black"),
    "white": ("white", "snow white", "ivory"),
    "gray": ("gray", "grey", "silver"),
    "cyan": ("cyan", "turquoise", "teal"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "dot", "round shape"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "pyramid shape", "triangular shape"),
    "star": ("star", "five pointed star", "starfish shape"),
    "heart": ("heart", "love heart", "heart shape"),
}
STYLE_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("", "", "a picture", "an illustration", "flat colors"),
    "pixel": ("pixel art", "8 bit", "in pixel art style", "pixelated", "retro game art", "16 bit sprite"),
    "watercolor": ("watercolor", "watercolour", "a watercolor painting", "painted in watercolor", "aquarelle"),
    "sketch": ("sketch", "pencil sketch", "a pencil drawing", "line drawing", "drawn in pencil", "charcoal"),
    "neon": ("neon", "neon lights", "synthwave", "glowing neon", "neon glow", "cyberpunk neon"),
}
BACKGROUND_WORDS = ("on a {c} background", "on {c}", "against a {c} backdrop", "over a {c} background")
HOUSE_COLORS = ("red", "yellow", "blue", "white", "green", "pink", "orange", "brown", "purple", "gray")
# How many evaluation combinations stay out of training, roughly one in HOLDOUT_EVERY.
HOLDOUT_EVERY = 9


def combo_key(scene: Scene) -> str:
    """The attribute combination the held-out split is defined on."""
    if scene.kind == "landscape":
        return f"L|{scene.main}|{scene.setting}|{scene.time}|{scene.style}"
    return f"S|{scene.main}|{scene.color}|{scene.style}"


def is_held_out(scene: Scene) -> bool:
    """True for the combinations kept for evaluation (stable across runs and machines: a hash, not a RNG)."""
    digest = hashlib.sha256(combo_key(scene).encode()).digest()
    return digest[0] % HOLDOUT_EVERY == 0


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def random_scene(rng: np.random.Generator) -> Scene:
    """Any scene of the world, held out or not (caller filters)."""
    style = _pick(rng, STYLES)
    if rng.random() < 0.6:
        main = _pick(rng, LANDSCAPE_MAINS)
        color = _pick(rng, HOUSE_COLORS) if main == "house" else "white"
        return Scene("landscape", main, style, _pick(rng, TIMES), _pick(rng, SETTINGS[main]), color)
    color = _pick(rng, list(COLORS))
    background = _pick(rng, [c for c in COLORS if c != color])
    return Scene("shape", _pick(rng, SHAPES), style, color=color, background=background)


# How often a drawn landscape with this main object is kept (the rest are redrawn). Houses come in ten
# colours and trees are small, so at a uniform rate the first run never learned them (blind check: houses
# 0/4); drawing the easy, big objects less often gives the hard ones more of the training budget.
MAIN_KEEP = {"house": 1.0, "trees": 1.0, "lighthouse": 0.6, "mountains": 0.5, "sea": 0.5, "lake": 0.6, "hills": 0.6}


def training_scene(rng: np.random.Generator) -> Scene:
    """A scene from the training split: held-out combinations are redrawn."""
    while True:
        scene = random_scene(rng)
        if is_held_out(scene):
            continue
        if scene.kind == "landscape" and rng.random() > MAIN_KEEP[scene.main]:
            continue
        return scene


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One of many captions of ``scene``: synonyms, word orders and optional parts vary with ``rng``."""
    style = _pick(rng, STYLE_WORDS[scene.style])
    if scene.kind == "landscape":
        subject = _pick(rng, MAIN_WORDS[scene.main])
        if scene.main == "house":
            article, rest = subject.split(" ", 1)
            subject = f"a {_pick(rng, COLOR_WORDS[scene.color])} {rest}"
            del article
        if scene.setting != "none" and rng.random() < 0.85:
            subject = f"{subject} {_pick(rng, SETTING_WORDS[scene.setting])}"
        parts = [subject, _pick(rng, TIME_WORDS[scene.time])]
    else:
        color = _pick(rng, COLOR_WORDS[scene.color])
        subject = f"a {color} {_pick(rng, SHAPE_WORDS[scene.main])}"
        background = _pick(rng, BACKGROUND_WORDS).format(c=_pick(rng, COLOR_WORDS[scene.background]))
        parts = [subject, background]
    text = re.sub(r"\ba ([aeiou])", r"an \1", " ".join(parts))
    if style:
        order = rng.random()
        if order < 0.6:
            text = f"{text}, {style}"
        elif order < 0.85:
            text = f"{style} of {text}" if style.startswith(("a ", "an ")) else f"{style}, {text}"
        else:
            text = f"{text} in {style} style" if not style.startswith(("a ", "an ", "in ")) else f"{text}, {style}"
    return text


def vocabulary() -> list[str]:
    """Every word the grammar can produce, sorted (the text encoder's vocabulary besides special tokens)."""
    phrases: list[str] = ["of", "in", "style", "a", "on", "background"]
    for table in (TIME_WORDS, MAIN_WORDS, SETTING_WORDS, COLOR_WORDS, SHAPE_WORDS, STYLE_WORDS):
        for options in table.values():
            phrases.extend(options)
    phrases.extend(BACKGROUND_WORDS)
    words: set[str] = set()
    for phrase in phrases:
        words.update(w for w in re.split(r"[^a-z0-9]+", phrase.replace("{c}", "").lower()) if w)
    return sorted(words)


def evaluation_prompts(count: int = 40, seed: int = 2026) -> list[tuple[Scene, str]]:
    """``count`` prompts from held-out combinations, half landscapes and half shapes, each combination once."""
    rng = np.random.default_rng(seed)
    chosen: list[tuple[Scene, str]] = []
    seen: set[str] = set()
    want = {"landscape": count // 2, "shape": count - count // 2}
    while any(want.values()):
        scene = random_scene(rng)
        key = combo_key(scene)
        if not is_held_out(scene) or key in seen or want[scene.kind] == 0:
            continue
        seen.add(key)
        want[scene.kind] -= 1
        chosen.append((scene, caption(scene, rng)))
    return chosen
