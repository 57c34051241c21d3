"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

from PIL import Image

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.schemas import GenerationParams, JobView
from studiolo.domain.generation.worker import Worker
from studiolo.services import Services

TERMINAL = ("succeeded", "failed", "canceled")


def drain(services: Services, worker_id: str = "test-worker") -> int:
    """Run queued jobs in this thread until none is ready; returns how many ran."""
    worker = Worker(worker_id, services.queue, services.runner, services.dispatch, services.settings)
    stop = threading.Event()
    count = 0
    while worker.run_once(stop):
        count += 1
    return count


def wait_terminal(services: Services, job_id: str, timeout: float = 30.0, owner: str = LOCAL_USER_ID) -> JobView:
    deadline = time.monotonic() + timeout
    while True:
        view = services.generation.get(owner, job_id)
        if view.status in TERMINAL:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {view.status} after {timeout} s")
        time.sleep(0.02)


def submit(services: Services, owner: str = LOCAL_USER_ID, **params: Any) -> str:
    params.setdefault("prompt", "a lighthouse at dusk")
    params.setdefault("size", "64x64")
    params.setdefault("steps", 2)
    accepted, _ = services.generation.submit(owner, GenerationParams(**params))
    return accepted.id


def png_bytes(
    size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 30, 30), mode: str = "RGB"
) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 255).save(buf, format="PNG")
    return buf.getvalue()
