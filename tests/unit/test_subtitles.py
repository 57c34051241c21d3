"""Subtitle cues: splitting long sentences, SRT and WebVTT writers validated by parsing their output back."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from studiolo.domain.film.subtitles import Cue, parse_srt, parse_vtt, split_cue, to_srt, to_vtt

CUES = [
    Cue(0.0, 1.5, "Hello there."),
    Cue(1.5, 4.25, "A second line\nwith two lines"),
    Cue(3725.04, 3727.999, "Über café — 東京"),
]


def test_srt_layout_and_round_trip() -> None:
    text = to_srt(CUES)
    assert text.startswith("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n")
    assert "01:02:05,040 --> 01:02:07,999" in text
    assert parse_srt(text) == CUES


def test_vtt_layout_and_round_trip() -> None:
    text = to_vtt(CUES)
    assert text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n")
    assert parse_vtt(text) == CUES


def test_vtt_escapes_markup_and_arrows() -> None:
    cue = Cue(1.0, 2.0, "a < b & c > d --> e")
    text = to_vtt([cue])
    assert "a &lt; b &amp; c &gt; d → e" in text
    assert "-->" not in text.split("\n", 3)[3]  # only on the timing line
    assert parse_vtt(text) == [Cue(1.0, 2.0, "a < b & c > d → e")]


def test_empty_lines_inside_a_cue_are_dropped() -> None:
    # an empty line ends a cue in both formats: written as is, it would cut the cue in two
    cue = Cue(0.0, 1.0, "first\n\n  second  \n")
    assert parse_srt(to_srt([cue])) == [Cue(0.0, 1.0, "first\nsecond")]
    assert parse_vtt(to_vtt([cue])) == [Cue(0.0, 1.0, "first\nsecond")]
    assert to_srt([Cue(0.0, 1.0, " \n ")]) == ""


def test_times_are_rounded_to_milliseconds_and_never_negative() -> None:
    [cue] = parse_srt(to_srt([Cue(-0.2, 1.23456, "x")]))
    assert cue == Cue(0.0, 1.235, "x")


def test_parse_srt_accepts_real_world_variants() -> None:
    text = "\ufeff1\r\n00:00:01,000 --> 00:00:02,000\r\nOne\r\n\r\n\r\n2\r\n00:00:02.500 --> 00:00:03,000\r\nTwo\r\n"
    assert parse_srt(text) == [Cue(1.0, 2.0, "One"), Cue(2.5, 3.0, "Two")]


def test_parse_vtt_skips_notes_styles_ids_and_settings() -> None:
    text = (
        "WEBVTT - a film\n\nNOTE written by hand\n\nSTYLE\n::cue { color: yellow }\n\n"
        "intro\n00:01.000 --> 00:02.000 align:start line:90%\n<v Anna>Hi <b>there</b></v>\n\n"
        "01:00:00.000 --> 01:00:01.000\nBye&nbsp;now\n"
    )
    assert parse_vtt(text) == [Cue(1.0, 2.0, "Hi there"), Cue(3600.0, 3601.0, "Bye\xa0now")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1\nnot a timing\nx\n", "not a cue timing"),
        ("hello\n", "expected a cue number"),
        ("1\n00:00:02,000 --> 00:00:01,000\nx\n", "ends before it starts"),
        ("1\n00:00:01,000 -> 00:00:02,000\nx\n", "line 2: not a cue timing"),
    ],
)
def test_parse_srt_refuses_malformed_files(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_srt(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("00:00:01.000 --> 00:00:02.000\nx\n", "must start with 'WEBVTT'"),
        ("WEBVTTX\n\n00:00:01.000 --> 00:00:02.000\nx\n", "must start with 'WEBVTT'"),
        ("WEBVTT\n\njust text\n", "expected a cue timing"),
        ("WEBVTT\n\n00:00:01,5 --> 00:00:02.000\nx\n", "not a cue timing"),
    ],
)
def test_parse_vtt_refuses_malformed_files(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_vtt(text)


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="<>&-"),
    min_size=1,
    max_size=30,
).filter(lambda s: s.strip() != "")


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000_000), st.integers(0, 100_000), st.lists(_text, min_size=1, max_size=2)),
        max_size=8,
    )
)
def test_round_trip_property(raw: list[tuple[int, int, list[str]]]) -> None:
    cues = [
        Cue(start / 1000, (start + length) / 1000, "\n".join(line.strip() for line in lines))
        for start, length, lines in raw
    ]
    assert parse_srt(to_srt(cues)) == cues
    assert parse_vtt(to_vtt(cues)) == cues


# --------------------------------------------------------------------------- split_cue

LONG = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, counting the steps aloud "
    "so that the ships far out at sea would know that someone was still awake and watching."
)


def test_split_cue_keeps_lines_short_and_time_contiguous() -> None:
    cues = split_cue(10.0, 22.0, LONG)
    assert len(cues) > 1
    for cue in cues:
        lines = cue.text.split("\n")
        assert 1 <= len(lines) <= 2
        assert all(0 < len(line) <= 42 for line in lines)
    assert cues[0].start == 10.0
    assert cues[-1].end == 22.0
    for before, after in itertools.pairwise(cues):
        assert before.end == pytest.approx(after.start)
    assert " ".join(c.text.replace("\n", " ") for c in cues) == LONG


def test_split_cue_shares_time_by_characters() -> None:
    cues = split_cue(0.0, 12.0, LONG)
    total = sum(len(c.text.replace("\n", "")) for c in cues)
    for cue in cues:
        assert cue.end - cue.start == pytest.approx(12.0 * len(cue.text.replace("\n", "")) / total)


def test_split_cue_short_text_is_one_cue() -> None:
    assert split_cue(1.0, 2.0, "  Hello   there  ") == [Cue(1.0, 2.0, "Hello there")]
    assert split_cue(1.0, 2.0, "   ") == []


def test_split_cue_balances_two_lines() -> None:
    [cue] = split_cue(0.0, 3.0, "one two three four five six seven eight nine ten eleven")
    top, bottom = cue.text.split("\n")
    assert abs(len(top) - len(bottom)) <= 6


def test_split_cue_limits_are_parameters() -> None:
    cues = split_cue(0.0, 4.0, "aaa bbb ccc ddd eee fff", max_chars=7, max_lines=1)
    assert [c.text for c in cues] == ["aaa bbb", "ccc ddd", "eee fff"]


def test_split_cue_cuts_words_longer_than_a_line() -> None:
    word = "x" * 100
    cues = split_cue(0.0, 1.0, word)
    assert "".join(c.text.replace("\n", "") for c in cues) == word
    assert all(len(line) <= 42 for c in cues for line in c.text.split("\n"))


def test_split_cue_breaks_cjk_text_between_characters_not_before_punctuation() -> None:
    text = (
        "灯台守は毎晩夕暮れに螺旋階段を登り、海の遠くにいる船に誰かがまだ起きて見守っていることを知らせるために、声に出して段を数えた。"
        * 2
    )
    cues = split_cue(0.0, 10.0, text, max_chars=16)
    lines = [line for c in cues for line in c.text.split("\n")]
    assert all(len(line) <= 16 for line in lines)
    assert "".join(lines) == text  # no spaces added between CJK characters
    assert not any(line[0] in "、。" for line in lines)
