"""Quiet the Hugging Face libraries: their notices and per-component progress bars are not for our users.

transformers announces missing optional packages (torchvision) and diffusers/transformers draw a
tqdm bar per component while loading; Studiolo reports loading and progress itself (CLI bar, job
events). A user who sets TRANSFORMERS_VERBOSITY or DIFFUSERS_VERBOSITY keeps their choice.
"""

from __future__ import annotations

import os
import threading

_done = False
_lock = threading.Lock()


def quiet_hf_libraries() -> None:
    """Call before the first diffusers/transformers import of a code path (idempotent, thread-safe)."""
    global _done
    with _lock:
        if _done:
            return
        user_set_transformers = "TRANSFORMERS_VERBOSITY" in os.environ
        user_set_diffusers = "DIFFUSERS_VERBOSITY" in os.environ
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        # The variables only act when the library is first imported; it may have been imported already.
        if not user_set_transformers:
            transformers_logging.set_verbosity_error()
        if not user_set_diffusers:
            diffusers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        diffusers_logging.disable_progress_bar()
        _done = True
