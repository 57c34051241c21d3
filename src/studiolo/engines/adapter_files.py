"""Adapter files on disk (issue 19): tell a LoRA / LyCORIS, a textual-inversion embedding, a ControlNet, an
IP-Adapter or a ControlNet preprocessor from its tensor names and shapes, and which base family it was made for.

Like engines/model_files.py this reads .safetensors headers and config.json files only: no torch, no weights loaded,
so the catalog and the CLI can inspect a multi-gigabyte file in milliseconds. Errors are ``ModelFileError`` with the
model importer's codes (``model_path_not_found``, ``model_format_unsupported``, ``model_file_corrupt``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studiolo.engines.base import AdapterKind
from studiolo.engines.model_files import UNSAFE_SUFFIXES, ModelFileError, read_safetensors_header

# The text-encoder context width each family's UNet cross-attends to: what tells an adapter's family apart.
FAMILY_BY_CONTEXT_DIM = {768: "sd15", 1024: "sd21", 2048: "sdxl"}
ACCEPTED = (
    "a LoRA / LyCORIS .safetensors file (kohya or diffusers/PEFT keys), a textual-inversion embedding .safetensors, "
    "a ControlNet (a diffusers folder with config.json, or a single .safetensors file), an IP-Adapter .safetensors "
    "(with its image_encoder folder), or a depth-estimation preprocessor folder (transformers DPT / Depth Anything)"
)
# Words in a ControlNet's file or folder name that say what control maps it takes (control_v11p_sd15_openpose,
# controlnet-canny-sdxl-1.0, ...), checked in this order: "softedge" before "edge"-like words, "lineart" before "line".
_CONTROL_WORDS: tuple[tuple[str, str], ...] = (
    ("canny", "canny"),
    ("depth", "depth"),
    ("openpose", "pose"),
    ("pose", "pose"),
    ("scribble", "scribble"),
    ("lineart", "lineart"),
    ("softedge", "softedge"),
    ("hed", "softedge"),
    ("pidi", "softedge"),
    ("tile", "tile"),
    ("seg", "seg"),
    ("normal", "normal"),
    ("mlsd", "mlsd"),
)
_DEPTH_MODEL_TYPES = frozenset({"dpt", "depth_anything", "glpn", "zoedepth"})
# LoRA weight names: kohya / LyCORIS (lora_down, hada_w1_a, lokr_w1...), PEFT (lora_A) and old diffusers (lora.down).
_LORA_MARKERS = (
    ".lora_down.",
    ".lora_up.",
    ".lora_A.",
    ".lora_B.",
    ".lora.down.",
    ".lora.up.",
    "_lora.down.",
    "_lora.up.",
    ".hada_w1_",
    ".hada_w2_",
    ".lokr_w1",
    ".lokr_w2",
    ".ia3_",
    ".oft_",
)
_DOWN_MARKERS = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight", "_lora.down.weight", ".hada_w1_b")
_HASH_CHUNK = 8 * 2**20
# A UNet cross-attention's key projection: kohya "attn2_to_k", diffusers "attn2.to_k", old "attn2.processor.to_k_lora".
_CROSS_TO_K = re.compile(r"attn2[._](?:processor\.)?to_k")


@dataclass(frozen=True)
class AdapterInspection:
    kind: AdapterKind
    # "sd15", "sd21", "sdxl", or None when the tensors do not say (a custom base, e.g. a tiny test model).
    family: str | None
    # How the tensors are laid out: "kohya", "peft", "a1111", "diffusers", "ldm", "ip_adapter", "transformers".
    format: str
    context_dim: int | None
    # What the catalog stores in the row's meta (engines read it): rank, vectors, control_type, image_encoder...
    meta: dict[str, Any] = field(default_factory=dict)
    size_bytes: int = 0
    # The file whose sha256 identifies the adapter (the single file, or the weights inside a folder).
    weight_file: Path | None = None


def normalise_kind(kind: str | None) -> AdapterKind | None:
    """The kind as stored, from what a user may type (``ip-adapter``, ``LoRA``, ``lycoris``, ``ti``)."""
    if kind is None:
        return None
    value = kind.strip().lower().replace("-", "_")
    aliases = {"lycoris": "lora", "locon": "lora", "ti": "embedding", "textual_inversion": "embedding"}
    value = aliases.get(value, value)
    if value not in ("lora", "embedding", "controlnet", "ip_adapter", "preprocessor"):
        raise ModelFileError(
            f"Unknown adapter kind '{kind}': use lora, embedding, controlnet, ip-adapter or preprocessor.",
            "invalid_adapter_kind",
        )
    return value  # type: ignore[return-value]


def guess_control_type(name: str) -> str | None:
    """The control type a ControlNet's file or folder name says (``control_v11p_sd15_openpose`` -> pose), if any."""
    words = re.split(r"[^a-z0-9]+", name.lower())
    joined = "_".join(words)
    for word, control_type in _CONTROL_WORDS:
        # Whole words for short ones ("seg", "hed", "tile"), substrings for distinctive ones ("openpose").
        if word in words or (len(word) > 4 and word in joined):
            return control_type
    return None


def sha256_file(path: Path) -> str:
    """The sha256 of ``path``, read in chunks (a ControlNet is gigabytes: never read whole into memory)."""
    return file_hashes(path)[0]


def file_hashes(path: Path) -> tuple[str, str | None]:
    """The sha256 of ``path`` and, for a .safetensors file, the "addnet" hash: the sha256 of its tensor data alone
    (the bytes after the header), which A1111 writes as a LoRA's "Lora hashes" and Civitai looks LoRAs up by
    (AutoV3); one read of the file for both."""
    full = hashlib.sha256()
    data = hashlib.sha256() if path.suffix.lower() == ".safetensors" else None
    with path.open("rb") as f:
        skip = 0
        if data is not None:
            head = f.read(8)
            full.update(head)
            skip = 8 + int.from_bytes(head, "little") if len(head) == 8 else 0
            skip -= len(head)
        while chunk := f.read(_HASH_CHUNK):
            full.update(chunk)
            if data is not None:
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                data.update(chunk[skip:])
                skip = 0
    return full.hexdigest(), data.hexdigest() if data is not None else None


def inspect_adapter_path(
    path: Path, kind: str | None = None, *, image_encoder: Path | None = None
) -> AdapterInspection:
    """Say what adapter ``path`` holds (and for which family) without loading any weights.

    ``kind`` (optional) is what the user said it is: a file of another kind is refused rather than mislabelled.
    ``image_encoder``: an IP-Adapter's CLIP vision folder, when it is not the ``image_encoder/`` folder beside it.
    """
    path = Path(path).expanduser()
    wanted = normalise_kind(kind)
    if not path.exists():
        raise ModelFileError(f"No adapter at {path}: the path does not exist.", "model_path_not_found")
    found = _inspect_folder(path) if path.is_dir() else _inspect_file(path)
    if wanted is not None and found.kind != wanted:
        raise ModelFileError(
            f"{path.name} is a {_KIND_WORDS[found.kind]}, not a {_KIND_WORDS[wanted]}: import it without --kind, "
            f"or with --kind {found.kind.replace('_', '-')}.",
            "model_format_unsupported",
        )
    if found.kind == "ip_adapter":
        encoder = image_encoder or _encoder_beside(path)
        found.meta["image_encoder"] = str(_check_image_encoder(encoder, path).resolve())
        found = AdapterInspection(
            found.kind,
            found.family,
            found.format,
            found.context_dim,
            found.meta,
            found.size_bytes + _tree_size(Path(found.meta["image_encoder"])),
            found.weight_file,
        )
    return found


_KIND_WORDS = {
    "lora": "LoRA",
    "embedding": "textual-inversion embedding",
    "controlnet": "ControlNet",
    "ip_adapter": "IP-Adapter",
    "preprocessor": "ControlNet preprocessor",
}


def _unsupported(path: Path, why: str) -> ModelFileError:
    return ModelFileError(
        f"{path.name} {why}. `studiolo models import` takes a Stable Diffusion model (a diffusers folder or a "
        f".safetensors checkpoint) or an adapter: {ACCEPTED}.",
        "model_format_unsupported",
    )


# --- single files -------------------------------------------------------------------------------------------


def _inspect_file(path: Path) -> AdapterInspection:
    suffix = path.suffix.lower()
    if suffix in UNSAFE_SUFFIXES:
        raise ModelFileError(
            f"{path.name} is a pickle-based file ({suffix}); Studiolo refuses to load these because opening one can "
            "run arbitrary code. Get the .safetensors version (most model pages offer one) and import that.",
            "model_format_unsupported",
        )
    if suffix != ".safetensors":
        raise _unsupported(path, "is not a .safetensors file")
    header = read_safetensors_header(path)
    shapes = _shapes(header)
    size = path.stat().st_size
    meta_strings = header.get("__metadata__")
    file_meta = meta_strings if isinstance(meta_strings, dict) else {}
    keys = list(shapes)
    if any(k.startswith("control_model.") for k in keys):
        return _controlnet_file(path, shapes, "ldm", size)
    if any(k.startswith("controlnet_cond_embedding.") or k.startswith("controlnet_down_blocks.") for k in keys):
        return _controlnet_file(path, shapes, "diffusers", size)
    if any(k.startswith("image_proj.") for k in keys) and any(k.startswith("ip_adapter.") for k in keys):
        return _ip_adapter_file(path, shapes, size)
    if "emb_params" in shapes or ("clip_l" in shapes and "clip_g" in shapes):
        return _embedding_file(path, shapes, size)
    if any(marker in k for k in keys for marker in _LORA_MARKERS):
        return _lora_file(path, shapes, file_meta, size)
    raise _unsupported(path, "is a valid .safetensors file, but neither a model nor an adapter Studiolo recognises")


def _shapes(header: Mapping[str, Any]) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        shape = info.get("shape")
        shapes[name] = (
            [int(d) for d in shape] if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else []
        )
    return shapes


def _family(dim: int | None) -> str | None:
    return FAMILY_BY_CONTEXT_DIM.get(dim) if dim is not None else None


def _lora_file(path: Path, shapes: dict[str, list[int]], file_meta: Mapping[str, Any], size: int) -> AdapterInspection:
    keys = list(shapes)
    kohya = any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys)
    sdxl_text = any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for k in keys)
    down_keys = [k for k in keys if k.endswith(_DOWN_MARKERS) and len(shapes[k]) >= 2]
    # The cross-attention key projection's input is the text-encoder context: the width of the base it was made on.
    cross = [k for k in down_keys if _CROSS_TO_K.search(k) and not k.startswith("lora_te")]
    context_dim = shapes[cross[0]][1] if cross else None
    if context_dim is None and sdxl_text:
        context_dim = 2048  # both SDXL text encoders (768 + 1280), concatenated
    if context_dim is None:
        # A text-encoder-only LoRA: the encoder's width (768 CLIP-L for SD 1.x, 1024 OpenCLIP-H for SD 2.x).
        text = [k for k in down_keys if k.startswith(("lora_te_", "text_encoder."))]
        context_dim = shapes[text[0]][1] if text else None
    family = "sdxl" if sdxl_text else _family(context_dim)
    if family is None and context_dim is None:
        family = _family_from_training_meta(file_meta)
    meta: dict[str, Any] = {"context_dim": context_dim}
    rank_key = cross[0] if cross else (down_keys[0] if down_keys else None)
    if rank_key is not None:
        meta["rank"] = shapes[rank_key][0]
    if any(".hada_" in k or ".lokr_" in k or ".ia3_" in k or ".oft_" in k for k in keys):
        meta["lycoris"] = True
    return AdapterInspection("lora", family, "kohya" if kohya else "peft", context_dim, meta, size, path)


def _family_from_training_meta(file_meta: Mapping[str, Any]) -> str | None:
    # kohya's trainer writes the base it trained on; used only when no tensor tells the width.
    version = str(file_meta.get("ss_base_model_version") or "").lower()
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith("sd_v2"):
        return "sd21"
    if version.startswith("sd_v1"):
        return "sd15"
    return None


def _embedding_file(path: Path, shapes: dict[str, list[int]], size: int) -> AdapterInspection:
    if "clip_l" in shapes and "clip_g" in shapes:
        vectors = shapes["clip_l"][0] if shapes["clip_l"] else 0
        return AdapterInspection(
            "embedding", "sdxl", "a1111", 2048, {"context_dim": 2048, "vectors": vectors}, size, path
        )
    shape = shapes["emb_params"]
    if len(shape) != 2:
        raise ModelFileError(
            f"{path.name}: its emb_params tensor has shape {shape}, not [vectors, width]. The file is damaged or not "
            "an embedding.",
            "model_file_corrupt",
        )
    vectors, dim = shape
    meta = {"context_dim": dim, "vectors": vectors}
    return AdapterInspection("embedding", _family(dim), "a1111", dim, meta, size, path)


def _controlnet_file(path: Path, shapes: dict[str, list[int]], fmt: str, size: int) -> AdapterInspection:
    cross = [k for k in shapes if k.endswith("attn2.to_k.weight") and len(shapes[k]) == 2]
    context_dim = shapes[cross[0]][1] if cross else None
    meta: dict[str, Any] = {"context_dim": context_dim}
    control_type = guess_control_type(path.stem)
    if control_type:
        meta["control_type"] = control_type
    return AdapterInspection("controlnet", _family(context_dim), fmt, context_dim, meta, size, path)


def _ip_adapter_file(path: Path, shapes: dict[str, list[int]], size: int) -> AdapterInspection:
    to_k = shapes.get("ip_adapter.1.to_k_ip.weight") or next(
        (s for k, s in shapes.items() if k.startswith("ip_adapter.") and k.endswith("to_k_ip.weight")), []
    )
    context_dim = to_k[1] if len(to_k) == 2 else None
    meta: dict[str, Any] = {"context_dim": context_dim}
    return AdapterInspection("ip_adapter", _family(context_dim), "ip_adapter", context_dim, meta, size, path)


# --- folders ------------------------------------------------------------------------------------------------


def _inspect_folder(path: Path) -> AdapterInspection:
    config_path = path / "config.json"
    if (path / "model_index.json").is_file():
        raise _unsupported(path, "is a diffusers pipeline (a model), not an adapter")
    if not config_path.is_file():
        raise _unsupported(path, "is a folder without config.json")
    config = _read_config(config_path)
    if config.get("_class_name") == "ControlNetModel":
        return _controlnet_folder(path, config)
    if config.get("model_type") in _DEPTH_MODEL_TYPES:
        weights = _folder_weights(path, ("model.safetensors",))
        meta = {"preprocessor": "depth", "weight_name": weights.name}
        return AdapterInspection("preprocessor", None, "transformers", None, meta, _tree_size(path), weights)
    raise _unsupported(path, "is a folder Studiolo does not recognise as an adapter")


def _controlnet_folder(path: Path, config: Mapping[str, Any]) -> AdapterInspection:
    weights = _folder_weights(path, ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"))
    read_safetensors_header(weights)  # a damaged weights file is refused now, not when a job loads it
    dim = config.get("cross_attention_dim")
    context_dim = dim if isinstance(dim, int) else None
    family = _family(context_dim)
    if config.get("addition_embed_type") == "text_time":
        family = "sdxl"  # SDXL's micro-conditioning; its cross-attention width (2048) says so too
    meta: dict[str, Any] = {"context_dim": context_dim, "weight_name": weights.name}
    control_type = guess_control_type(path.name)
    if control_type:
        meta["control_type"] = control_type
    return AdapterInspection("controlnet", family, "diffusers", context_dim, meta, _tree_size(path), weights)


def _folder_weights(path: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (path / name).is_file():
            return path / name
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in UNSAFE_SUFFIXES)
    if pickles:
        raise ModelFileError(
            f"{path.name} holds only pickle-based weights ({', '.join(pickles)}); Studiolo refuses to load these "
            "because opening one can run arbitrary code. Get the .safetensors version and import that.",
            "model_format_unsupported",
        )
    raise ModelFileError(
        f"{path.name} has no {names[0]}: the folder is incomplete. Download or export it again.",
        "model_file_corrupt",
    )


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelFileError(
            f"{path} is not readable JSON ({exc}). The folder is damaged or incomplete: download it again.",
            "model_file_corrupt",
        ) from exc
    if not isinstance(config, dict):
        raise ModelFileError(f"{path} is not a JSON object: the folder is damaged.", "model_file_corrupt")
    return config


def _encoder_beside(path: Path) -> Path:
    for candidate in (path.parent / "image_encoder", path.parent.parent / "image_encoder"):
        if candidate.is_dir():
            return candidate
    raise ModelFileError(
        f"{path.name} is an IP-Adapter; it needs the CLIP image encoder it was trained with (a folder with "
        "config.json, e.g. the image_encoder folder of h94/IP-Adapter). None is beside it: give it with "
        "--image-encoder PATH.",
        "image_encoder_required",
    )


def _check_image_encoder(encoder: Path, adapter: Path) -> Path:
    encoder = Path(encoder).expanduser()
    config_path = encoder / "config.json"
    if not encoder.is_dir() or not config_path.is_file():
        raise ModelFileError(
            f"{encoder} is not a CLIP image encoder folder (no config.json), which the IP-Adapter {adapter.name} "
            "needs. Give the folder with --image-encoder PATH.",
            "image_encoder_required",
        )
    config = _read_config(config_path)
    architectures = config.get("architectures") or []
    if config.get("model_type") not in ("clip_vision_model", "clip") and "CLIPVisionModelWithProjection" not in (
        architectures if isinstance(architectures, list) else []
    ):
        raise ModelFileError(
            f"{encoder} is not a CLIP vision model (CLIPVisionModelWithProjection), which the IP-Adapter "
            f"{adapter.name} needs.",
            "image_encoder_required",
        )
    weights = [p for p in encoder.iterdir() if p.suffix == ".safetensors"]
    if not weights:
        raise ModelFileError(
            f"{encoder} has no .safetensors weights (pickle-based .bin files are refused): get the safetensors "
            "version of the image encoder.",
            "model_format_unsupported",
        )
    return encoder


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
