"""Hosted image providers as engines (issue 18): each speaks one provider's real protocol behind the Engine contract.

A provider is offered when its settings say so (its key, or for a server of your own its base URL); only offered
providers' modules are imported. ``studiolo models add-remote ID --provider NAME --remote-model NAME`` registers a
model that runs there (catalog.add_remote). The shared machinery (retries honouring Retry-After, a circuit breaker
per provider, error mapping, cost per image) is in ``base.py``; docs/compatibility.md#hosted-providers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from studiolo.engines.base import Engine
from studiolo.settings import Settings

# provider name -> (module:class, whether the settings offer it)
PROVIDERS: dict[str, tuple[str, Callable[[Settings], bool]]] = {
    "openai": ("studiolo.engines.remote.openai_images:OpenAIImagesEngine", lambda s: bool(s.provider_openai_api_key)),
    "gemini": ("studiolo.engines.remote.gemini:GeminiImageEngine", lambda s: bool(s.provider_gemini_api_key)),
    "stability": ("studiolo.engines.remote.stability:StabilityEngine", lambda s: bool(s.provider_stability_api_key)),
    "replicate": ("studiolo.engines.remote.replicate:ReplicateEngine", lambda s: bool(s.provider_replicate_api_token)),
    "fal": ("studiolo.engines.remote.fal:FalEngine", lambda s: bool(s.provider_fal_api_key)),
    "pollinations": (
        "studiolo.engines.remote.pollinations:PollinationsEngine",
        lambda s: s.provider_pollinations_enabled,
    ),
    "a1111": ("studiolo.engines.remote.a1111:A1111Engine", lambda s: bool(s.provider_a1111_base_url)),
    "comfyui": ("studiolo.engines.remote.comfyui:ComfyUIEngine", lambda s: bool(s.provider_comfyui_base_url)),
}


def engine_class(provider: str) -> type[Engine]:
    """The engine class of ``provider`` (imports its module)."""
    target = PROVIDERS[provider][0]
    module, _, name = target.partition(":")
    cls: type[Engine] = getattr(importlib.import_module(module), name)
    return cls


def remote_engines(settings: Settings) -> dict[str, Engine]:
    """An engine for every provider the settings offer, by provider name (the engine name of its models)."""
    return {
        name: engine_class(name)(settings)  # type: ignore[call-arg]
        for name, (_target, offered) in PROVIDERS.items()
        if offered(settings)
    }
