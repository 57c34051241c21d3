"""The validator repairs what models really send and rejects the rest; prompts built from descriptions."""

from __future__ import annotations

import pytest

from studiolo.domain.understanding.colors import name_of, parse_hex
from studiolo.domain.understanding.ports import DescriberInvalidReply
from studiolo.domain.understanding.prompts import build_prompt, pick_style, system_prompt
from studiolo.domain.understanding.schemas import Colour, PhotoDescription
from studiolo.domain.understanding.validate import normalize, parse_reply
from studiolo.errors import InvalidInput


@pytest.mark.parametrize(
    "text",
    [
        '{"subject": "a fox"}',
        'Sure! Here it is:\n```json\n{"subject": "a fox"}\n```\nAnything else?',
        'The answer: {"subject": "a fox",} -- done',
        "{'subject': 'a fox', 'features': ['red fur',], 'extra': None}",
    ],
)
def test_json_is_found_and_repaired(text: str) -> None:
    assert parse_reply(text)["subject"] == "a fox"


def test_prose_without_json_is_an_invalid_reply() -> None:
    with pytest.raises(DescriberInvalidReply) as caught:
        parse_reply("A person in a forest wearing a jacket.")
    assert caught.value.status_code == 502 and caught.value.code == "describer_invalid_reply"


@pytest.mark.parametrize(
    "text", ["I'm sorry, but I can't help with that.", '{"refusal": "I cannot describe real people."}']
)
def test_refusals_are_told_apart(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_reply(text)
    assert caught.value.code == "describe_refused" and caught.value.details["reason"]


def test_normalize_coerces_fields_and_repairs_colours() -> None:
    d = normalize(
        {
            "Subject": "  a  knight ",
            "animal": "wolf",
            "colours": ["rust", "#ABC", {"name": "ochre", "hex": "nothex"}, {"color": "teal", "share": 3}, 7],
            "features": "scar over the eye; grey beard",
            "clothing": ["plate armour", None, ""],
            "mood": ["stern", "tired"],
        }
    )
    assert d.subject == "a knight" and d.species == "wolf"
    assert d.features == ["scar over the eye", "grey beard"] and d.clothing == ["plate armour"]
    assert d.mood == "stern, tired"
    by_name = {c.name: c for c in d.colors}
    assert by_name["rust"].hex == "#b7410e"  # from the name
    bare = next(c for c in d.colors if c.hex == "#aabbcc")  # a bare hex, expanded, named
    assert bare.name == "silver"
    assert by_name["ochre"].hex is None  # an unknown name with a broken hex keeps its name only
    assert by_name["teal"].share is None  # an impossible share is dropped, not passed on
    assert len(d.colors) == 4  # the number 7 is no colour: dropped, not a crash


def test_normalize_without_subject_is_rejected() -> None:
    with pytest.raises(DescriberInvalidReply):
        normalize({"mood": "calm"})


def test_colour_names_and_hex() -> None:
    assert name_of((250, 250, 250)) == "white" and name_of((10, 120, 125)) == "teal"
    assert parse_hex("#0a0B0c") == (10, 11, 12) and parse_hex("teal") is None


def test_prompt_per_template() -> None:
    d = PhotoDescription(
        subject="a man with a beard",
        species="bear",
        colors=[Colour(name="brown", hex="#784828"), Colour(name="cream")],
        features=["round glasses"],
        clothing=["flannel shirt", "beanie"],
        mood="friendly",
        setting="a cabin",
    )
    fursona = build_prompt(d, "fursona", "", 2000)
    assert fursona.startswith("anthropomorphic bear fursona character")
    assert "wearing flannel shirt and beanie" in fursona and "fur colours brown and cream" in fursona
    assert build_prompt(d, "scene", "", 2000).startswith("a cabin")
    # Measured subject colours (offline) lead a character's colours; a scene keeps the whole photo's.
    d.subject_colors = [Colour(name="rust")]
    assert "fur colours rust," in build_prompt(d, "fursona", "", 2000)
    assert "colour palette of brown and cream" in build_prompt(d, "scene", "", 2000)
    assert build_prompt(d, "custom", "as a pirate captain", 2000).startswith("as a pirate captain, a man")
    assert len(build_prompt(d, "character", "", 30)) <= 30
    # Nothing known (an offline description of a photo without faces): still a usable prompt.
    assert build_prompt(PhotoDescription(), "character", "", 2000).startswith(
        "full-body character design of a character"
    )


def test_style_and_system_prompt() -> None:
    assert pick_style("Watercolor", "portrait") == "watercolor"
    assert pick_style("baroque", "portrait") == "photorealistic" and pick_style("", "custom") is None
    text = system_prompt("custom", "make them a robot")
    assert "make them a robot" in text and '"subject"' in text and "never guess a real person's identity" in text
