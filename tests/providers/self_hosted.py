"""What the tests of the self-hosted workers (test_remote_a1111.py, test_remote_comfyui.py) share."""

from __future__ import annotations

import threading
import time
from typing import Any

from PIL import Image

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.engines.base import GenerationRequest
from tests.helpers import drain


class Steps:
    """An on_step callback that keeps the steps and the previews (decoded) it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []
        self.previews: list[Image.Image | None] = []

    def __call__(self, step: int, total: int, /, preview: Any = None, image: int = 0) -> None:
        self.calls.append((step, total, image))
        self.previews.append(preview() if callable(preview) else preview)


def make_request(**overrides: Any) -> GenerationRequest:
    """A small two-image request; ``model`` is required."""
    values: dict[str, Any] = {"prompt": "a lighthouse", "seeds": [7, 8], "width": 64, "height": 48}
    return GenerationRequest(**{**values, **overrides})


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.convert("RGB").tobytes() == b.convert("RGB").tobytes()


def cancel_while_running(services: Any, job_id: str, started: Any) -> None:
    """Run the queue in a thread, cancel ``job_id`` once ``started()`` says the server has it, wait for the end."""
    runner = threading.Thread(target=drain, args=(services,), daemon=True)
    runner.start()
    deadline = time.monotonic() + 10
    while not started() and time.monotonic() < deadline:
        time.sleep(0.01)
    services.generation.cancel(LOCAL_USER_ID, job_id)
    runner.join(15)
