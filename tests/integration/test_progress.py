"""Job progress in the engine's own terms (CONTRACTS.md "Progress", issue 14): the steps of the current sampling
call, and which image it makes when the engine makes them one after another; in live events, the job row and the
words the studio and the CLI show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation import worker
from studiolo.domain.generation.schemas import JobProgress, JobView
from studiolo.engines.demo.engine import DEMO_MODEL_ID, DemoEngine
from studiolo.engines.echo import EchoEngine
from studiolo.services import build_services
from tests.helpers import drain, submit
from tests.tiny_demo import make_tiny_demo_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_progress_words_follow_what_the_engine_does() -> None:
    assert JobProgress(step=10, total=25, image=1, images=4).text() == "Image 1 of 4 · step 10 of 25"
    assert JobProgress(step=10, total=25, image=0, images=4).text() == "Step 10 of 25 · 4 images"
    assert JobProgress(step=10, total=25, image=0, images=1).text() == "Step 10 of 25"
    assert JobProgress(step=10, total=25, image=1, images=1).text() == "Step 10 of 25"
    # A bar over the whole job: image 2's step 5 of 25 is step 30 of 100; one call for all is its own steps.
    assert JobProgress(step=5, total=25, image=2, images=4).steps_done() == (30, 100)
    assert JobProgress(step=5, total=25, image=0, images=4).steps_done() == (5, 25)


def test_an_engine_making_images_in_turn_reports_each_image(
    settings_factory: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(worker, "_PROGRESS_WRITE_INTERVAL", 0.0)  # every step but the last is written to the row
    engines = {"demo": DemoEngine(weights=make_tiny_demo_weights(tmp_path / "demo")), "echo": EchoEngine()}
    svc = build_services(settings_factory(), engines=engines, upgrade_db=False)
    events: list[dict[str, Any]] = []
    seen: list[JobView] = []
    try:
        job_id = submit(svc, model=DEMO_MODEL_ID, n=3, steps=2)

        def on_event(event: dict[str, Any]) -> None:
            events.append(event)
            if event["type"] == "progress":  # the row as a poller sees it (written after the event is published)
                seen.append(svc.generation.get(LOCAL_USER_ID, job_id))

        unsubscribe = svc.events.subscribe(job_id, on_event)
        try:
            drain(svc)
        finally:
            unsubscribe()
        done = svc.generation.get(LOCAL_USER_ID, job_id)
    finally:
        svc.close()
    progress = [(e["image"], e["step"], e["total"], e["images"]) for e in events if e["type"] == "progress"]
    assert progress == [(image, step, 2, 3) for image in (1, 2, 3) for step in (1, 2)]
    # The row follows: image 2's first step was written before image 2's second step was published.
    polled = [(v.progress.image, v.progress.step) for v in seen]
    assert (1, 1) in polled and (2, 1) in polled and (3, 1) in polled
    assert done.status == "succeeded"
    assert done.progress.model_dump() == {"step": 2, "total": 2, "image": 3, "images": 3}
    for preview in (e for e in events if e["type"] == "preview"):
        assert preview["data_url"].startswith("data:image/webp;base64,")
        assert {"step", "total", "image", "images"} <= set(preview) and preview["image"] >= 1
