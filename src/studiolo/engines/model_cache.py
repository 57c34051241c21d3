"""What the engines that keep loaded pipelines share (diffusers_engine.py, image_to_video.py): dropping the least
recently used idle ones past a memory budget, and giving the freed memory back to the device."""

from __future__ import annotations

import gc
from collections import OrderedDict
from typing import Protocol, TypeVar


class CacheEntry(Protocol):
    in_use: int

    @property
    def size_bytes(self) -> int: ...


Entry = TypeVar("Entry", bound=CacheEntry)


def evict_least_recent(cache: OrderedDict[str, Entry], budget: int, *, keep: str) -> list[Entry]:
    """Drop least recently used idle entries (never ``keep``, never one in use) until the cache fits ``budget``;
    returns what was dropped. The caller holds the cache's lock."""
    total = sum(e.size_bytes for e in cache.values())
    evicted: list[Entry] = []
    for model_id in list(cache):  # least recently used first
        if total <= budget:
            break
        entry = cache[model_id]
        if model_id == keep or entry.in_use:
            continue
        del cache[model_id]
        total -= entry.size_bytes
        evicted.append(entry)
    return evicted


def free_device_memory(device: str | None) -> None:
    """Collect what was dropped, and on a CUDA device hand the cached blocks back to the driver."""
    gc.collect()
    if device is not None and device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
