"""Issue 19: a job's adapters and hires fix in the A1111 text and the image metadata (domain/generation/infotext.py),
and what a remix restores of them (domain/generation/submission.py regenerate_params). Pure functions: params dicts,
AdapterRefs and in-memory rows; no engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from studiolo.domain.gallery import imaging
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.schemas import ImageView, RegenerateRequest
from studiolo.domain.generation.infotext import (
    a1111_prompts,
    adapter_meta,
    adapter_settings,
    hires_upscaler_id,
    read_control_unit,
)
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.submission import regenerate_params
from studiolo.engines.base import AdapterRef

SHA = "0123456789abcdef" * 4


def ref(name: str, kind: str = "lora", family: str | None = "sd15", sha256: str | None = SHA) -> AdapterRef:
    return AdapterRef(name, kind, Path(name), family=family, sha256=sha256)  # type: ignore[arg-type]


def job_params(**extra: Any) -> dict[str, Any]:
    return {
        "prompt": "a castle",
        "negative_prompt": "",
        "final_prompt": "a castle",
        "final_negative_prompt": "",
        "width": 512,
        "height": 512,
        **extra,
    }


def test_settings_are_written_as_a1111_and_sd_webui_controlnet_write_them() -> None:
    params = job_params(
        loras=[{"name": "detail", "weight": 0.8}, {"name": "nohash", "weight": 1.0}],
        embeddings=["easyneg"],
        controls=[
            {"type": "canny", "model": "cn-canny", "strength": 1.0, "start": 0.0, "end": 1.0, "preprocess": True},
            {"type": "pose", "model": "cn-pose", "strength": 0.5, "start": 0.25, "end": 0.75, "preprocess": False},
        ],
        reference={"model": "ipa-xl", "strength": 0.6},
        hires={"scale": 2.0, "upscaler": "latent", "strength": 0.5, "steps": 10, "width": 1024, "height": 1024},
    )
    refs = {
        "detail": ref("detail"),
        "nohash": ref("nohash", sha256=None),  # imported without a hash: named in the prompt, not in the hashes
        "easyneg": ref("easyneg", "embedding", sha256="fedcba9876543210" * 4),
        "cn-canny": ref("cn-canny", "controlnet"),
        "ipa-xl": ref("ipa-xl", "ip_adapter", family="sdxl"),
    }
    settings = adapter_settings(params, refs)
    assert settings == {
        "Denoising strength": 0.5,
        "Hires upscale": 2.0,
        "Hires steps": 10,
        "Hires upscaler": "Latent",
        "Lora hashes": "detail: 0123456789ab",
        "TI hashes": "easyneg: fedcba987654",
        "ControlNet 0": "Module: canny, Model: cn-canny [01234567], Weight: 1.0, Resize Mode: Crop and Resize, "
        "Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, "
        "Pixel Perfect: False, Control Mode: Balanced",
        "ControlNet 1": "Module: none, Model: cn-pose, Weight: 0.5, Resize Mode: Crop and Resize, Processor Res: 512, "
        "Guidance Start: 0.25, Guidance End: 0.75, Pixel Perfect: False, Control Mode: Balanced",
        "ControlNet 2": "Module: ip-adapter_clip_sdxl, Model: ipa-xl [01234567], Weight: 0.6, Resize Mode: Crop and "
        "Resize, Processor Res: 512, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, "
        "Control Mode: Balanced",
    }
    text = imaging.a1111_parameters(
        prompt=a1111_prompts(params)[0], negative_prompt="", steps=20, sampler="Euler", cfg_scale=7.0, seed=1,
        width=512, height=512, model="sd15", extra=settings,
    )  # fmt: skip
    # One quoted value per unit and per hash list, as A1111 quotes a value holding ',' or ':'.
    assert text.startswith("a castle <lora:detail:0.8> <lora:nohash:1>\nSteps: 20,")
    quoted = ', Lora hashes: "detail: 0123456789ab", TI hashes: "easyneg: fedcba987654", ControlNet 0: "Module: canny, '
    assert quoted in text
    assert read_control_unit(str(settings["ControlNet 2"])) == ("reference", {"model": "ipa-xl", "strength": 0.6})


def test_a_job_without_adapters_writes_nothing_new() -> None:
    params = job_params()
    assert adapter_settings(params, {}) == {} and adapter_meta(params) == {}
    assert a1111_prompts(params) == ("a castle", "")


@pytest.mark.parametrize(
    ("typed", "final", "loras", "written"),
    [
        # Tags typed stay where they were; a LoRA given in the field is added after them.
        ("a <lora:x:0.5> castle", "a castle", [{"name": "x", "weight": 0.5}, {"name": "y", "weight": 1.0}],
         "a <lora:x:0.5> castle <lora:y:1>"),
        # A style changed the prompt: the engine's prompt, with every LoRA's tag.
        ("a <lora:x:0.5> castle", "a castle, oil painting", [{"name": "x", "weight": 0.5}],
         "a castle, oil painting <lora:x:0.5>"),
        # The field and a tag named the same LoRA: the job's weight (the tag's) is what the text says.
        ("a castle <lora:x:2>", "a castle", [{"name": "x", "weight": 2.0}], "a castle <lora:x:2>"),
        ("", "", [{"name": "x", "weight": -0.25}], "<lora:x:-0.25>"),
    ],
)  # fmt: skip
def test_the_prompt_carries_each_lora_as_a_tag(typed: str, final: str, loras: list[Any], written: str) -> None:
    params = job_params(prompt=typed, final_prompt=final, loras=loras)
    assert a1111_prompts(params)[0] == written


def test_a_tag_in_the_negative_prompt_stays_there() -> None:
    params = job_params(
        negative_prompt="blurry <lora:neg:1>", final_negative_prompt="blurry", loras=[{"name": "neg", "weight": 1.0}]
    )
    assert a1111_prompts(params) == ("a castle", "blurry <lora:neg:1>")


def test_hires_upscaler_names() -> None:
    assert [hires_upscaler_id(n) for n in ("Latent", "Latent (antialiased)", "Lanczos", "None", "R-ESRGAN 4x+")] == [
        "latent",
        "latent",
        "lanczos",
        "lanczos",
        "R-ESRGAN 4x+",
    ]


def _image(**meta: Any) -> Image:
    return Image(
        id="img",
        owner_id="u",
        job_id="job",
        kind="txt2img",
        prompt="a knight <lora:armor:0.5>",
        negative_prompt="",
        style=None,
        model_id="sd15",
        seed=11,
        steps=20,
        guidance=7.0,
        sampler="euler",
        width=1024,
        height=1536,
        tags=[],
        meta=meta,
    )


ADAPTERS: dict[str, Any] = {
    "loras": [{"name": "detail", "weight": 0.8}, {"name": "armor", "weight": 0.5}],
    "embeddings": ["easyneg"],
    "controls": [
        {"type": "canny", "model": "cn-canny", "strength": 0.9, "start": 0.1, "end": 0.8, "preprocess": False}
    ],
    "reference": {"model": "ipa-sd15", "strength": 0.3},
}


def test_regenerate_restores_adapters_hires_and_the_first_pass_size_from_the_job() -> None:
    hires = {"scale": 2.0, "upscaler": "lanczos", "strength": 0.45, "steps": 12, "width": 1024, "height": 1536}
    job = Job(id="job", params=job_params(width=512, height=768, strength=0.75, hires=hires, **ADAPTERS))
    p = regenerate_params(_image(), job, RegenerateRequest(seed="same"))
    assert (p.width, p.height, p.seed) == (512, 768, 11)  # the first pass; the image is the final 1024x1536
    assert p.hires is not None
    assert p.hires.model_dump() == {k: hires[k] for k in ("scale", "upscaler", "strength", "steps")}
    assert [x.model_dump() for x in p.loras] == ADAPTERS["loras"]
    assert [u.model_dump() for u in p.controls] == [{**ADAPTERS["controls"][0], "image": None}]
    assert (p.reference_model, p.reference_strength) == ("ipa-sd15", 0.3)
    assert p.prompt == "a knight <lora:armor:0.5>"  # embeddings and typed tags come back with the prompt


def test_regenerate_without_the_job_reads_the_images_metadata() -> None:
    """An image whose job is gone: the metadata outputs.py wrote (adapter_meta; width/height the first pass's)."""
    hires = {"scale": 2.0, "upscaler": "latent", "strength": 0.5, "steps": 20, "width": 1024, "height": 1536}
    params = job_params(width=512, height=768, hires=hires, **ADAPTERS)
    meta = {"width": 512, "height": 768, **adapter_meta(params)}
    p = regenerate_params(_image(**meta), None, RegenerateRequest(seed="new"))
    assert (p.width, p.height, p.seed) == (512, 768, None)
    assert p.hires is not None and p.hires.upscaler == "latent" and p.hires.steps == 20
    assert [x.name for x in p.loras] == ["detail", "armor"] and p.controls[0].model == "cn-canny"
    # A plain image keeps its own size and gets no adapters.
    plain = regenerate_params(_image(), Job(id="job", params=job_params()), RegenerateRequest())
    assert (plain.width, plain.height, plain.loras, plain.controls, plain.hires) == (1024, 1536, [], [], None)
    assert plain.reference_model is None


def test_the_image_view_shows_the_adapters_of_its_metadata() -> None:
    hires = {"scale": 2.0, "upscaler": "latent", "strength": 0.5, "steps": 20, "width": 1024, "height": 1536}
    metadata = adapter_meta(job_params(hires=hires, **ADAPTERS))
    view = ImageView.model_validate(
        {
            "id": "i", "job_id": None, "kind": "txt2img", "prompt": "p", "negative_prompt": "", "style": None,
            "model": "m", "seed": 1, "steps": 2, "guidance": 7.0, "sampler": None, "width": 1024, "height": 1536,
            "size_bytes": 1, "tags": [], "starred": False, "public": False, "metadata": metadata,
            "created_at": "2026-01-01T00:00:00Z", "trashed_at": None, "purge_at": None,
            "urls": {"file": "f", "thumbnails": {}},
        }
    )  # fmt: skip
    assert [x.model_dump() for x in view.loras] == ADAPTERS["loras"] and view.embeddings == ["easyneg"]
    assert view.controls[0].model == "cn-canny" and view.reference is not None and view.reference.strength == 0.3
    assert view.hires is not None and view.hires.model_dump() == {"scale": 2.0, "upscaler": "latent", "strength": 0.5,
                                                                   "steps": 20}  # fmt: skip
    assert "width" not in metadata["hires"]  # the final size is the image's own
