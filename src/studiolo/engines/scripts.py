"""Which writing systems a text is written in, and which ones a language's voice can read.

Used by ``SpeechCatalog.check_text`` to refuse, before any audio is made, a script a voice cannot speak (Japanese
text with an English voice reads as silence or letter names). Scripts are found by Unicode block ranges, counting
letters only (digits, punctuation and symbols belong to every script).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter

# (first, last, script), sorted by first; blocks that hold letters of one script.
_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0041, 0x005A, "Latin"),
    (0x0061, 0x007A, "Latin"),
    (0x00AA, 0x00AA, "Latin"),
    (0x00BA, 0x00BA, "Latin"),
    (0x00C0, 0x024F, "Latin"),  # the two math signs inside are not letters: only letters count
    (0x0250, 0x02AF, "Latin"),  # IPA
    (0x0370, 0x03FF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"),
    (0x0530, 0x058F, "Armenian"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"),
    (0x0700, 0x074F, "Syriac"),
    (0x0750, 0x077F, "Arabic"),
    (0x0780, 0x07BF, "Thaana"),
    (0x08A0, 0x08FF, "Arabic"),
    (0x0900, 0x097F, "Devanagari"),
    (0x0980, 0x09FF, "Bengali"),
    (0x0A00, 0x0A7F, "Gurmukhi"),
    (0x0A80, 0x0AFF, "Gujarati"),
    (0x0B00, 0x0B7F, "Oriya"),
    (0x0B80, 0x0BFF, "Tamil"),
    (0x0C00, 0x0C7F, "Telugu"),
    (0x0C80, 0x0CFF, "Kannada"),
    (0x0D00, 0x0D7F, "Malayalam"),
    (0x0D80, 0x0DFF, "Sinhala"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x0E80, 0x0EFF, "Lao"),
    (0x0F00, 0x0FFF, "Tibetan"),
    (0x1000, 0x109F, "Myanmar"),
    (0x10A0, 0x10FF, "Georgian"),
    (0x1100, 0x11FF, "Hangul"),
    (0x1200, 0x139F, "Ethiopic"),
    (0x13A0, 0x13FF, "Cherokee"),
    (0x1780, 0x17FF, "Khmer"),
    (0x1C80, 0x1C8F, "Cyrillic"),
    (0x1C90, 0x1CBF, "Georgian"),
    (0x1E00, 0x1EFF, "Latin"),
    (0x1F00, 0x1FFF, "Greek"),
    (0x2C60, 0x2C7F, "Latin"),
    (0x2D00, 0x2D2F, "Georgian"),
    (0x2D80, 0x2DDF, "Ethiopic"),
    (0x2DE0, 0x2DFF, "Cyrillic"),
    (0x2E80, 0x2FDF, "CJK"),
    (0x3005, 0x3007, "CJK"),
    (0x3021, 0x3029, "CJK"),
    (0x3038, 0x303B, "CJK"),
    (0x3040, 0x30FF, "Kana"),
    (0x3100, 0x312F, "Bopomofo"),
    (0x3130, 0x318F, "Hangul"),
    (0x31A0, 0x31BF, "Bopomofo"),
    (0x31F0, 0x31FF, "Kana"),
    (0x3400, 0x4DBF, "CJK"),
    (0x4E00, 0x9FFF, "CJK"),
    (0xA640, 0xA69F, "Cyrillic"),
    (0xA720, 0xA7FF, "Latin"),
    (0xA960, 0xA97F, "Hangul"),
    (0xAB30, 0xAB6F, "Latin"),
    (0xAB70, 0xABBF, "Cherokee"),
    (0xAC00, 0xD7FF, "Hangul"),
    (0xF900, 0xFAFF, "CJK"),
    (0xFB00, 0xFB06, "Latin"),
    (0xFB1D, 0xFB4F, "Hebrew"),
    (0xFB50, 0xFDFF, "Arabic"),
    (0xFE70, 0xFEFF, "Arabic"),
    (0xFF21, 0xFF3A, "Latin"),
    (0xFF41, 0xFF5A, "Latin"),
    (0xFF66, 0xFF9F, "Kana"),
    (0xFFA0, 0xFFDC, "Hangul"),
    (0x20000, 0x3134F, "CJK"),
)
_STARTS = [r[0] for r in _RANGES]

# Scripts a language is written in, by its ISO 639 code (the first part of the voice's language tag). Languages
# not listed are written in Latin letters. "mul": a multilingual voice (hosted voices) reads every script.
_NON_LATIN: dict[str, frozenset[str]] = {}
for _script, _codes in {
    "Cyrillic": "ru uk be bg mk kk ky ba cv tt tg mn nog os ce cu sah",
    "Greek": "el grc",
    "Arabic": "ar fa ur sd ug ps ckb",
    "Hebrew": "he yi",
    "Devanagari": "hi mr ne kok sa mai bho new",
    "Bengali": "bn as bpy",
    "Gurmukhi": "pa",
    "Gujarati": "gu",
    "Oriya": "or",
    "Tamil": "ta",
    "Telugu": "te",
    "Kannada": "kn",
    "Malayalam": "ml",
    "Sinhala": "si",
    "Thai": "th",
    "Lao": "lo",
    "Tibetan": "bo dz",
    "Myanmar": "my shn",
    "Georgian": "ka",
    "Armenian": "hy hyw",
    "Ethiopic": "am ti",
    "Cherokee": "chr",
    "Khmer": "km",
    "Thaana": "dv",
    "Syriac": "syr",
}.items():
    for _code in _codes.split():
        _NON_LATIN[_code] = frozenset({_script})
_NON_LATIN["sr"] = frozenset({"Cyrillic", "Latin"})
_NON_LATIN["uz"] = frozenset({"Latin", "Cyrillic"})
_NON_LATIN["zh"] = frozenset({"CJK", "Bopomofo"})
_NON_LATIN["ja"] = frozenset({"CJK", "Kana"})
_NON_LATIN["ko"] = frozenset({"Hangul", "CJK"})

# A BCP-47 script subtag names the script outright ("zh-Latn-pinyin", "fa-Latn", "sr-Cyrl").
_SUBTAGS = {"latn": "Latin", "cyrl": "Cyrillic", "arab": "Arabic", "grek": "Greek", "hans": "CJK", "hant": "CJK"}

# A minority of Latin letters is tolerated by any voice (names and brands inside Japanese or Russian text); any other
# script the voice cannot read is refused from this share of the letters on, or when it is the text's main script.
MINOR_SHARE = 0.2


def script_of(ch: str) -> str | None:
    """The script of one letter (None for anything that is not a letter in a known block)."""
    if not ch.isalpha():
        return None
    cp = ord(ch)
    i = bisect_right(_STARTS, cp) - 1
    if i >= 0 and cp <= _RANGES[i][1]:
        return _RANGES[i][2]
    return None


def scripts_in(text: str) -> Counter[str]:
    """Letters per script in ``text``."""
    counts: Counter[str] = Counter()
    for ch in text:
        script = script_of(ch)
        if script is not None:
            counts[script] += 1
    return counts


def language_scripts(language: str) -> frozenset[str] | None:
    """Scripts a voice of ``language`` (BCP-47-ish) reads; None: every script (``mul``)."""
    parts = language.replace("_", "-").lower().split("-")
    if parts[0] == "mul":
        return None
    for sub in parts[1:]:
        if sub in _SUBTAGS:
            return frozenset({_SUBTAGS[sub]})
    return _NON_LATIN.get(parts[0], frozenset({"Latin"}))


def unreadable_script(language: str, text: str) -> str | None:
    """The script of ``text`` a voice of ``language`` cannot read (the one with most letters), or None."""
    allowed = language_scripts(language)
    counts = scripts_in(text)
    if allowed is None or not counts:
        return None
    total = sum(counts.values())
    main = counts.most_common(1)[0][0]
    for script, n in counts.most_common():
        if script in allowed:
            continue
        if script == main or (script != "Latin" and n / total >= MINOR_SHARE):
            return script
    return None
