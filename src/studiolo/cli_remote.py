"""``studiolo models add-remote ID --provider P --remote-model NAME``: register a model that runs at a hosted provider
(engines/remote; kept apart from cli.py for its size; cli.py registers it on ``models``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Any

import typer
from rich.console import Console

from studiolo.engines.remote import PROVIDERS
from studiolo.errors import InvalidInput

# What makes each provider offered (engines/remote/__init__.py), as the environment variable to set.
OFFERED_BY: dict[str, str] = {
    "openai": "STUDIOLO_PROVIDER_OPENAI_API_KEY",
    "gemini": "STUDIOLO_PROVIDER_GEMINI_API_KEY",
    "stability": "STUDIOLO_PROVIDER_STABILITY_API_KEY",
    "replicate": "STUDIOLO_PROVIDER_REPLICATE_API_TOKEN",
    "fal": "STUDIOLO_PROVIDER_FAL_API_KEY",
    "pollinations": "STUDIOLO_PROVIDER_POLLINATIONS_ENABLED=true",
    "a1111": "STUDIOLO_PROVIDER_A1111_BASE_URL",
    "comfyui": "STUDIOLO_PROVIDER_COMFYUI_BASE_URL",
}


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``key=value`` pairs as a dict; a value that reads as JSON (true, 3, 0.04, ["IMAGE"]) is taken as such."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(
                f"--option takes key=value, not '{pair}'.", code="invalid_option", details={"option": pair}
            )
        try:
            value: object = json.loads(raw)
        except ValueError:
            value = raw
        options[key.strip()] = value
    return options


def register_remote(models_app: typer.Typer, command_services: Callable[[], AbstractContextManager[Any]]) -> None:
    """Add ``add-remote`` to ``models_app``; ``command_services`` is cli.py's services context."""
    console = Console(stderr=True)

    @models_app.command("add-remote")
    def models_add_remote(
        model_id: Annotated[str, typer.Argument(help="The id requests will name, e.g. gpt-image.")],
        provider: Annotated[str, typer.Option(help=f"The hosted provider: {', '.join(PROVIDERS)}.")],
        remote_model: Annotated[str, typer.Option(help="The model's name at the provider, e.g. gpt-image-1.")],
        option: Annotated[
            list[str] | None,
            typer.Option(help="A provider option key=value (repeatable), e.g. base_url=..., extra_params=true."),
        ] = None,
        price: Annotated[
            float | None, typer.Option(help="What one image costs you there, in US dollars (recorded per job).")
        ] = None,
        default: Annotated[bool, typer.Option("--default", help="Make it the default model.")] = False,
    ) -> None:
        """Register a model that runs at a hosted provider (OpenAI-compatible, Gemini, Pollinations, ...)."""
        with command_services() as services:
            if provider not in PROVIDERS:
                raise InvalidInput(
                    f"Unknown provider '{provider}'; known: {', '.join(PROVIDERS)}.",
                    code="unknown_provider",
                    details={"provider": provider},
                )
            if provider not in services.engines:
                raise InvalidInput(
                    f"The provider '{provider}' is not configured: set {OFFERED_BY[provider]} (in the environment "
                    "or the .env file) and run this again.",
                    code="provider_not_configured",
                    details={"provider": provider},
                )
            options = parse_options(option or [])
            if price is not None:
                if price < 0:
                    raise InvalidInput("--price cannot be negative.", code="invalid_price", details={"price": price})
                options["price_per_image"] = price
            info = services.catalog.add_remote(
                model_id, provider=provider, remote_model=remote_model, options=options, default=default
            )
            console.print(f"[green]added[/green] {info.id}: {provider} model {remote_model}")
