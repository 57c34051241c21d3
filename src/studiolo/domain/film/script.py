# ruff: noqa: RUF001, RUF002 -- full-width punctuation and typographic quotes are what this module is about
"""A film's script as text: words, sentences, podcast lines, and the storyboard split into scenes (pure functions).

The split is rule-based and language-aware enough for the scripts people write: sentences end at . ! ? … and the
full-width 。！？ (closing quotes and brackets stay with their sentence), but not after an abbreviation ("Dr.",
"e.g.", "z.B."), an initial ("J. R. R. Tolkien"), inside a number (3.14) or at an ellipsis the sentence goes on
after ("Well... maybe"). Chinese and Japanese have no spaces: each of their characters counts as one word.
Tests: tests/unit/test_film_script.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from studiolo.errors import InvalidInput

# Sentence ends. The Latin ones end a sentence only before whitespace (or the end); the full-width ones always.
_LATIN_ENDS = frozenset(".!?…")
_WIDE_ENDS = frozenset("。！？")
_CLOSERS = frozenset("\"'”’»)]}」』）】〉》›")
# Abbreviations (lower case, without their last dot) after which a "." never ends a sentence.
_ABBREVIATIONS = frozenset(
    {
        # English titles and common short forms
        "mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "mt", "lt", "col", "gen", "capt", "sgt", "rev", "hon",
        "e.g", "i.e", "vs", "cf", "approx", "no", "nos", "fig", "vol", "ch", "p", "pp", "ca", "al",
        "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
        # French, German, Spanish, Italian
        "m", "mme", "mlle", "mm", "z.b", "d.h", "u.a", "bzw", "nr", "hr", "fr", "sra", "srta", "sig", "dott",
    }
)  # fmt: skip
# Abbreviations that end a sentence when a capital letter follows ("..., pears etc. Then we left.").
_SOFT_ABBREVIATIONS = frozenset({"etc", "usw", "usf", "ecc"})

MAX_SCENES = 60
MIN_SCENE_SECONDS = 4.0
MAX_SCENE_SECONDS = 8.0
SECONDS_PER_SCENE = 6.0  # a target duration asks for about this many seconds of speech per scene
PROMPT_MAX_WORDS = 60
# Chinese/Japanese characters are spoken at about twice the rate of English words (characters per minute ~ 2x wpm).
_CJK_WORD_WEIGHT = 0.5

_SPEAKER = re.compile(r"^(?P<name>[^\W_][\w .\-]{0,39}?)\s*[:：]\s*(?P<text>.*)$")
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")


def _is_cjk(ch: str) -> bool:
    """Han, Hiragana, Katakana (and their compatibility/extension blocks): written without spaces between words."""
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # Hiragana, Katakana
        or 0x31F0 <= code <= 0x31FF  # Katakana phonetic extensions
        or 0x3400 <= code <= 0x4DBF  # CJK extension A
        or 0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0xF900 <= code <= 0xFAFF  # CJK compatibility ideographs
        or 0xFF66 <= code <= 0xFF9F  # half-width Katakana
        or 0x20000 <= code <= 0x2FA1F  # CJK extensions B..F, compatibility supplement
    )


def _token_words(token: str) -> tuple[int, int]:
    """(CJK characters, other words) in one whitespace-free token."""
    cjk = sum(1 for ch in token if _is_cjk(ch))
    rest = "".join(" " if _is_cjk(ch) else ch for ch in token)
    other = sum(1 for part in rest.split() if any(ch.isalnum() for ch in part))
    return cjk, other


def count_words(text: str) -> int:
    """Words in ``text``: runs of letters/digits between spaces, and each Chinese/Japanese character; punctuation
    alone is no word."""
    total = 0
    for token in text.split():
        cjk, other = _token_words(token)
        total += cjk + other
    return total


def _spoken_units(text: str) -> float:
    units = 0.0
    for token in text.split():
        cjk, other = _token_words(token)
        units += cjk * _CJK_WORD_WEIGHT + other
    return units


def _word_before(text: str, end: int) -> str:
    """The token that ends at ``end`` (exclusive), from the last whitespace or opening bracket/quote."""
    start = end
    while start > 0 and not text[start - 1].isspace() and text[start - 1] not in "([{\"'“‘«„":
        start -= 1
    return text[start:end]


def _next_visible(text: str, pos: int) -> str:
    while pos < len(text) and (text[pos].isspace() or text[pos] in "\"'“‘«„(["):
        pos += 1
    return text[pos] if pos < len(text) else ""


def _ends_here(text: str, run_start: int, run_end: int, after: int) -> bool:
    """Whether the terminator run ``text[run_start:run_end]`` (closers up to ``after``) ends a sentence."""
    run = text[run_start:run_end]
    if any(ch in _WIDE_ENDS for ch in run):
        return True
    if after < len(text) and not text[after].isspace():
        return False  # 3.14, e.g.x, "end.Next" (no space: not a sentence end we can trust)
    following = _next_visible(text, after)
    if following == "":
        return True
    if following.islower():
        return False  # "Well... maybe", "e.g. apples", "“Really?” she asked."
    if run in ("...", "…") and re.match(r"I\b(?!\.)", text[after:].lstrip(" \"'“‘«„([")):
        return False  # "Well... I think so": the pronoun I is no new sentence's capital
    if run == ".":
        word = _word_before(text, run_start)
        bare = word.lower()
        if bare in _ABBREVIATIONS:
            return False
        if len(word) == 1 and word.isupper():
            return False  # an initial: "J. R. R. Tolkien"
        if bare in _SOFT_ABBREVIATIONS:
            return following.isupper()
    return True


def _paragraph_sentences(paragraph: str) -> list[str]:
    text = " ".join(paragraph.split())
    out: list[str] = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in _LATIN_ENDS or ch in _WIDE_ENDS:
            run_start = i
            while i < n and (text[i] in _LATIN_ENDS or text[i] in _WIDE_ENDS):
                i += 1
            run_end = i
            while i < n and text[i] in _CLOSERS:
                i += 1
            if _ends_here(text, run_start, run_end, i):
                sentence = text[start:i].strip()
                if sentence:
                    out.append(sentence)
                start = i
            continue
        i += 1
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def _paragraphs(text: str) -> list[str]:
    return [p for p in (part.strip() for part in _PARAGRAPH.split(text.replace("\r\n", "\n"))) if p]


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, in order, whitespace collapsed. A blank line always ends a sentence (a title or a
    line without a final stop is a sentence of its own)."""
    out: list[str] = []
    for paragraph in _paragraphs(text):
        out.extend(_paragraph_sentences(paragraph))
    return out


@dataclass(frozen=True)
class Line:
    speaker: str | None  # podcast mode: the NAME of "NAME: text"; None otherwise
    text: str


def _speaker_of(line: str) -> tuple[str, str] | None:
    match = _SPEAKER.match(line)
    if match is None:
        return None
    name = " ".join(match["name"].split())
    said = match["text"].strip()
    if not any(ch.isalpha() for ch in name) or not said:
        return None  # "10:30 we met" is no speaker, nor a "NAME:" with nothing said
    return name, said


def parse_lines(text: str, *, podcast: bool) -> list[Line]:
    """Podcast: each "NAME: text" line starts a line of that speaker (NAME 1-40 letters, digits, spaces, ._-);
    a line without one continues the previous speaker's line (a blank line before it: a new line of that speaker;
    before any speaker: the narrator, None). Otherwise one Line(None, text) per paragraph."""
    if not podcast:
        return [Line(None, " ".join(p.split())) for p in _paragraphs(text)]
    lines: list[Line] = []
    current: tuple[str | None, list[str]] | None = None
    speaker: str | None = None
    for raw in text.replace("\r\n", "\n").split("\n"):
        stripped = raw.strip()
        if not stripped:
            if current is not None:
                lines.append(Line(current[0], " ".join(current[1])))
                current = None
            continue
        found = _speaker_of(stripped)
        if found is not None:
            if current is not None:
                lines.append(Line(current[0], " ".join(current[1])))
            speaker = found[0]
            current = (speaker, [found[1]])
        elif current is not None:
            current[1].append(stripped)
        else:
            current = (speaker, [stripped])
    if current is not None:
        lines.append(Line(current[0], " ".join(current[1])))
    return [Line(line.speaker, " ".join(line.text.split())) for line in lines if line.text.strip()]


@dataclass(frozen=True)
class SceneDraft:
    text: str  # the scene's narration (podcast: its "NAME: text" lines joined by "\n")
    prompt: str  # the image prompt: the scene's text without speaker names, trimmed to <= 60 words
    planned_seconds: float


def estimate_seconds(text: str, *, speed: float = 1.0, words_per_minute: float = 150.0) -> float:
    """Seconds to speak ``text`` at ``words_per_minute`` times ``speed`` (a Chinese/Japanese character counts half a
    word: they are spoken about twice as fast); at least 1 s for any text with a word, 0 for none."""
    units = _spoken_units(text)
    if units <= 0:
        return 0.0
    return round(max(1.0, units * 60.0 / (words_per_minute * speed)), 2)


def trim_words(text: str, max_words: int) -> str:
    """``text`` cut after ``max_words`` words (as count_words counts them)."""
    out: list[str] = []
    used = 0
    for token in text.split():
        cjk, other = _token_words(token)
        if used + cjk + other <= max_words:
            out.append(token)
            used += cjk + other
            continue
        if cjk:  # a run of CJK characters: keep as many characters as still fit
            kept = []
            for ch in token:
                if _is_cjk(ch):
                    if used >= max_words:
                        break
                    used += 1
                kept.append(ch)
            out.append("".join(kept))
        break
    return " ".join(out)


@dataclass(frozen=True)
class _Piece:
    speaker: str | None
    text: str
    seconds: float
    paragraph_start: bool  # the first sentence of a line/paragraph


def _pieces(script: str, *, podcast: bool, speed: float) -> list[_Piece]:
    pieces: list[_Piece] = []
    for line in parse_lines(script, podcast=podcast):
        for k, sentence in enumerate(sentences(line.text)):
            if count_words(sentence) == 0:
                # A stray "—" or "..." on its own: nothing to speak or picture; it stays with the sentence before
                # when that is the same speaker's, else it is left out.
                if pieces and pieces[-1].speaker == line.speaker:
                    last = pieces[-1]
                    pieces[-1] = _Piece(last.speaker, f"{last.text} {sentence}", last.seconds, last.paragraph_start)
                continue
            pieces.append(_Piece(line.speaker, sentence, estimate_seconds(sentence, speed=speed), k == 0))
    return pieces


def _group(pieces: list[_Piece], goal: float, *, podcast: bool, split_speakers: bool) -> list[list[_Piece]]:
    groups: list[list[_Piece]] = []
    current: list[_Piece] = []
    seconds = 0.0
    ceiling = max(goal * 1.5, MAX_SCENE_SECONDS)
    for piece in pieces:
        if current:
            speaker_change = podcast and split_speakers and piece.speaker != current[-1].speaker
            full = seconds + piece.seconds / 2 > goal  # adding it would take the scene further from the goal
            overflow = seconds + piece.seconds > ceiling
            paragraph = piece.paragraph_start and seconds >= goal * 0.6
            if speaker_change or full or overflow or paragraph:
                groups.append(current)
                current, seconds = [], 0.0
        current.append(piece)
        seconds += piece.seconds
    if current:
        groups.append(current)
    return groups


def _scene_text(group: list[_Piece], *, podcast: bool) -> tuple[str, str]:
    """(narration, prompt source) of a scene's pieces."""
    if not podcast:
        text = " ".join(p.text for p in group)
        return text, text
    runs: list[tuple[str | None, list[str]]] = []
    for p in group:
        if runs and runs[-1][0] == p.speaker and not p.paragraph_start:
            runs[-1][1].append(p.text)
        else:
            runs.append((p.speaker, [p.text]))
    lines = [(f"{name}: " if name else "") + " ".join(said) for name, said in runs]
    return "\n".join(lines), " ".join(" ".join(said) for _, said in runs)


def split_script(script: str, *, target_seconds: int, podcast: bool, speed: float = 1.0) -> list[SceneDraft]:
    """The storyboard: sentences grouped into scenes toward ``target_seconds`` (about one scene per 6 s of the
    target, each of about 4-8 s of speech), never splitting a sentence, never merging across a podcast speaker
    change, at least 1 and at most 60 scenes. Should a podcast have more than 60 turns, neighbouring turns share
    a scene (one "NAME: text" line each) rather than the film having more than 60 scenes."""
    pieces = _pieces(script, podcast=podcast, speed=speed)
    if not pieces:
        return []
    total = sum(p.seconds for p in pieces)
    wanted = max(1, min(MAX_SCENES, round(target_seconds / SECONDS_PER_SCENE)))
    goal = min(MAX_SCENE_SECONDS, max(MIN_SCENE_SECONDS, total / wanted))
    split_speakers = True
    groups = _group(pieces, goal, podcast=podcast, split_speakers=split_speakers)
    while len(groups) > MAX_SCENES:
        goal *= 1.25
        if podcast and split_speakers and goal > total:
            split_speakers = False  # more turns than scenes allowed: turns must share scenes
            goal = max(MIN_SCENE_SECONDS, total / MAX_SCENES)
        groups = _group(pieces, goal, podcast=podcast, split_speakers=split_speakers)
    drafts: list[SceneDraft] = []
    for group in groups:
        text, spoken = _scene_text(group, podcast=podcast)
        drafts.append(
            SceneDraft(
                text=text,
                prompt=trim_words(spoken, PROMPT_MAX_WORDS),
                planned_seconds=round(max(1.0, sum(p.seconds for p in group)), 2),
            )
        )
    return drafts


def validate_script(script: str, *, max_words: int) -> None:
    """InvalidInput ``empty_script`` for a script with no word (only whitespace or punctuation), ``script_too_long``
    (details ``words``, ``max_words``) for one over ``max_words`` words."""
    words = count_words(script)
    if words == 0:
        raise InvalidInput(
            "The script has no words to narrate: write at least one sentence.",
            code="empty_script",
            details={"field": "script"},
        )
    if words > max_words:
        raise InvalidInput(
            f"The script has {words:,} words; a film takes at most {max_words:,}.",
            code="script_too_long",
            details={"field": "script", "words": words, "max_words": max_words},
        )


def spoken_text(text: str, *, podcast: bool) -> str:
    """A scene's words as spoken (podcast: without the "NAME:" prefixes), on one line."""
    return " ".join(line.text for line in parse_lines(text, podcast=podcast))


def scene_prompt(text: str, *, podcast: bool) -> str:
    """The image prompt a scene's text gives: its spoken words, trimmed to 60 words."""
    return trim_words(spoken_text(text, podcast=podcast), PROMPT_MAX_WORDS)


def scene_seconds(text: str, *, podcast: bool, speed: float = 1.0) -> float:
    """A scene's planned seconds until it is narrated: the estimate of its spoken words, at least 1 s."""
    return round(max(1.0, estimate_seconds(spoken_text(text, podcast=podcast), speed=speed)), 2)


def scene_sentences(text: str, *, podcast: bool) -> int:
    """How many sentences a scene's text has (where split_text may cut it)."""
    return len(_pieces(text, podcast=podcast, speed=1.0))


def split_text(text: str, sentence: int, *, podcast: bool) -> tuple[str, str]:
    """A scene's text cut before sentence ``sentence`` (0-based): the two scenes' texts, each speaker's lines kept
    as "NAME: text". ValueError unless 1 <= sentence < the scene's sentences."""
    pieces = _pieces(text, podcast=podcast, speed=1.0)
    if not 1 <= sentence < len(pieces):
        raise ValueError(f"sentence must be 1..{len(pieces) - 1}")
    first, _ = _scene_text(pieces[:sentence], podcast=podcast)
    rest = pieces[sentence:]
    rest[0] = _Piece(rest[0].speaker, rest[0].text, rest[0].seconds, True)
    second, _ = _scene_text(rest, podcast=podcast)
    return first, second


def join_texts(first: str, second: str, *, podcast: bool) -> str:
    """Two neighbouring scenes' texts as one (a merge): podcast lines stay one per line."""
    return f"{first}\n{second}" if podcast else f"{first} {second}"
