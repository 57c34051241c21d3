"""Prompt moderation's checks on their own (safety/prompts.py, prompts_openai.py): the blocklist's matching rules and
file handling, the packaged profanity model, the hosted /moderations adapter against a local server speaking the
protocol (flagged, clean, 429, 500, a malformed reply, a timeout; fail open and fail closed), and the refusal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from studiolo.domain.safety.prompts import (
    Blocklist,
    BlocklistError,
    BlockRules,
    ProfanityClassifier,
    PromptModerator,
    build_prompt_moderator,
    normalise,
)
from studiolo.domain.safety.prompts_openai import ModerationFailed, OpenAIModeration, flagged_category
from studiolo.errors import ContentRejected, ServiceUnavailable
from studiolo.settings import Settings
from tests.moderation_server import ModerationServer

RULES = """\
# words, one a line; comments and blank lines are skipped

grawlix
Crème Brûlée
/forbid{2,}en/i
/ZAP\\d+/
"""


@pytest.fixture(scope="module")
def server() -> Iterator[ModerationServer]:
    with ModerationServer(api_key="sk-mod") as s:
        yield s


@pytest.fixture
def hosted(server: ModerationServer) -> Iterator[ModerationServer]:
    server.mode = "good"
    server.requests.clear()
    yield server
    server.mode = "good"


def _api(server: ModerationServer, *, timeout: float = 5.0, fail_closed: bool = False) -> OpenAIModeration:
    return OpenAIModeration(
        f"{server.url}/v1", api_key="sk-mod", model="omni-moderation-latest", timeout=timeout, fail_closed=fail_closed
    )


def _count(counter: Counter, **labels: str) -> float:
    """A counter's value for ``labels``, read as a scrape reads it."""
    registry = CollectorRegistry()
    registry.register(counter)
    name = "studiolo_prompts_rejected_total" if "field" in labels else "studiolo_moderation_api_failures_total"
    return registry.get_sample_value(name, labels) or 0.0


# -- blocklist -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "a grawlix on the wall",
        "GRAWLIX!",
        "gr4wl1x in leetspeak",
        "grawl!x with a symbol",
        "grâwlix with an accent",
        "gra\u200bwlix hiding a zero-width space",
        "dessert: creme brulee, warm",  # a phrase, without its accents and in another case
        "CRÈME   brûlée",
        "this is Forbiddden",  # /forbid{2,}en/i
        "code ZAP42 here",
    ],
)
def test_the_blocklist_finds_words_phrases_and_patterns(text: str) -> None:
    assert BlockRules.parse(RULES).matches(text)


@pytest.mark.parametrize(
    "text",
    [
        "grawlixes are plural, a different word",  # whole words only
        "agrawlix",
        "creme and then brulee apart",
        "forbiden",  # one d: the pattern needs two or more
        "zap42",  # the pattern has no i flag
        "a quiet harbour at dawn",
    ],
)
def test_the_blocklist_leaves_other_text_alone(text: str) -> None:
    assert not BlockRules.parse(RULES).matches(text)


def test_whole_words_only_and_symbols_count_as_letters_inside_words() -> None:
    rules = BlockRules.parse("ass\n")
    assert [rules.matches(t) for t in ("a class act", "the assassin", "@ss", "ASS!", "a$s")] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_normalisation_undoes_case_accents_and_leetspeak_but_not_punctuation() -> None:
    assert normalise("ÉLAN") == "elan"
    assert normalise("h3ll0 w0rld") == "hello world"
    assert normalise("sh!t @ss") == "shit ass"
    assert normalise("hello!") == "hello!"  # a sentence's "!" is not a letter
    assert normalise("88 keys, 4k, b00k_shelf") == "88 keys, ak, book_shelf"  # a number stays a number


def test_numbers_match_numbers_and_underscores_separate_words() -> None:
    rules = BlockRules.parse("88\nhair\n")
    assert [rules.matches(t) for t in ("88", "bb cream", "long_hair, 1girl", "hairdo")] == [True, False, True, False]


@pytest.mark.parametrize(
    ("line", "why"),
    [("/(unclosed/", "not a valid regular expression"), ("/abc/q", "unknown flag"), ("//i", "empty pattern")],
)
def test_a_bad_pattern_names_its_line(line: str, why: str) -> None:
    with pytest.raises(BlocklistError, match=f"line 3: .*{why}"):
        BlockRules.parse(f"# list\nword\n{line}\n")


def test_the_file_is_read_again_when_it_changes_and_a_bad_edit_keeps_the_last_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "blocklist.txt"
    path.write_text("grawlix\n", encoding="utf-8")
    blocklist = Blocklist(path)
    assert blocklist.check(["a grawlix", "a zorp"]) == ["blocklist", None]
    path.write_text("zorp\n", encoding="utf-8")
    os.utime(path, ns=(1, 1))  # a new time even where the clock's resolution is coarse
    assert blocklist.check(["a grawlix", "a zorp"]) == [None, "blocklist"]
    path.write_text("zorp\n/(broken/\n", encoding="utf-8")
    os.utime(path, ns=(2, 2))
    assert blocklist.check(["a zorp"]) == ["blocklist"]  # still the last good list
    assert blocklist.check(["a zorp"]) == ["blocklist"]
    path.unlink()
    assert blocklist.check(["a zorp"]) == ["blocklist"]
    assert blocklist.check(["a zorp"]) == ["blocklist"]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2, errors  # once per change, not once per request
    assert "line 2" in errors[0] and "previous blocklist stays in force" in errors[1]


def test_a_missing_or_invalid_configured_blocklist_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(BlocklistError, match="Cannot read the moderation blocklist"):
        build_prompt_moderator(Settings(moderation_blocklist_file=tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("/[z-a]/\n", encoding="utf-8")
    with pytest.raises(BlocklistError, match="line 1") as caught:
        build_prompt_moderator(Settings(moderation_blocklist_file=bad))
    assert (caught.value.code, caught.value.status_code) == ("invalid_blocklist", 422)


# -- profanity model -----------------------------------------------------------------------------
def test_the_profanity_model_flags_abuse_and_passes_ordinary_prompts() -> None:
    classifier = ProfanityClassifier(threshold=0.9)
    prompts = ["fuck you", "a watercolour fox in a snowy forest", "nsfw, nude, blurry, low quality"]
    assert classifier.check(prompts) == ["profanity", None, None]
    assert classifier.load_seconds is not None  # loaded on first use, and timed
    probabilities = classifier.probabilities(prompts)
    assert probabilities[0] > 0.9 > probabilities[1]


def test_a_model_that_does_not_load_is_a_503_not_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "profanity_check", None)  # what a broken install's import does: ImportError
    with pytest.raises(ServiceUnavailable) as caught:
        ProfanityClassifier(threshold=0.9).check(["a fox"])
    assert (caught.value.code, caught.value.details) == ("moderation_unavailable", {"reason": "profanity_model"})


def test_threshold_one_turns_the_model_off_and_nothing_configured_means_no_moderator() -> None:
    assert build_prompt_moderator(Settings()) is None  # the default: 1.0, nothing else configured
    assert build_prompt_moderator(Settings(moderation_profanity_threshold=1.0)) is None
    moderator = build_prompt_moderator(Settings(moderation_profanity_threshold=0.9))
    assert moderator is not None and [c.name for c in moderator.checks] == ["profanity"]


# -- the moderator and its refusal -----------------------------------------------------------------
def test_a_refusal_names_category_and_field_but_never_the_word(tmp_path: Path) -> None:
    path = tmp_path / "blocklist.txt"
    path.write_text("grawlix\n", encoding="utf-8")
    moderator = PromptModerator([Blocklist(path)])
    with pytest.raises(ContentRejected) as caught:
        moderator.check("a red grawlix", "")
    exc = caught.value
    assert (exc.status_code, exc.code) == (422, "content_rejected")
    assert exc.details == {"category": "blocklist", "field": "prompt"}
    assert "grawlix" not in exc.message.lower()
    with pytest.raises(ContentRejected) as caught:
        moderator.check("a fox", "grawlix, blurry")
    assert caught.value.details == {"category": "blocklist", "field": "negative_prompt"}
    assert "negative prompt" in caught.value.message
    assert _count(moderator.rejected, category="blocklist", field="prompt") == 1
    assert _count(moderator.rejected, category="blocklist", field="negative_prompt") == 1
    moderator.check("a fox", "")  # allowed: nothing raised


def test_the_hosted_check_reads_the_prompt_but_not_the_negative_prompt(hosted: ModerationServer) -> None:
    moderator = PromptModerator([_api(hosted)])
    moderator.check("a castle", "explicit, gore")  # "explicit" would be flagged as sexual in a prompt
    assert [r["json"]["input"] for r in hosted.requests] == ["a castle"]
    with pytest.raises(ContentRejected) as caught:
        moderator.check("an explicit scene", "")
    assert caught.value.details == {"category": "sexual", "field": "prompt"}
    assert "moderation service (sexual)" in caught.value.message
    with pytest.raises(ContentRejected) as caught:  # a film's script is narrated: every check reads it
        moderator.check_fields([("script", "The end.\n\nAn explicit scene.")])
    assert caught.value.details == {"category": "sexual", "field": "script"}
    assert caught.value.message.startswith("The script was flagged")


# -- the hosted /moderations adapter ----------------------------------------------------------------
def test_the_adapter_speaks_the_protocol_and_remembers_verdicts(hosted: ModerationServer) -> None:
    api = _api(hosted)
    assert api.check(["a massacre on the field", "a quiet lake"]) == ["violence", None]
    first = hosted.requests[0]
    assert first["headers"]["authorization"] == "Bearer sk-mod"
    assert first["json"] == {"model": "omni-moderation-latest", "input": "a massacre on the field"}
    assert api.check(["a quiet lake", "a massacre on the field"]) == [None, "violence"]
    assert len(hosted.requests) == 2  # both verdicts came from memory


def test_the_highest_scoring_flagged_category_is_named() -> None:
    result = {
        "flagged": True,
        "categories": {"violence": True, "violence/graphic": True, "sexual": False},
        "category_scores": {"violence": 0.6, "violence/graphic": 0.95, "sexual": 0.99},
    }
    assert flagged_category(result) == "violence/graphic"
    assert flagged_category({"flagged": True, "categories": {}}) == "flagged"
    assert flagged_category({"flagged": False, "categories": {"sexual": False}}) is None
    with pytest.raises(ModerationFailed):
        flagged_category({"categories": {}})


@pytest.mark.parametrize(
    ("mode", "reason"), [("rate_limited", "http_429"), ("error", "http_5xx"), ("invalid", "invalid_reply")]
)
def test_a_failing_endpoint_lets_the_prompt_through_or_refuses_it_when_fail_closed(
    hosted: ModerationServer, mode: str, reason: str
) -> None:
    hosted.mode = mode
    open_api = _api(hosted)
    assert open_api.check(["a massacre"]) == [None]
    assert _count(open_api.failures, reason=reason) == 1
    assert open_api.check(["a massacre"]) == [None] and len(hosted.requests) == 2  # a failure is not remembered
    closed = _api(hosted, fail_closed=True)
    with pytest.raises(ServiceUnavailable) as caught:
        closed.check(["a castle"])
    assert (caught.value.status_code, caught.value.code) == (503, "moderation_unavailable")
    assert caught.value.details == {"reason": reason}
    hosted.mode = "good"
    assert open_api.check(["a massacre"]) == ["violence"]  # back: asked again


def test_a_slow_endpoint_times_out_and_a_wrong_key_is_a_failure(hosted: ModerationServer, tmp_path: Path) -> None:
    hosted.mode = "slow"
    hosted.slow_seconds = 1.0
    api = _api(hosted, timeout=0.2, fail_closed=True)
    with pytest.raises(ServiceUnavailable) as caught:
        api.check(["a castle"])
    assert caught.value.details == {"reason": "timeout"}
    hosted.mode = "good"
    wrong = OpenAIModeration(f"{hosted.url}/v1", api_key="sk-wrong")
    assert wrong.check(["a massacre"]) == [None]
    assert _count(wrong.failures, reason="http_4xx") == 1
    gone = OpenAIModeration("http://127.0.0.1:9/v1", timeout=0.5)  # nothing listens on the discard port
    assert gone.check(["a massacre"]) == [None]
    assert _count(gone.failures, reason="unreachable") == 1
