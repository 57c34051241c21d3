"""A model the diffusers engine holds in memory, and the adapters loaded onto it (issue 19).

Adapters live on the cached pipeline they were loaded onto: LoRA layers injected into its UNet and text encoders,
embeddings added to its tokenizers, ControlNets and IP-Adapter weights kept beside it. Each adapter module
(engines/lora.py, controlnet.py, ip_adapter.py) keeps its own state in ``extras[<module>]`` and reports the bytes it
holds in ``extra_bytes[<module>]``, so the engine's byte budget counts them and evicting the model drops them with
it; no adapter ever loads a second copy of the base weights.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from studiolo.engines.accel.plan import Acceleration
from studiolo.engines.base import Capabilities, JobKind


@dataclass
class LoadedPipeline:
    base: Any  # the DiffusionPipeline loaded from disk
    pipes: dict[JobKind, Any]  # task pipelines sharing ``base``'s modules
    capabilities: Capabilities
    base_bytes: int
    device: str = "cpu"
    # Schedulers hold per-run state and the pipelines are shared, so one generation per model at a time.
    run_lock: threading.Lock = field(default_factory=threading.Lock)
    in_use: int = 0
    # Adapter state per adapter module, and the parameter bytes each holds (counted against the cache budget).
    extras: dict[str, Any] = field(default_factory=dict)
    extra_bytes: dict[str, int] = field(default_factory=dict)
    # The path this model runs on (engines/accel): fp32 as loaded unless acceleration chose another.
    accel: Acceleration = field(default_factory=lambda: Acceleration("fp32", 0))

    @property
    def size_bytes(self) -> int:
        # The accelerated path's own bytes change when a job reads released torch weights back (engines/accel).
        return self.base_bytes + sum(self.extra_bytes.values()) + self.accel.extra_bytes()


def module_bytes(*modules: Any) -> int:
    """Parameter and buffer bytes of torch modules (each counted once)."""
    import torch

    seen: set[int] = set()
    total = 0
    for module in modules:
        if isinstance(module, torch.nn.Module) and id(module) not in seen:
            seen.add(id(module))
            for tensor in (*module.parameters(), *module.buffers()):
                total += tensor.numel() * tensor.element_size()
    return total
