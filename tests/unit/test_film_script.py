# ruff: noqa: RUF001, E501 -- scripts in other languages, and one-line cases that read best unbroken
"""The film script: words, sentences, podcast lines, the storyboard split and its limits (domain/film/script.py)."""

from __future__ import annotations

import pytest

from studiolo.domain.film.script import (
    MAX_SCENES,
    Line,
    count_words,
    estimate_seconds,
    parse_lines,
    sentences,
    split_script,
    trim_words,
    validate_script,
)
from studiolo.errors import InvalidInput


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ("Wait?! Yes.", ["Wait?!", "Yes."]),
        ("Mr. Smith met Dr. Jones at St. Mary's. They talked.", ["Mr. Smith met Dr. Jones at St. Mary's.", "They talked."]),
        ("Fruit, e.g. apples, i.e. food. Fine.", ["Fruit, e.g. apples, i.e. food.", "Fine."]),
        ("J. R. R. Tolkien wrote it. Done.", ["J. R. R. Tolkien wrote it.", "Done."]),
        ("Pi is 3.14 and e is 2.718. Next.", ["Pi is 3.14 and e is 2.718.", "Next."]),
        ("Well... I think so. I waited... Nobody came.", ["Well... I think so.", "I waited...", "Nobody came."]),
        ("It was… quiet. Then a bang.", ["It was… quiet.", "Then a bang."]),
        ('He said "Go now." Then he left.', ['He said "Go now."', "Then he left."]),
        ("“Really?” she asked. Yes.", ["“Really?” she asked.", "Yes."]),
        ("(This is it.) Next one.", ["(This is it.)", "Next one."]),
        ("We bought pears etc. Then we left. We saw etc. and more.", ["We bought pears etc.", "Then we left.", "We saw etc. and more."]),
        ("See the site example.com for more. Good.", ["See the site example.com for more.", "Good."]),
    ],
)  # fmt: skip
def test_sentences_english(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # French: a space before ! and ?, guillemets, "M." for Monsieur
        ("Il a dit « oui ». M. Dupont est là ! Quoi ?", ["Il a dit « oui ».", "M. Dupont est là !", "Quoi ?"]),
        # German: abbreviations with inner dots, "Nr.", umlauts and ß
        ("Das ist z.B. gut. Nr. 5 kommt. Straße über Brücke.", ["Das ist z.B. gut.", "Nr. 5 kommt.", "Straße über Brücke."]),
        # Japanese: full-width stops need no space after them
        ("東京へ行った。とても楽しかった！本当？", ["東京へ行った。", "とても楽しかった！", "本当？"]),
        # Japanese closing quote stays with its sentence
        ("彼は「行こう。」と言った。はい。", ["彼は「行こう。」", "と言った。", "はい。"]),
        # Chinese
        ("我们走吧。好的！你呢？", ["我们走吧。", "好的！", "你呢？"]),
        # Russian (Cyrillic capitals)
        ("Привет. Как дела?", ["Привет.", "Как дела?"]),
    ],
)  # fmt: skip
def test_sentences_other_languages(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


def test_a_blank_line_ends_a_sentence_and_lines_join() -> None:
    text = "The Title\n\nIt starts\nhere and goes on. Then ends.\r\n\r\nLast"
    assert sentences(text) == ["The Title", "It starts here and goes on.", "Then ends.", "Last"]


def test_count_words() -> None:
    assert count_words("Hello, world — again!") == 3
    assert count_words("It's 3.14 ... ok") == 3
    assert count_words("東京へ行った。") == 6  # each Japanese character one word
    assert count_words("我们走吧 and go") == 6
    assert count_words("Straße über") == 2
    assert count_words(" ... !!! — ?") == 0
    assert count_words("") == 0


def test_parse_lines_podcast_speakers_and_continuations() -> None:
    text = (
        "Narrated opening.\n"
        "ALICE: Hi there.\n"
        "This continues Alice.\n"
        "Dr. Bob Jr.: Hello!\n"
        "\n"
        "more from bob\n"
        "10:30 is no speaker\n"
        "alice_2: short\n"
        "EMPTY:\n"
    )
    assert parse_lines(text, podcast=True) == [
        Line(None, "Narrated opening."),
        Line("ALICE", "Hi there. This continues Alice."),
        Line("Dr. Bob Jr.", "Hello!"),
        Line("Dr. Bob Jr.", "more from bob 10:30 is no speaker"),
        Line("alice_2", "short EMPTY:"),
    ]


def test_parse_lines_podcast_full_width_colon_and_long_names() -> None:
    assert parse_lines("太郎：こんにちは。", podcast=True) == [Line("太郎", "こんにちは。")]
    name = "N" * 41  # longer than 40 characters: no speaker, a narrated line
    assert parse_lines(f"{name}: text", podcast=True) == [Line(None, f"{name}: text")]


def test_parse_lines_not_podcast_is_paragraphs() -> None:
    text = "ALICE: not a speaker here.\nSame paragraph.\n\nSecond   one."
    assert parse_lines(text, podcast=False) == [
        Line(None, "ALICE: not a speaker here. Same paragraph."),
        Line(None, "Second one."),
    ]


def test_estimate_seconds() -> None:
    words = " ".join(["word"] * 150)
    assert estimate_seconds(words) == 60.0
    assert estimate_seconds(words, speed=2.0) == 30.0
    assert estimate_seconds(words, words_per_minute=300) == 30.0
    assert estimate_seconds("Hi.") == 1.0  # at least a second
    assert estimate_seconds("...") == 0.0
    assert estimate_seconds("字" * 150) == 30.0  # characters are spoken twice as fast as words


def _script(sentence_count: int, words_each: int = 8) -> str:
    return " ".join(f"Sentence {i} " + " ".join(["word"] * (words_each - 2)) + "." for i in range(sentence_count))


def test_split_groups_toward_the_target() -> None:
    script = _script(20)  # 160 words, about 64 s of speech
    scenes = split_script(script, target_seconds=60, podcast=False)
    assert 8 <= len(scenes) <= 12
    # no sentence is split: every scene is whole sentences, and together they are the script
    assert " ".join(s.text for s in scenes) == script
    for s in scenes:
        assert s.text.endswith(".")
        assert 3.0 <= s.planned_seconds <= 12.0
    assert sum(s.planned_seconds for s in scenes) == pytest.approx(estimate_seconds(script), abs=2.0)


def test_split_a_short_script_makes_fewer_longer_scenes() -> None:
    scenes = split_script("One short line. Another one here. And a third.", target_seconds=300, podcast=False)
    assert 1 <= len(scenes) <= 3
    assert split_script("Only one.", target_seconds=60, podcast=False)[0].text == "Only one."


def test_split_prefers_paragraph_breaks() -> None:
    para = " ".join(["word"] * 12) + "."
    scenes = split_script(f"{para}\n\n{para}\n\n{para}", target_seconds=60, podcast=False)
    assert [s.text for s in scenes] == [para, para, para]


def test_split_never_merges_speakers() -> None:
    script = "ALICE: Hi.\nBOB: Hello.\nALICE: Bye.\nALICE: Really bye.\nBOB: Ok."
    scenes = split_script(script, target_seconds=60, podcast=True)
    assert [s.text for s in scenes] == ["ALICE: Hi.", "BOB: Hello.", "ALICE: Bye.\nALICE: Really bye.", "BOB: Ok."]
    assert [s.prompt for s in scenes] == ["Hi.", "Hello.", "Bye. Really bye.", "Ok."]


def test_split_at_most_sixty_scenes() -> None:
    long = _script(500)  # 4,000 words
    scenes = split_script(long, target_seconds=300, podcast=False)
    assert len(scenes) <= MAX_SCENES
    assert " ".join(s.text for s in scenes) == long
    turns = "\n".join(f"{'ALICE' if i % 2 else 'BOB'}: Line number {i} here." for i in range(150))
    podcast = split_script(turns, target_seconds=300, podcast=True)
    assert len(podcast) <= MAX_SCENES
    assert "\n".join(s.text for s in podcast) == turns  # turns share scenes, each still its own "NAME:" line


def test_split_prompt_is_trimmed_to_sixty_words() -> None:
    sentence = " ".join(["word"] * 80) + "."
    scene = split_script(sentence, target_seconds=60, podcast=False)[0]
    assert scene.text == sentence
    assert count_words(scene.prompt) == 60
    assert trim_words("字" * 100, 60) == "字" * 60
    assert trim_words("a b c", 2) == "a b"


def test_split_japanese() -> None:
    script = "東京へ行った。とても楽しかった！また行きたいです。"
    scenes = split_script(script, target_seconds=60, podcast=False)
    assert "".join(s.text.replace(" ", "") for s in scenes) == script
    assert split_script("!!! ...", target_seconds=60, podcast=False) == []


def test_validate_script() -> None:
    validate_script("One word", max_words=500)
    for empty in ("", "   \n\t", "... !!! — ?!", "「」。、"):
        with pytest.raises(InvalidInput) as exc:
            validate_script(empty, max_words=500)
        assert exc.value.code == "empty_script"
    with pytest.raises(InvalidInput) as exc:
        validate_script(" ".join(["word"] * 5000), max_words=500)
    assert exc.value.code == "script_too_long"
    assert exc.value.details["words"] == 5000 and exc.value.details["max_words"] == 500
    validate_script(" ".join(["word"] * 500), max_words=500)  # exactly the limit is allowed
