"""Reading generation settings back from PNGs (domain/generation/pnginfo.py): AUTOMATIC1111 text, Studiolo's own
chunk and ComfyUI graphs, each from a fixture shaped as that tool writes it (tests/fixtures/pnginfo/)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from studiolo.domain.adapters.prompt import lora_tags
from studiolo.domain.gallery import imaging
from studiolo.domain.generation.infotext import a1111_prompts, adapter_settings
from studiolo.domain.generation.pnginfo import read_png_info
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.engines.base import AdapterRef
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
        # "Denoising strength" with "Hires upscale" is the hires pass's; A1111's default upscaler is Latent.
        "hires": {"scale": 2.0, "strength": 0.45, "upscaler": "latent"},
        "variation_seed": 99,
        "variation_strength": 0.3,
    }
    # Hashes and versions say nothing to use again; a setting without a field is named, not dropped silently.
    assert info.unmapped == ["Clip skip: 2"]


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


# --- issue 19: adapters and hires fix -------------------------------------------------------------------------


def test_a1111_text_with_loras_controlnet_units_and_hires_maps_them() -> None:
    """An A1111 + sd-webui-controlnet infotext: LoRA tags stay in the prompt (submit reads them), the hires settings
    and the ControlNet units become fields, an IP-Adapter unit is the reference; only what cannot map is listed."""
    text = (FIXTURES / "a1111_adapters.txt").read_text()
    info = read_png_info(png_with(parameters=text), max_bytes=LIMIT)
    assert info.source == "a1111"
    p = info.parameters
    assert p["prompt"] == (
        "portrait of a knight in ornate armor, <lora:add_detail:0.6>, dramatic light <lora:armor_style_v2:0.85>"
    )
    assert (p["width"], p["height"], p["steps"], p["seed"]) == (512, 768, 24, 2718281828)  # Size: the first pass
    assert p["hires"] == {"scale": 2.0, "steps": 12, "upscaler": "latent", "strength": 0.45}
    assert "strength" not in p  # the denoising strength was the hires pass's, not an img2img strength
    assert p["controls"] == [
        {"type": "pose", "model": "control_v11p_sd15_openpose", "strength": 0.8, "start": 0.1, "end": 0.9,
         "preprocess": True},
        {"type": "depth", "model": "control_v11f1p_sd15_depth", "strength": 0.5, "start": 0.0, "end": 0.6,
         "preprocess": False},
    ]  # fmt: skip
    assert (p["reference_model"], p["reference_strength"]) == ("ip-adapter_sd15", 0.7)
    # The unused unit (Module none, Model None) says nothing; a shuffle unit has no control type of ours.
    assert [u.split(":")[0] for u in info.unmapped] == ["ControlNet 4"]
    # What was read is a valid request as it stands (the control pictures are asked for at submit).
    request = GenerationParams.model_validate(p)
    assert [lora["name"] for lora in lora_tags(request.prompt)[1]] == ["add_detail", "armor_style_v2"]


def test_a1111_hires_upscaler_names_and_what_does_not_map() -> None:
    def hires(extra: str) -> tuple[dict[str, object] | None, list[str]]:
        info = read_png_info(png_with(parameters=f"a cat\nSteps: 20, Seed: 5, Size: 64x64, {extra}"), max_bytes=LIMIT)
        return info.parameters.get("hires"), info.unmapped  # type: ignore[return-value]

    assert hires("Denoising strength: 0.3, Hires upscale: 1.5, Hires upscaler: Lanczos")[0] == {
        "scale": 1.5, "strength": 0.3, "upscaler": "lanczos"
    }  # fmt: skip
    assert hires("Hires upscale: 2, Hires upscaler: None")[0] == {"scale": 2.0, "strength": 0.5, "upscaler": "lanczos"}
    assert hires("Hires upscale: 2, Hires upscaler: 4x-UltraSharp")[0]["upscaler"] == "4x-UltraSharp"  # type: ignore[index]
    # Resized to a size rather than a scale: no field holds that; it and the strength that belongs to it are listed.
    found, unmapped = hires("Denoising strength: 0.4, Hires resize: 1024x1024, Hires upscaler: Latent")
    assert found is None
    assert unmapped == ["Hires upscaler: Latent", "Hires resize: 1024x1024", "Denoising strength: 0.4"]
    # Without hires, "Denoising strength" is an image-to-image strength.
    plain = "a\nSteps: 2, Seed: 1, Size: 64x64, Denoising strength: 0.6"
    info = read_png_info(png_with(parameters=plain), max_bytes=LIMIT)
    assert info.parameters["strength"] == 0.6 and "hires" not in info.parameters


def test_studiolo_chunk_gives_back_loras_controls_reference_and_hires() -> None:
    meta = {
        "generator": "studiolo",
        "prompt": "a knight <lora:armor:0.5>",
        "negative_prompt": "",
        "model": "sd15",
        "seed": 7,
        "steps": 20,
        "guidance": 7.0,
        "sampler": "euler",
        "width": 512,  # the first pass's: the image is 1024x1024
        "height": 512,
        "loras": [{"name": "detail", "weight": 0.8}, {"name": "armor", "weight": 0.5}],
        "embeddings": ["easyneg"],
        "controls": [
            {"type": "canny", "model": "cn-canny", "strength": 0.9, "start": 0.0, "end": 0.8, "preprocess": True}
        ],
        "reference": {"model": "ipa-sd15", "strength": 0.4},
        "hires": {"scale": 2.0, "upscaler": "lanczos", "strength": 0.5, "steps": 10},
    }
    data = imaging.encode_png(Image.new("RGB", (1024, 1024)), parameters="", metadata=meta)
    info = read_png_info(data, max_bytes=LIMIT)
    assert info.source == "studiolo" and info.unmapped == []
    p = info.parameters
    assert p["loras"] == meta["loras"] and p["controls"] == meta["controls"] and p["hires"] == meta["hires"]
    assert (p["reference_model"], p["reference_strength"]) == ("ipa-sd15", 0.4)
    assert (p["width"], p["height"]) == (512, 512)
    assert "embeddings" not in p  # prompt words: the prompt brings them back
    GenerationParams.model_validate(p)


def test_a1111_text_written_for_a_job_reads_back_as_its_settings() -> None:
    """Round trip: a job's params -> the A1111 text outputs.py writes -> PNG-info -> the same request."""
    params = {
        "prompt": "a knight, <lora:armor:0.5> at dawn",
        "negative_prompt": "blurry",
        "final_prompt": "a knight, at dawn",
        "final_negative_prompt": "blurry",
        "width": 512,
        "height": 768,
        "loras": [{"name": "detail-tweaker", "weight": 1.0}, {"name": "armor", "weight": 0.5}],
        "embeddings": ["easyneg"],
        "controls": [
            {"type": "canny", "model": "cn-canny", "strength": 0.9, "start": 0.0, "end": 0.8, "preprocess": True},
            {"type": "depth", "model": "cn-depth-sd15", "strength": 1.5, "start": 0.2, "end": 1.0, "preprocess": False},
        ],
        "reference": {"model": "ipa-sd15", "strength": 0.4},
        "hires": {"scale": 2.0, "upscaler": "esrgan-x4", "strength": 0.55, "steps": 10, "width": 1024, "height": 1536},
    }
    refs = {
        name: AdapterRef(name, "lora", Path(name), sha256=f"{i:x}" * 64)
        for i, name in enumerate(["detail-tweaker", "armor", "easyneg", "cn-canny", "cn-depth-sd15", "ipa-sd15"])
    }
    prompt, negative = a1111_prompts(params)
    text = imaging.a1111_parameters(
        prompt=prompt, negative_prompt=negative, steps=20, sampler="Euler", cfg_scale=7.0, seed=3,
        width=512, height=768, model="sd15", extra=adapter_settings(params, refs),
    )  # fmt: skip
    info = read_png_info(png_with(parameters=text), max_bytes=LIMIT)
    p = info.parameters
    assert info.unmapped == []
    assert lora_tags(p["prompt"]) == ("a knight, at dawn", [
        {"name": "armor", "weight": 0.5}, {"name": "detail-tweaker", "weight": 1.0}
    ])  # fmt: skip
    assert p["controls"] == params["controls"]
    assert (p["reference_model"], p["reference_strength"]) == ("ipa-sd15", 0.4)
    hires = {k: v for k, v in params["hires"].items() if k not in ("width", "height")}  # type: ignore[union-attr]
    assert p["hires"] == hires and (p["width"], p["height"]) == (512, 768)
