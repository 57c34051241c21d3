"""What a vision model is asked per template, and the image prompt made from a description (any describer's)."""

from __future__ import annotations

from typing import Final

from studiolo.domain.understanding.schemas import PhotoDescription

# Built-in style slugs (generation/styles.py) a describer may suggest, and the one each template falls back to.
STYLE_CHOICES: Final = (
    "photorealistic",
    "cinematic",
    "ghibli",
    "anime",
    "comic",
    "pixel-art",
    "cyberpunk",
    "3d-render",
    "oil-painting",
    "watercolor",
    "pencil-sketch",
    "fantasy",
    "minimalist",
    "vaporwave",
)
DEFAULT_STYLE: Final = {"character": "fantasy", "fursona": "anime", "portrait": "photorealistic", "scene": "cinematic"}
NEGATIVE: Final = "blurry, low quality, deformed, extra limbs, bad anatomy, text, watermark, signature"

TASKS: Final = {
    "character": "Describe the person or creature in this photo as an original character for a character design: "
    "keep their look (hair, colours, build, clothing) and give them a fitting archetype.",
    "fursona": "Reimagine the person or animal in this photo as a fursona: an anthropomorphic animal character. "
    "Choose the species that fits them best and carry their colours, features and clothing over to fur and outfit.",
    "portrait": "Describe the person in this photo for a portrait: face, hair, expression, clothing and light.",
    "scene": "Describe the scene in this photo: the place, the main subjects, the light and the atmosphere.",
    "custom": "Describe this photo following the user's instruction.",
}
SCHEMA: Final = (
    '{"subject": "who or what, a few words", "species": "an animal species or empty", '
    '"archetype": "a character archetype or empty", '
    '"colors": [{"name": "everyday colour name", "hex": "#rrggbb"}], "features": ["distinctive feature"], '
    '"clothing": ["clothing or accessory"], "mood": "a few words", "setting": "a few words", '
    '"prompt": "a text-to-image prompt of at most 60 words", "style": "one of: ' + ", ".join(STYLE_CHOICES) + '"}'
)


def system_prompt(template: str, instruction: str) -> str:
    """The instruction a vision model gets: its task for the template, and the JSON object to answer with."""
    task = TASKS.get(template, TASKS["custom"])
    extra = f"\nThe user's instruction: {instruction.strip()}" if instruction.strip() else ""
    return (
        f"{task}{extra}\nDescribe only what is visible; never guess a real person's identity or name. Answer with one "
        f"JSON object and nothing else, with exactly these keys (empty string or [] when not applicable):\n{SCHEMA}"
    )


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def build_prompt(d: PhotoDescription, template: str, instruction: str, max_chars: int) -> str:
    """An image prompt from the description's fields, led by the template's kind of picture."""
    subject = d.subject or {"scene": "a scene", "portrait": "a person"}.get(template, "a character")
    if template == "fursona":
        lead = f"anthropomorphic {d.species or 'animal'} fursona character" + (
            f", based on {d.subject}" if d.subject else ""
        )
    elif template == "character":
        lead = f"full-body character design of {subject}" + (f", {d.archetype}" if d.archetype else "")
    elif template == "portrait":
        lead = f"portrait of {subject}"
    elif template == "scene":
        lead = d.setting or subject
    else:
        lead = f"{instruction.strip()}, {subject}" if instruction.strip() else subject
    parts = [lead, *d.features[:6]]
    if d.clothing:
        parts.append("wearing " + _join(d.clothing[:4]))
    # A character's colours are its own, not the wall behind it: the subject's palette where the describer measured
    # one (offline), the whole photo's for a scene or when only that is known.
    palette = d.subject_colors if d.subject_colors and template != "scene" else d.colors
    colours = [c.name for c in palette[:3] if c.name and not c.name.startswith("#")]
    if colours:
        parts.append(("fur colours " if template == "fursona" else "colour palette of ") + _join(colours))
    if d.mood:
        parts.append(f"{d.mood} mood")
    if d.setting and template != "scene":
        parts.append(d.setting)
    parts.append("highly detailed")
    prompt = ", ".join(p.strip() for p in parts if p.strip())
    return prompt[:max_chars].rstrip(", ")


def pick_style(suggestion: str, template: str) -> str | None:
    """The model's suggested style when it is a built-in slug, else the template's default (None for custom)."""
    slug = suggestion.strip().lower().replace(" ", "-")
    return slug if slug in STYLE_CHOICES else DEFAULT_STYLE.get(template)
