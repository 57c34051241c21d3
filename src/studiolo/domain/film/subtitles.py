"""Subtitle cues and the two file formats a film ships: SubRip (.srt) and WebVTT (.vtt).

Both formats are a list of timed text blocks that differ in header, decimal separator and escaping, so one small
writer/parser pair per format is enough (no dependency). The parsers are strict: the tests validate what the
writers produce by parsing it back, so a malformed file must fail loudly (ValueError), not half-parse.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_CHARS = 42  # per line: the usual broadcast/Netflix limit for Latin scripts
MAX_LINES = 2


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str  # at most 2 lines of <= 42 characters (use split_cue for longer sentences)


# --------------------------------------------------------------------------- splitting long text


def _is_wide(char: str) -> bool:
    """Scripts written without spaces between words (CJK ideographs, kana, full-width forms): any char may break."""
    code = ord(char)
    return 0x2E80 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0xFF00 <= code <= 0xFFEF or code == 0x3000


# CJK punctuation that must not start a line (kinsoku): it sticks to the character before it.
_NO_LINE_START = set("、。，．！？：；）」』】〕〉》…・ー!?,.:;)")  # noqa: RUF001 (full-width forms on purpose)


@dataclass(frozen=True)
class _Token:
    text: str
    space_before: bool  # joined to the previous token by a space (False: glued, as inside a CJK run)


def _tokens(text: str, max_chars: int) -> list[_Token]:
    tokens: list[_Token] = []
    for word in text.split():
        pieces: list[str] = []
        run = ""
        for char in word:
            if _is_wide(char):
                if char in _NO_LINE_START and (run or pieces):
                    if run:
                        run += char
                    else:
                        pieces[-1] += char
                    continue
                if run:
                    pieces.append(run)
                run = ""
                pieces.append(char)
            elif pieces and not run and char in _NO_LINE_START:
                pieces[-1] += char
            else:
                run += char
        if run:
            pieces.append(run)
        for position, piece in enumerate(pieces):
            # a piece longer than a line (a URL, a long compound) is cut hard
            for cut in range(0, len(piece), max_chars):
                tokens.append(_Token(piece[cut : cut + max_chars], space_before=position == 0 and cut == 0))
    return tokens


def _join(tokens: Sequence[_Token]) -> str:
    out = ""
    for token in tokens:
        out += (" " if out and token.space_before else "") + token.text
    return out


def _lines(tokens: Sequence[_Token], max_chars: int) -> list[list[_Token]]:
    lines: list[list[_Token]] = []
    current: list[_Token] = []
    for token in tokens:
        if current and len(_join([*current, token])) > max_chars:
            lines.append(current)
            current = []
        current.append(token)
    if current:
        lines.append(current)
    return lines


def _balanced(tokens: Sequence[_Token], max_chars: int) -> str:
    """Two lines of similar length where they fit (the greedy fill leaves a long line over a short one)."""
    best: tuple[int, str] | None = None
    for cut in range(1, len(tokens)):
        top, bottom = _join(tokens[:cut]), _join(tokens[cut:])
        if len(top) <= max_chars and len(bottom) <= max_chars:
            score = max(len(top), len(bottom))
            if best is None or score < best[0]:
                best = (score, f"{top}\n{bottom}")
    return best[1] if best else _join(tokens)


def split_cue(
    start: float, end: float, text: str, *, max_chars: int = MAX_CHARS, max_lines: int = MAX_LINES
) -> list[Cue]:
    """A sentence as cues of at most ``max_lines`` lines of ``max_chars``; its time shared by character count."""
    if max_chars < 1 or max_lines < 1:
        raise ValueError("max_chars and max_lines must be at least 1")
    lines = _lines(_tokens(text, max_chars), max_chars)
    if not lines:
        return []
    groups = [lines[k : k + max_lines] for k in range(0, len(lines), max_lines)]
    texts: list[str] = []
    for group in groups:
        if len(group) == 2 and max_lines == 2:
            texts.append(_balanced([token for line in group for token in line], max_chars))
        else:
            texts.append("\n".join(_join(line) for line in group))
    weights = [len(t.replace("\n", "")) for t in texts]
    total = sum(weights)
    cues: list[Cue] = []
    done = 0
    duration = max(0.0, end - start)
    for piece, weight in zip(texts, weights, strict=True):
        cue_start = start + duration * done / total
        done += weight
        cue_end = end if done == total else start + duration * done / total
        cues.append(Cue(cue_start, cue_end, piece))
    return cues


# --------------------------------------------------------------------------- writing


def _milliseconds(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _timestamp(seconds: float, separator: str) -> str:
    ms = _milliseconds(seconds)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def _clean(text: str) -> str:
    """Cue text without empty lines (an empty line ends a cue in both formats)."""
    return "\n".join(line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip())


def to_srt(cues: Sequence[Cue]) -> str:
    blocks = []
    for number, cue in enumerate((c for c in cues if _clean(c.text)), start=1):
        timing = f"{_timestamp(cue.start, ',')} --> {_timestamp(max(cue.start, cue.end), ',')}"
        blocks.append(f"{number}\n{timing}\n{_clean(cue.text)}\n")
    return "\n".join(blocks)


def _vtt_text(text: str) -> str:
    # cue text is HTML-like in WebVTT: & and < must be escaped, and "-->" may not appear at all
    escaped = _clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace("--&gt;", "→")


def to_vtt(cues: Sequence[Cue]) -> str:
    blocks = ["WEBVTT\n"]
    for cue in cues:
        if _clean(cue.text):
            blocks.append(
                f"{_timestamp(cue.start, '.')} --> {_timestamp(max(cue.start, cue.end), '.')}\n{_vtt_text(cue.text)}\n"
            )
    return "\n".join(blocks)


# --------------------------------------------------------------------------- parsing

_TIME = r"(?:(\d+):)?([0-5]\d):([0-5]\d)[.,](\d{3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(?:\s+.*)?$")
_TAG = re.compile(r"<[^>]*>")


def _seconds(hours: str | None, minutes: str, seconds: str, ms: str) -> float:
    # whole milliseconds first, one division: 1.235 parses to the float nearest 1.235
    return (int(hours or 0) * 3_600_000 + int(minutes) * 60_000 + int(seconds) * 1000 + int(ms)) / 1000


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """Blank-line separated blocks with the line number each starts at."""
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    first = 0
    for number, line in enumerate(lines, start=1):
        if line.strip():
            if not current:
                first = number
            current.append(line)
        elif current:
            blocks.append((first, current))
            current = []
    if current:
        blocks.append((first, current))
    return blocks


def _cue(block: list[str], at: int, line_no: int, fmt: str) -> Cue:
    match = _TIMING.match(block[at])
    if match is None:
        raise ValueError(f"{fmt}: line {line_no + at}: not a cue timing: {block[at]!r}")
    groups = match.groups()
    start, end = _seconds(*groups[:4]), _seconds(*groups[4:])
    if end < start:
        raise ValueError(f"{fmt}: line {line_no + at}: the cue ends before it starts")
    return Cue(start, end, "\n".join(line.strip() for line in block[at + 1 :]))


def parse_srt(text: str) -> list[Cue]:
    """SubRip blocks: an optional number line, a timing line ("00:00:01,000 --> 00:00:02,500"), text lines."""
    cues = []
    for line_no, block in _blocks(text):
        at = 0
        if "-->" not in block[0]:
            if not block[0].strip().isdigit() or len(block) < 2:
                raise ValueError(f"SRT: line {line_no}: expected a cue number or timing, got {block[0]!r}")
            at = 1
        cues.append(_cue(block, at, line_no, "SRT"))
    return cues


def parse_vtt(text: str) -> list[Cue]:
    """WebVTT: the "WEBVTT" header, then cues (an optional identifier line, a timing line with optional settings,
    text); NOTE, STYLE and REGION blocks are skipped. Tags are dropped and character references decoded."""
    blocks = _blocks(text)
    if not blocks or not re.match(r"^WEBVTT(?:$|[ \t])", blocks[0][1][0]):
        raise ValueError("VTT: the file must start with 'WEBVTT'")
    cues = []
    for line_no, block in blocks[1:]:
        if re.match(r"^(NOTE|STYLE|REGION)(?:$|\s)", block[0]):
            continue
        at = 0 if "-->" in block[0] else 1
        if at == 1 and (len(block) < 2 or "-->" not in block[1]):
            raise ValueError(f"VTT: line {line_no}: expected a cue timing, got {block[0]!r}")
        cue = _cue(block, at, line_no, "VTT")
        cues.append(Cue(cue.start, cue.end, html.unescape(_TAG.sub("", cue.text))))
    return cues
