"""Prompt moderation (issue 17): every generation request is checked before it is queued or quoted.

``GenerationService.prepare`` calls ``PromptModerator.check`` with the prompt and negative prompt as the model will
receive them (the style applied: a user's own style is text they wrote too). Three checks, cheapest first:

- ``Blocklist``: the install's own words, phrases and /patterns/ (STUDIOLO_MODERATION_BLOCKLIST_FILE);
- ``ProfanityClassifier``: the packaged alt-profanity-check model (a TF-IDF + linear SVM, MIT), above a threshold;
- ``OpenAIModeration`` (prompts_openai.py): an OpenAI-compatible ``/moderations`` endpoint, when configured.

A refusal is ``422 content_rejected`` with ``details.category`` (blocklist, profanity, or the endpoint's category such
as ``sexual``) and ``details.field``; the matched word, pattern or score is never echoed, so probing the API cannot
read the list back. Negative prompts ("nsfw, nude, gore" is how people steer *away* from such images) pass the
blocklist and the profanity model but not the hosted category check, which would flag exactly those words.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Protocol

from prometheus_client import Counter
from prometheus_client.registry import Collector

from studiolo.errors import ContentRejected, InvalidInput, ServiceUnavailable

if TYPE_CHECKING:
    from studiolo.settings import Settings

log = logging.getLogger(__name__)

# How a refusal names the text it refused (a film's script and scene text are checked too: they are narrated).
FIELDS = {"prompt": "prompt", "negative_prompt": "negative prompt", "script": "script", "text": "scene text"}
_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
# Leetspeak-lite: the digits and symbols people put in place of letters to slip a word past a list. Symbols only
# count inside or at the start of a word ("sh!t", "@ss"), so the "!" ending a sentence stays punctuation; digits
# only in a word that has letters, so a number stays a number ("88" is not "bb").
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g"})
_LEET_SYMBOLS = re.compile(r"[@$!|](?=\w)")
_SYMBOL_LETTERS = {"@": "a", "$": "s", "!": "i", "|": "i"}
# Letters and digits: an underscore separates words, as prompts write them ("long_hair").
_WORD = re.compile(r"[^\W_]+")


class PromptCheck(Protocol):
    """One check: a category per text (None: allowed)."""

    name: str
    negative: bool  # whether it also reads negative prompts

    def check(self, texts: Sequence[str]) -> list[str | None]: ...


def strip_accents(text: str) -> str:
    """NFKD with the combining marks and invisible format characters (zero-width spaces) removed."""
    return "".join(
        c
        for c in unicodedata.normalize("NFKD", text)
        if not unicodedata.combining(c) and unicodedata.category(c) != "Cf"
    )


def normalise(text: str) -> str:
    """What the blocklist's words are compared in: accents removed, case folded, leetspeak-lite undone."""
    folded = strip_accents(text).casefold()
    folded = _LEET_SYMBOLS.sub(lambda m: _SYMBOL_LETTERS[m.group()], folded)
    return _WORD.sub(lambda m: _leet(m.group()), folded)


def _leet(word: str) -> str:
    return word.translate(_LEET) if any(c.isalpha() for c in word) else word


def words_of(text: str) -> list[str]:
    """The normalised words of a text, in order."""
    return _WORD.findall(normalise(text))


class BlocklistError(InvalidInput):
    """A blocklist file that cannot be used (unreadable, or a line with a bad pattern): a start-up error, like an
    invalid plans file."""

    code = "invalid_blocklist"


@dataclass(frozen=True)
class BlockRules:
    """A parsed blocklist: single words, phrases (as padded word strings) and regular expressions."""

    words: frozenset[str]
    phrases: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]

    @classmethod
    def parse(cls, text: str, *, source: str = "blocklist") -> BlockRules:
        """One entry a line: a word or phrase (whole words, any case or accents), or ``/regex/flags`` (flags from
        i, m, s, x), matched against the prompt with accents removed. ``#`` starts a comment line."""
        words: set[str] = set()
        phrases: list[str] = []
        patterns: list[re.Pattern[str]] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("/") and line.rfind("/") > 0:
                end = line.rfind("/")
                body, flag_text = line[1:end], line[end + 1 :]
                bad = set(flag_text) - set(_REGEX_FLAGS)
                if bad or not body:
                    why = f"unknown flag(s) {''.join(sorted(bad))}" if bad else "an empty pattern"
                    raise BlocklistError(f"{source} line {number}: {why} (use /pattern/ with flags from i, m, s, x)")
                flags = 0
                for flag in flag_text:
                    flags |= _REGEX_FLAGS[flag]
                try:
                    patterns.append(re.compile(body, flags))
                except re.error as exc:
                    raise BlocklistError(f"{source} line {number}: not a valid regular expression ({exc})") from None
                continue
            tokens = words_of(line)
            if len(tokens) == 1:
                words.add(tokens[0])
            elif tokens:
                phrases.append(f" {' '.join(tokens)} ")
        return cls(frozenset(words), tuple(phrases), tuple(patterns))

    def __len__(self) -> int:
        return len(self.words) + len(self.phrases) + len(self.patterns)

    def matches(self, text: str) -> bool:
        """Whether any entry occurs in ``text`` (words and phrases as whole words)."""
        tokens = words_of(text)
        if self.words.intersection(tokens):
            return True
        if self.phrases:
            padded = f" {' '.join(tokens)} "
            if any(phrase in padded for phrase in self.phrases):
                return True
        if self.patterns:
            plain = strip_accents(text)
            return any(p.search(plain) for p in self.patterns)
        return False


class Blocklist:
    """The install's blocklist file, read again when it changes (an edit needs no restart). A file that becomes
    unreadable or invalid keeps the last good list in force, with an error in the log."""

    name = "blocklist"
    negative = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._stat()  # raises BlocklistError when the file is missing at start-up
        self.rules = self._read()

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise BlocklistError(f"Cannot read the moderation blocklist {self.path}: {exc.strerror}") from None
        return st.st_mtime_ns, st.st_size

    def _read(self) -> BlockRules:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BlocklistError(f"Cannot read the moderation blocklist {self.path}: {exc}") from None
        return BlockRules.parse(text, source=str(self.path))

    def refresh(self) -> None:
        """Re-read the file if its time or size changed since the last read."""
        problem: BlocklistError | None = None
        try:
            stamp = self._stat()
        except BlocklistError as exc:
            stamp, problem = (-1, -1), exc
        if stamp == self._stamp:
            return
        self._stamp = stamp  # a broken file is reported once per change, not on every request
        if problem is None:
            try:
                self.rules = self._read()
                log.info("moderation: blocklist %s reloaded (%d entries)", self.path, len(self.rules))
                return
            except BlocklistError as exc:
                problem = exc
        log.error("moderation: %s; the previous blocklist stays in force", problem)

    def check(self, texts: Sequence[str]) -> list[str | None]:
        self.refresh()
        rules = self.rules
        return ["blocklist" if rules.matches(text) else None for text in texts]


class Memo:
    """A small thread-safe LRU of verdicts by text: the same prompt comes again (a batch, a retry, a film's scenes
    probed at quote and render), and the classifier and the hosted check cost milliseconds to a second each."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._items: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> tuple[bool, str | None]:
        with self._lock:
            if text not in self._items:
                return False, None
            self._items.move_to_end(text)
            return True, self._items[text]

    def put(self, text: str, verdict: str | None) -> None:
        with self._lock:
            self._items[text] = verdict
            self._items.move_to_end(text)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class ProfanityClassifier:
    """alt-profanity-check's packaged model: flags a text whose profanity probability reaches ``threshold``.

    Loaded once per process, on the first prompt (importing scikit-learn and unpickling the model took 1.3-2 s in an
    API process on the 2-core CI machine; a prompt and negative prompt then cost about 6 ms, docs/safety.md), so
    processes that never check a prompt (a worker, the CLI's other commands) never pay for it."""

    name = "profanity"
    negative = True

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.load_seconds: float | None = None
        self._predict: Callable[[list[str]], Sequence[float]] | None = None
        self._lock = threading.Lock()
        self._memo = Memo()

    def _predictor(self) -> Callable[[list[str]], Sequence[float]]:
        predict = self._predict
        if predict is None:
            with self._lock:
                if self._predict is None:
                    started = perf_counter()
                    try:
                        from profanity_check import predict_prob
                    except Exception as exc:  # a broken install (the package, scikit-learn): 503, not a 500
                        log.exception("moderation: the profanity model cannot be loaded")
                        raise ServiceUnavailable(
                            "Prompts cannot be checked on this server just now (its profanity model does not load); "
                            "the administrator has been told in the log.",
                            code="moderation_unavailable",
                            details={"reason": "profanity_model"},
                        ) from exc
                    self.load_seconds = perf_counter() - started
                    log.info("moderation: profanity model loaded in %.2f s", self.load_seconds)
                    self._predict = predict_prob
                predict = self._predict
        return predict

    def probabilities(self, texts: Sequence[str]) -> list[float]:
        """The model's profanity probability of each text (0..1)."""
        return [float(p) for p in self._predictor()(list(texts))]

    def check(self, texts: Sequence[str]) -> list[str | None]:
        verdicts: list[str | None] = []
        todo: list[str] = []
        for text in texts:
            known, verdict = self._memo.get(text)
            verdicts.append(verdict)
            if not known:
                todo.append(text)
        if todo:
            # One call for all unknown texts: the calibrated model's fixed cost dominates a short prompt.
            fresh = {
                text: self.name if probability >= self.threshold else None
                for text, probability in zip(todo, self.probabilities(todo), strict=True)
            }
            for text, verdict in fresh.items():
                self._memo.put(text, verdict)
            verdicts = [fresh.get(text, v) for text, v in zip(texts, verdicts, strict=True)]
        return verdicts


_MESSAGES = {
    "blocklist": "contains a word or phrase this site does not allow",
    "profanity": "reads as profane or abusive",
}


def refusal(category: str, field: str) -> ContentRejected:
    """The 422 content_rejected of a refused text: the category and field, never what matched."""
    why = _MESSAGES.get(category, f"was flagged by the moderation service ({category})")
    return ContentRejected(
        f"The {FIELDS.get(field, field)} {why}. Rephrase it and try again.",
        details={"category": category, "field": field},
    )


class PromptModerator:
    """Runs the configured checks on a request's texts, cheapest first; the first refusal raises."""

    def __init__(self, checks: Sequence[PromptCheck]) -> None:
        self.checks = list(checks)
        # Not registered anywhere yet: ProcessMetrics.bind registers them in the registry the process serves.
        self.rejected = Counter(
            "studiolo_prompts_rejected",
            "Texts refused by prompt moderation (generation requests, film scripts), by category and field.",
            ["category", "field"],
            registry=None,
        )

    def check(self, prompt: str, negative_prompt: str = "") -> None:
        """Raise 422 content_rejected if a check refuses the prompt or the negative prompt."""
        self.check_fields([("prompt", prompt), ("negative_prompt", negative_prompt)])

    def check_fields(self, fields: Sequence[tuple[str, str]]) -> None:
        """Raise 422 content_rejected naming the first (field, text) a check refuses. Every check reads every field,
        but one whose ``negative`` is false skips ``negative_prompt``."""
        for check in self.checks:
            named = [(f, text) for f, text in fields if text.strip() and (check.negative or f != "negative_prompt")]
            if not named:
                continue
            for (field, _), category in zip(named, check.check([text for _, text in named]), strict=True):
                if category is not None:
                    self.rejected.labels(category, field).inc()
                    raise refusal(category, field)

    def collectors(self) -> tuple[Collector, ...]:
        extra: list[Collector] = []
        for check in self.checks:
            extra.extend(getattr(check, "collectors", tuple)())
        return (self.rejected, *extra)


def build_prompt_moderator(settings: Settings) -> PromptModerator | None:
    """The checks the settings turn on, or None when there are none. A configured blocklist that is missing or
    invalid stops start-up with a BlocklistError naming the file and line."""
    from studiolo.domain.safety.prompts_openai import OpenAIModeration

    checks: list[PromptCheck] = []
    if settings.moderation_blocklist_file is not None:
        checks.append(Blocklist(Path(settings.moderation_blocklist_file).expanduser()))
    if settings.moderation_profanity_threshold < 1.0:
        checks.append(ProfanityClassifier(settings.moderation_profanity_threshold))
    if settings.moderation_api_base.strip():
        checks.append(
            OpenAIModeration(
                settings.moderation_api_base.strip(),
                api_key=settings.moderation_api_key,
                model=settings.moderation_api_model,
                timeout=settings.moderation_api_timeout_seconds,
                fail_closed=settings.moderation_api_fail_closed,
            )
        )
    return PromptModerator(checks) if checks else None
