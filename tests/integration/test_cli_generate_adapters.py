"""`studiolo generate`'s adapter options (issue 19): they reach the request as the API's fields, and a bad one is
refused before anything runs, with the request's own error codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from studiolo.cli_adapter_options import adapter_values
from tests.integration.test_cli_commands import Run, env, flat, run  # noqa: F401 - the fixtures

ECHO = {"STUDIOLO_ENABLE_ECHO_ENGINE": "true"}
BASE = ("generate", "a red fox", "--steps", "2", "--size", "64x64", "--model", "echo")


def test_the_options_make_the_api_fields(tmp_path: Path) -> None:
    picture = tmp_path / "edges.png"
    picture.write_bytes(b"\x89PNG fake bytes")
    values = adapter_values(
        loras=["ink", "pixel art:0.4"],
        controls=[f"canny:{picture}", f"depth:{picture}:0.5"],
        control_is_map=True,
        reference=picture,
        reference_strength=0.3,
        hires=1.5,
        hires_upscaler="latent",
        hires_strength=0.45,
        hires_steps=6,
    )
    assert values["loras"] == [{"name": "ink", "weight": 1.0}, {"name": "pixel art", "weight": 0.4}]
    assert [(u["type"], u.get("strength"), u["preprocess"]) for u in values["controls"]] == [
        ("canny", None, False),
        ("depth", 0.5, False),
    ]
    assert values["controls"][0]["image"].startswith("data:image/png;base64,")
    assert values["reference_strength"] == 0.3 and values["reference_image"].startswith("data:image/png;base64,")
    assert values["hires"] == {"scale": 1.5, "upscaler": "latent", "strength": 0.45, "steps": 6}
    none = adapter_values(
        loras=None,
        controls=None,
        control_is_map=False,
        reference=None,
        reference_strength=0.6,
        hires=None,
        hires_upscaler="lanczos",
        hires_strength=0.5,
        hires_steps=None,
    )
    assert none == {}


@pytest.mark.parametrize(
    ("extra", "code", "said"),
    [
        (("--lora", "ink:heavy"), 2, "a LoRA weight must be a number"),
        (("--control", "canny"), 2, "expected TYPE:PICTURE[:STRENGTH]"),
        (("--control", "canny:/no/such/picture.png"), 2, "cannot read /no/such/picture.png"),
        (("--lora", "ink"), 1, "adapters_unsupported"),
        (("--hires", "2"), 1, "hires_unsupported"),
        (("--hires", "9"), 2, "hires.scale"),
    ],
)
def test_bad_adapter_options_are_refused_before_the_job(
    run: Run,  # noqa: F811 - the fixture
    extra: tuple[str, ...],
    code: int,
    said: str,
) -> None:
    result = run(*BASE, *extra, **ECHO)
    assert result.exit_code == code, result.output
    assert said in flat(result.output + (result.stderr or "")), result.output
