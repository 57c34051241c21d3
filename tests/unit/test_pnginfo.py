"""Reading generation settings back from PNGs (domain/generation/pnginfo.py): AUTOMATIC1111 text, Studiolo's own
chunk and ComfyUI graphs, each from a fixture shaped as that tool writes it (tests/fixtures/pnginfo/)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from studiolo.domain.gallery import imaging
from studiolo.domain.generation.pnginfo import read_png_info
from studiolo.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pnginfo"
LIMIT = 1024 * 1024


def png_with(**chunks: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, text in chunks.items():
        info.add_text(key, text)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 120, 200)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_a1111_text_maps_every_setting_it_has_a_field_for() -> None:
    text = (FIXTURES / "a1111_parameters.txt").read_text()
    info = read_png_info(png_with(parameters=text), max_bytes=LIMIT)
    assert info.source == "a1111"
    assert info.raw == text
    assert info.parameters == {
        "prompt": "a red fox in the snow, watercolor, (masterpiece:1.2)\nsoft morning light",
        "negative_prompt": "blurry, lowres, text",
        "steps": 28,
        "sampler": "dpmpp_2m",
        "scheduler": "karras",
        "guidance": 6.5,
        "seed": 1234,
        "width": 512,
        "height": 768,
        "model": "v1-5-pruned-emaonly",
        "strength": 0.45,
        "variation_seed": 99,
        "variation_strength": 0.3,
    }
    # Hashes and versions say nothing to use again; a setting without a field is named, not dropped silently.
    assert info.unmapped == ["Hires upscale: 2"]


def test_a1111_text_of_a_sampler_we_do_not_have_is_reported_not_guessed() -> None:
    text = "a cat\nSteps: 20, Sampler: DPM++ SDE, CFG scale: 7, Seed: 5, Size: 64x64"
    info = read_png_info(png_with(parameters=text), max_bytes=LIMIT)
    assert "sampler" not in info.parameters
    assert info.unmapped == ["Sampler: DPM++ SDE"]
    assert info.parameters["seed"] == 5 and info.parameters["width"] == 64


def test_a1111_text_without_a_settings_line_is_all_prompt() -> None:
    info = read_png_info(png_with(parameters="just a prompt, nothing else"), max_bytes=LIMIT)
    assert info.source == "a1111"
    assert info.parameters == {"prompt": "just a prompt, nothing else"}


def test_studiolo_chunk_wins_and_keeps_the_prompt_as_typed() -> None:
    meta = {
        "generator": "studiolo",
        "prompt": "a lighthouse",
        "negative_prompt": "fog",
        "final_prompt": "a lighthouse, oil painting",
        "style": "oil-painting",
        "model": "studiolo-demo",
        "seed": 42,
        "steps": 8,
        "guidance": 4.0,
        "sampler": "euler",
        "width": 64,
        "height": 64,
        "strength": None,
        "job_id": "j",
    }
    parameters = imaging.a1111_parameters(
        prompt="a lighthouse, oil painting", negative_prompt="fog", steps=8, sampler="Euler", cfg_scale=4.0,
        seed=42, width=64, height=64, model="studiolo-demo",
    )  # fmt: skip
    data = imaging.encode_png(Image.new("RGB", (64, 64)), parameters=parameters, metadata=meta)
    info = read_png_info(data, max_bytes=LIMIT)
    assert info.source == "studiolo"
    # Everything but what is not a request field (final_prompt, job_id) or not set (strength None).
    not_fields = ("generator", "final_prompt", "job_id", "strength")
    assert info.parameters == {k: v for k, v in meta.items() if k not in not_fields}
    assert info.unmapped == []


def test_comfyui_graph_follows_the_links_of_its_sampler() -> None:
    graph = (FIXTURES / "comfyui_prompt.json").read_text()
    info = read_png_info(png_with(prompt=graph, workflow="{}"), max_bytes=LIMIT)
    assert info.source == "comfyui"
    assert info.parameters == {
        "prompt": "beautiful scenery nature glass bottle landscape, purple galaxy bottle",
        "negative_prompt": "text, watermark",
        "steps": 20,
        "guidance": 8.0,
        "sampler": "euler",
        "scheduler": "normal",
        "width": 512,
        "height": 640,
        # Through the LoRA loader back to the checkpoint.
        "model": "v1-5-pruned-emaonly.safetensors",
    }
    # ComfyUI seeds go past 2**32: said, not truncated.
    assert info.unmapped == ["seed: 156680208700286"]


def test_comfyui_graph_without_a_sampler_and_a_plain_png_carry_nothing() -> None:
    graph = json.dumps({"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}})
    for data in (png_with(prompt=graph), png_with(), png_with(prompt="not json"), png_with(studiolo="[1]")):
        info = read_png_info(data, max_bytes=LIMIT)
        assert (info.source, info.parameters, info.raw, info.unmapped) == (None, {}, None, [])


def test_uploads_that_are_not_readable_pngs_are_refused_with_their_codes() -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    with pytest.raises(UnsupportedMediaType) as not_png:
        read_png_info(jpeg.getvalue(), max_bytes=LIMIT)
    assert not_png.value.code == "unsupported_media_type"
    with pytest.raises(InvalidInput) as empty:
        read_png_info(b"", max_bytes=LIMIT)
    assert empty.value.code == "empty_upload"
    with pytest.raises(PayloadTooLarge) as large:
        read_png_info(png_with(parameters="x" * 5000), max_bytes=1000)
    assert large.value.code == "upload_too_large"
    with pytest.raises(InvalidInput) as broken:
        read_png_info(imaging.PNG_MAGIC + b"\x00\x00garbage", max_bytes=LIMIT)
    assert broken.value.code == "image_corrupt"
