"""What the adapter importer reads from a file's tensor names and shapes (engines/adapter_files.py): the kind, the
base family, the layout, and the refusals (damaged files, pickles, files that are no adapter)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from studiolo.engines.adapter_files import guess_control_type, inspect_adapter_path, normalise_kind, sha256_file
from studiolo.engines.model_files import ModelFileError
from tests import synthetic_adapters as fake


@pytest.mark.parametrize(("context_dim", "family"), [(768, "sd15"), (1024, "sd21"), (2048, "sdxl"), (32, None)])
def test_a_kohya_lora_is_told_apart_by_its_cross_attention_width(
    tmp_path: Path, context_dim: int, family: str | None
) -> None:
    found = inspect_adapter_path(fake.kohya_lora(tmp_path / "style.safetensors", context_dim, rank=4))
    assert (found.kind, found.family, found.format, found.context_dim) == ("lora", family, "kohya", context_dim)
    assert found.meta["rank"] == 4 and found.meta["context_dim"] == context_dim
    assert found.weight_file == tmp_path / "style.safetensors"
    assert found.size_bytes == (tmp_path / "style.safetensors").stat().st_size


def test_an_sdxl_kohya_lora_is_known_by_its_two_text_encoders(tmp_path: Path) -> None:
    found = inspect_adapter_path(fake.kohya_lora(tmp_path / "xl.safetensors", 2048, sdxl=True))
    assert (found.family, found.context_dim) == ("sdxl", 2048)


def test_peft_and_old_diffusers_keys(tmp_path: Path) -> None:
    tiny = inspect_adapter_path(fake.peft_lora(tmp_path / "tiny.safetensors", 32, rank=2))
    assert (tiny.kind, tiny.family, tiny.format, tiny.context_dim, tiny.meta["rank"]) == ("lora", None, "peft", 32, 2)
    sd21 = inspect_adapter_path(fake.peft_lora(tmp_path / "sd21.safetensors", 1024))
    assert (sd21.family, sd21.format) == ("sd21", "peft")
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora"
    old = fake.save(tmp_path / "old.safetensors", {f"{key}.down.weight": (4, 768), f"{key}.up.weight": (320, 4)})
    assert (inspect_adapter_path(old).family, inspect_adapter_path(old).format) == ("sd15", "peft")


def test_lycoris_and_text_encoder_only_loras(tmp_path: Path) -> None:
    key = fake.KOHYA_TO_K
    loha = fake.save(
        tmp_path / "loha.safetensors",
        {
            f"{key}.hada_w1_a": (320, 4),
            f"{key}.hada_w1_b": (4, 768),
            f"{key}.hada_w2_a": (320, 4),
            f"{key}.hada_w2_b": (4, 768),
            f"{key}.alpha": (),
        },
    )
    found = inspect_adapter_path(loha)
    assert (found.kind, found.family, found.format, found.meta.get("lycoris")) == ("lora", "sd15", "kohya", True)
    lokr = fake.save(tmp_path / "lokr.safetensors", {f"{key}.lokr_w1": (4, 4), f"{key}.lokr_w2": (80, 192)})
    assert inspect_adapter_path(lokr).kind == "lora"
    text_only = fake.save(
        tmp_path / "te.safetensors", {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 1024)}
    )
    assert inspect_adapter_path(text_only).family == "sd21"


def test_embeddings(tmp_path: Path) -> None:
    sd15 = inspect_adapter_path(fake.embedding(tmp_path / "bad-hands.safetensors", 768, vectors=6))
    assert (sd15.kind, sd15.family, sd15.format, sd15.meta["vectors"]) == ("embedding", "sd15", "a1111", 6)
    assert inspect_adapter_path(fake.embedding(tmp_path / "sd2.safetensors", 1024)).family == "sd21"
    tiny = inspect_adapter_path(fake.embedding(tmp_path / "tiny.safetensors", 32, vectors=1))
    assert (tiny.family, tiny.context_dim) == (None, 32)
    xl = inspect_adapter_path(fake.sdxl_embedding(tmp_path / "xl.safetensors", vectors=3))
    assert (xl.kind, xl.family, xl.meta["vectors"]) == ("embedding", "sdxl", 3)


def test_controlnets_single_files_and_folders(tmp_path: Path) -> None:
    ldm = inspect_adapter_path(fake.controlnet_ldm_file(tmp_path / "control_v11p_sd15_openpose.safetensors"))
    assert (ldm.kind, ldm.family, ldm.format, ldm.meta["control_type"]) == ("controlnet", "sd15", "ldm", "pose")
    one_file = inspect_adapter_path(fake.controlnet_diffusers_file(tmp_path / "controlnet-canny-sdxl-1.0.safetensors"))
    assert (one_file.family, one_file.format, one_file.meta["control_type"]) == ("sdxl", "diffusers", "canny")
    folder = inspect_adapter_path(fake.controlnet_folder(tmp_path / "tiny-controlnet-depth", 32))
    assert (folder.kind, folder.family, folder.format, folder.context_dim) == ("controlnet", None, "diffusers", 32)
    assert folder.meta["control_type"] == "depth"
    assert folder.meta["weight_name"] == "diffusion_pytorch_model.safetensors"
    xl = inspect_adapter_path(fake.controlnet_folder(tmp_path / "xl-scribble", 2048, sdxl=True))
    assert (xl.family, xl.meta["control_type"]) == ("sdxl", "scribble")
    unnamed = inspect_adapter_path(fake.controlnet_folder(tmp_path / "my-net", 768))
    assert "control_type" not in unnamed.meta  # the catalog then asks for --control-type


@pytest.mark.parametrize(
    ("name", "control_type"),
    [
        ("control_v11p_sd15_openpose", "pose"),
        ("control_v11f1p_sd15_depth", "depth"),
        ("controlnet-canny-sdxl-1.0", "canny"),
        ("control_v11p_sd15_softedge", "softedge"),
        ("control_sd15_hed", "softedge"),
        ("control_v11p_sd15_lineart", "lineart"),
        ("control_v11f1e_sd15_tile", "tile"),
        ("control_v11p_sd15_seg", "seg"),
        ("control_v11p_sd15_mlsd", "mlsd"),
        ("control_v11p_sd15_normalbae", "normal"),
        ("my-net", None),
        ("segmind-unknown", None),
    ],
)
def test_control_type_from_the_name(name: str, control_type: str | None) -> None:
    assert guess_control_type(name) == control_type


def test_an_ip_adapter_needs_its_image_encoder(tmp_path: Path) -> None:
    adapter = fake.ip_adapter(tmp_path / "models" / "ip-adapter_sd15.safetensors", 768)
    with pytest.raises(ModelFileError) as refused:
        inspect_adapter_path(adapter)
    assert refused.value.code == "image_encoder_required" and "--image-encoder" in str(refused.value)
    encoder = fake.image_encoder(tmp_path / "models" / "image_encoder")
    found = inspect_adapter_path(adapter)
    assert (found.kind, found.family, found.context_dim) == ("ip_adapter", "sd15", 768)
    assert found.meta["image_encoder"] == str(encoder.resolve())
    assert found.size_bytes > adapter.stat().st_size  # the encoder travels with it
    elsewhere = fake.image_encoder(tmp_path / "encoders" / "vit-h")
    assert inspect_adapter_path(adapter, image_encoder=elsewhere).meta["image_encoder"] == str(elsewhere.resolve())
    not_clip = tmp_path / "not-clip"
    not_clip.mkdir()
    (not_clip / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelFileError, match="CLIP vision"):
        inspect_adapter_path(adapter, image_encoder=not_clip)


def test_a_depth_estimation_folder_is_a_preprocessor(tmp_path: Path) -> None:
    found = inspect_adapter_path(fake.depth_preprocessor(tmp_path / "dpt-hybrid-midas"))
    assert (found.kind, found.family, found.meta["preprocessor"]) == ("preprocessor", None, "depth")
    assert found.weight_file == tmp_path / "dpt-hybrid-midas" / "model.safetensors"


def test_damaged_files_are_model_file_corrupt(tmp_path: Path) -> None:
    whole = fake.kohya_lora(tmp_path / "whole.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(whole[: len(whole) - 16])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\x01\x02")
    for damaged in (truncated, garbage, tiny):
        with pytest.raises(ModelFileError) as refused:
            inspect_adapter_path(damaged)
        assert refused.value.code == "model_file_corrupt", damaged
    folder = fake.controlnet_folder(tmp_path / "canny-net")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError) as bad_config:
        inspect_adapter_path(folder)
    assert bad_config.value.code == "model_file_corrupt"


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".bin", ".pth"])
def test_pickles_are_refused(tmp_path: Path, suffix: str) -> None:
    pickle = tmp_path / f"lora{suffix}"
    pickle.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelFileError) as refused:
        inspect_adapter_path(pickle)
    assert refused.value.code == "model_format_unsupported" and "pickle" in str(refused.value)


def test_a_controlnet_folder_with_only_pickled_weights_is_refused(tmp_path: Path) -> None:
    folder = fake.controlnet_folder(tmp_path / "canny")
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelFileError) as refused:
        inspect_adapter_path(folder)
    assert refused.value.code == "model_format_unsupported"


def test_what_is_no_adapter_is_refused_with_what_is_accepted(tmp_path: Path) -> None:
    other = fake.save(tmp_path / "vae.safetensors", {"encoder.conv_in.weight": (8, 3, 3, 3)})
    with pytest.raises(ModelFileError) as refused:
        inspect_adapter_path(other)
    assert refused.value.code == "model_format_unsupported"
    assert "LoRA" in str(refused.value) and "ControlNet" in str(refused.value) and "embedding" in str(refused.value)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match=r"not a \.safetensors"):
        inspect_adapter_path(text)
    pipeline = tmp_path / "pipe"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text("{}")
    with pytest.raises(ModelFileError, match="pipeline"):
        inspect_adapter_path(pipeline)
    with pytest.raises(ModelFileError) as missing:
        inspect_adapter_path(tmp_path / "nowhere.safetensors")
    assert missing.value.code == "model_path_not_found"


def test_a_kind_the_file_is_not_is_refused(tmp_path: Path) -> None:
    lora = fake.kohya_lora(tmp_path / "style.safetensors")
    assert inspect_adapter_path(lora, "lora").kind == "lora"
    with pytest.raises(ModelFileError, match="is a LoRA, not a ControlNet") as refused:
        inspect_adapter_path(lora, "controlnet")
    assert refused.value.code == "model_format_unsupported"
    assert normalise_kind("ip-adapter") == "ip_adapter" and normalise_kind("LyCORIS") == "lora"
    with pytest.raises(ModelFileError) as unknown:
        normalise_kind("vae")
    assert unknown.value.code == "invalid_adapter_kind"


def test_sha256_streams_the_whole_file(tmp_path: Path) -> None:
    lora = fake.kohya_lora(tmp_path / "style.safetensors")
    assert sha256_file(lora) == hashlib.sha256(lora.read_bytes()).hexdigest()


@pytest.mark.parametrize("chunk", [1, 7, 100, 1 << 20])
def test_the_addnet_hash_covers_the_tensor_data_only(
    tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A1111 writes a LoRA's "Lora hashes" as the sha256 of the bytes after the .safetensors header (Civitai's AutoV3):
    the file's header may change (its metadata) without changing that hash."""
    import hashlib

    import torch
    from safetensors.torch import save_file

    from studiolo.engines import adapter_files

    path = tmp_path / "a.safetensors"
    save_file({"x": torch.arange(3000, dtype=torch.float32), "y": torch.ones(7)}, str(path))
    relabelled = tmp_path / "b.safetensors"
    save_file({"x": torch.arange(3000, dtype=torch.float32), "y": torch.ones(7)}, str(relabelled), {"ss_note": "hi"})
    monkeypatch.setattr(adapter_files, "_HASH_CHUNK", chunk)
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    full, addnet = adapter_files.file_hashes(path)
    assert full == hashlib.sha256(data).hexdigest()
    assert addnet == hashlib.sha256(data[8 + header :]).hexdigest()
    other_full, other_addnet = adapter_files.file_hashes(relabelled)
    assert other_full != full and other_addnet == addnet
