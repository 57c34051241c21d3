"""Checks the remote-engine tests of tests/contract/test_remote_{openai,gemini,pollinations}.py share: a request
like the engine contract's, the contract's per-seed checks, and one job end to end through the queue."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.gallery.models import Image as ImageRow
from studiolo.domain.generation.models import Job
from studiolo.engines.base import Engine, GenerationRequest, ModelRef, Preview
from studiolo.engines.remote.base import RemoteEngine
from studiolo.services import Services, build_services
from tests.helpers import drain, submit


@pytest.fixture(autouse=True)
def fresh_breakers() -> Iterator[None]:
    """Every test starts with closed circuit breakers (they are per process, built from the first settings)."""
    RemoteEngine._breakers.clear()
    yield
    RemoteEngine._breakers.clear()


def ignore(step: int, total: int, preview: Preview | None = None, image: int = 0) -> None:
    """An on_step that takes everything the contract lets an engine pass."""


def init_image(width: int = 64, height: int = 48) -> Image.Image:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([200 * xs / width + 20, 120 + 0 * xs, 220 * ys / height + 10], axis=-1)
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB")


def half_mask(width: int = 64, height: int = 48) -> Image.Image:
    """White (repaint) on the right half."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 2, 0, width, height))
    return mask


def make_request(model: ModelRef, **overrides: Any) -> GenerationRequest:
    base = GenerationRequest(
        model=model,
        prompt="a lighthouse at dusk",
        negative_prompt="fog",
        seeds=[11],
        width=64,
        height=48,
        steps=2,
        init_image=init_image(80, 60),
        mask_image=half_mask(),
    )
    return replace(base, **overrides)


def pixels(engine: Engine, request: GenerationRequest) -> list[np.ndarray]:
    return [np.asarray(g.image, dtype=np.int16) for g in engine.generate(request, ignore, lambda: False)]


def check_contract(engine: Engine, model: ModelRef, *, honours_seeds: bool) -> None:
    """The engine contract's checks a hosted provider can meet: an Engine; one RGB image of the requested size per
    seed, in seed order; and where the provider honours seeds, the same seed gives the same picture, alone or in a
    batch, and different seeds different ones."""
    assert isinstance(engine, Engine) and engine.name
    images = engine.generate(make_request(model, seeds=[5, 900, 3]), ignore, lambda: False)
    assert [g.seed for g in images] == [5, 900, 3]
    assert all(g.image.mode == "RGB" and g.image.size == (64, 48) for g in images)
    engine.load(model)
    assert engine.is_loaded(model.id)
    if honours_seeds:
        batch = pixels(engine, make_request(model, seeds=[1, 2, 3]))
        alone = pixels(engine, make_request(model, seeds=[2]))
        assert np.array_equal(batch[1], alone[0])
        assert not np.array_equal(batch[0], batch[1])


def job_row(services: Services, job_id: str) -> Job:
    with services.db.session() as session:
        job = session.get_one(Job, job_id)
        session.expunge(job)
        return job


def end_to_end(
    settings: Any, provider: str, remote_model: str, options: dict[str, object] | None = None, **params: Any
) -> tuple[Job, list[Image.Image]]:
    """Register a remote model, submit a job for it, run the queue in this thread: the job row and stored PNGs."""
    services = build_services(settings, upgrade_db=False)
    try:
        services.catalog.add_remote("remote-model", provider=provider, remote_model=remote_model, options=options)
        job_id = submit(services, model="remote-model", **params)
        drain(services)
        job = job_row(services, job_id)
        with services.db.session() as session:
            rows = session.query(ImageRow).filter_by(job_id=job_id, owner_id=LOCAL_USER_ID).all()
            pngs = [Image.open(io.BytesIO(services.store.get(r.original_key))) for r in rows]
    finally:
        services.close(timeout=10)
    return job, pngs
