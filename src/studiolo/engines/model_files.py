"""Model files on disk and on the hub: inspect, import (copy) and pull, for the model catalog.

Nothing here imports torch or diffusers: the catalog and the CLI use these functions in processes that must
stay small. Errors are ``ModelFileError`` (a ``ValueError``) carrying a stable ``code`` and a message that
tells the user what to do.
"""

from __future__ import annotations

import errno
import functools
import gzip
import json
import os
import shutil
import struct
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from studiolo.engines.esrgan_files import ESRGAN_UPSCALER_FACTORS, detect_esrgan

IMPORT_HINT = "`studiolo models import PATH` (a diffusers folder or a .safetensors checkpoint)"

# Pickle-based formats run arbitrary code when loaded; they are refused outright.
UNSAFE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
# A safetensors header is JSON describing the tensors; anything this large is not a real header.
_MAX_HEADER_BYTES = 100 * 2**20
# Folders a diffusers pull never needs: the engine always runs without the safety checker.
_SKIPPED_HUB_FOLDERS = frozenset({"safety_checker"})
_HUB_METADATA_SUFFIXES = (".json", ".txt", ".model")

_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})

ModelFormat = Literal["folder", "single_file"]
ProgressCallback = Callable[[int, int], None]


class ModelFileError(ValueError):
    """A model path, file or hub repository that cannot be used; ``code`` is a stable error code."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ModelInspection:
    format: ModelFormat
    # "sd15", "sd21", "sdxl" or None when not recognised (a folder of another pipeline family).
    arch: str | None
    # The diffusers pipeline class name, e.g. "StableDiffusionPipeline" (None when unknown).
    pipeline_class: str | None
    size_bytes: int


# --- what a pipeline class can do, and the packaged CLIP vocabulary -----------------------------------------

CONFIGS_DIR = Path(__file__).parent / "configs"
CLIP_BPE_MERGES = CONFIGS_DIR / "clip_bpe" / "merges.txt.gz"

# (txt2img, img2img, inpaint) for pipeline classes diffusers' AutoPipelines know, so capabilities can be
# answered before a model is loaded (without torch). Checked against diffusers in test_diffusers_engine.py.
KNOWN_PIPELINE_TASKS: dict[str, tuple[bool, bool, bool]] = {
    "StableDiffusionPipeline": (True, True, True),
    "StableDiffusionImg2ImgPipeline": (True, True, True),
    "StableDiffusionXLPipeline": (True, True, True),
    "StableDiffusionXLImg2ImgPipeline": (True, True, True),
    "StableDiffusion3Pipeline": (True, True, True),
    "LatentConsistencyModelPipeline": (True, True, False),
    "FluxPipeline": (True, True, True),
    "PixArtAlphaPipeline": (True, False, False),
    "PixArtSigmaPipeline": (True, False, False),
}


# Upscale pipelines: the arch label the catalog stores for them (how it tells an upscaler from a generator without
# reading files) and the factors each makes. They enlarge an image and cannot draw one.
UPSCALE_PIPELINES: dict[str, tuple[str, tuple[int, ...]]] = {
    "StableDiffusionUpscalePipeline": ("sd-x4-upscaler", (4,)),
    "StableDiffusionLatentUpscalePipeline": ("sd-x2-latent-upscaler", (2,)),
}
# ESRGAN-family files (engines/esrgan_files.py) are upscalers too: "esrgan-x4", "compact-x2"...
UPSCALER_FACTORS: dict[str, tuple[int, ...]] = dict(UPSCALE_PIPELINES.values()) | ESRGAN_UPSCALER_FACTORS

# Image-to-video pipelines and the arch label the catalog stores for them: they animate an image (the film studio's
# motion, engines/image_to_video.py) and draw none, so like upscalers they are never a generator's model.
MOTION_PIPELINES: dict[str, str] = {"StableVideoDiffusionPipeline": "svd"}
MOTION_ARCHS: frozenset[str] = frozenset(MOTION_PIPELINES.values())


def pipeline_tasks(pipeline_class: str | None) -> tuple[bool, bool, bool]:
    """(txt2img, img2img, inpaint) support of a diffusers pipeline class, judged by name only."""
    if pipeline_class is None:
        return (True, False, False)
    if pipeline_class in UPSCALE_PIPELINES or pipeline_class in MOTION_PIPELINES:
        return (False, False, False)
    if "Inpaint" in pipeline_class:
        # Dedicated inpainting checkpoints have a 9-channel UNet that cannot run txt2img or img2img.
        return (False, False, True)
    return KNOWN_PIPELINE_TASKS.get(pipeline_class, (True, False, False))


def bytes_to_unicode() -> list[str]:
    """The byte -> printable character table of GPT-2/CLIP byte-level BPE, in CLIP's id order."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


@functools.cache
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The 49,408-token CLIP vocabulary of SD 1.x/2.x/SDXL and its BPE merges, from the packaged merges.

    The vocabulary is fully determined by the merges (bytes, bytes + "</w>", one token per merge, then the two
    special tokens), so only the merges ship with the package (see configs/clip_bpe/NOTICE).
    """
    lines = gzip.decompress(CLIP_BPE_MERGES.read_bytes()).decode("utf-8").splitlines()
    merges = [(left, right) for left, right in (line.split(" ") for line in lines)]
    chars = bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


# --- inspection ---------------------------------------------------------------------------------------------


def inspect_model_path(path: Path) -> ModelInspection:
    """Say what kind of model ``path`` holds without loading any weights.

    Raises ModelFileError with code "model_path_not_found", "model_format_unsupported" or "model_file_corrupt".
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelFileError(
            f"No model at {path}: the path does not exist. Check the path, then import it with {IMPORT_HINT}.",
            "model_path_not_found",
        )
    if path.is_dir():
        return _inspect_folder(path)
    return _inspect_single_file(path)


def _inspect_folder(path: Path) -> ModelInspection:
    index_path = path / "model_index.json"
    if not index_path.is_file():
        raise ModelFileError(
            f"{path} is not a diffusers model folder (it has no model_index.json). Import the folder that holds "
            "model_index.json, or a single .safetensors checkpoint, with `studiolo models import PATH`.",
            "model_format_unsupported",
        )
    index = _read_json(index_path)
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise ModelFileError(
            f"{index_path} is not a valid diffusers model index (no _class_name). "
            "The folder is damaged or incomplete: download or export it again.",
            "model_file_corrupt",
        )
    pipeline_class: str = index["_class_name"]
    return ModelInspection(
        format="folder",
        arch=_folder_arch(path, pipeline_class),
        pipeline_class=pipeline_class,
        size_bytes=_tree_size(path),
    )


def _folder_arch(path: Path, pipeline_class: str) -> str | None:
    if pipeline_class in UPSCALE_PIPELINES:
        return UPSCALE_PIPELINES[pipeline_class][0]
    if pipeline_class in MOTION_PIPELINES:
        return MOTION_PIPELINES[pipeline_class]
    if pipeline_class.startswith("StableDiffusionXL"):
        return "sdxl"
    if not pipeline_class.startswith("StableDiffusion") or pipeline_class.startswith("StableDiffusion3"):
        return None
    unet_config = path / "unet" / "config.json"
    if not unet_config.is_file():
        return None
    try:
        cross_attention_dim = _read_json(unet_config).get("cross_attention_dim")
    except (ModelFileError, AttributeError):
        return None
    return {768: "sd15", 1024: "sd21"}.get(cross_attention_dim) if isinstance(cross_attention_dim, int) else None


def _inspect_single_file(path: Path) -> ModelInspection:
    suffix = path.suffix.lower()
    if suffix in UNSAFE_SUFFIXES:
        raise ModelFileError(
            f"{path.name} is a pickle-based checkpoint ({suffix}); Studiolo refuses to load these because "
            "opening one can run arbitrary code. Get the .safetensors version of the model (most model pages "
            f"offer one) and import it with {IMPORT_HINT}.",
            "model_format_unsupported",
        )
    if suffix != ".safetensors":
        raise ModelFileError(
            f"{path.name} is not a supported model file: `studiolo models import PATH` takes a diffusers folder "
            "or a .safetensors checkpoint.",
            "model_format_unsupported",
        )
    header, size = read_safetensors_header(path), path.stat().st_size
    keys = [k for k in header if k != "__metadata__"]
    arch = detect_arch(keys)
    if arch is None and (esrgan := detect_esrgan(header)) is not None:  # an upscaler, run by engines/esrgan.py
        return ModelInspection(format="single_file", arch=esrgan.arch, pipeline_class=None, size_bytes=size)
    if arch is None:
        raise ModelFileError(
            f"{path.name} is a valid .safetensors file but not a Stable Diffusion checkpoint Studiolo can run "
            "(SD 1.x, SD 2.x or SDXL base with UNet, VAE and text encoder in one file). LoRA, embedding and "
            "ControlNet files are adapters (docs/adapters.md); VAE-only and refiner files cannot be imported. "
            f"Import a full checkpoint or a diffusers folder with {IMPORT_HINT}.",
            "model_format_unsupported",
        )
    pipeline_class = "StableDiffusionXLPipeline" if arch == "sdxl" else "StableDiffusionPipeline"
    if _unet_in_channels(header) == 9:
        pipeline_class = pipeline_class.replace("Pipeline", "InpaintPipeline")
    return ModelInspection(format="single_file", arch=arch, pipeline_class=pipeline_class, size_bytes=size)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Parse the JSON header of a .safetensors file (reads the header only, never the tensor data)."""
    corrupt_hint = "The file is damaged or incomplete: download it again."
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise ModelFileError(
                    f"{path.name} is too short to be a .safetensors file. {corrupt_hint}", "model_file_corrupt"
                )
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > _MAX_HEADER_BYTES or 8 + header_len > size:
                raise ModelFileError(
                    f"{path.name} does not have a valid .safetensors header. {corrupt_hint}", "model_file_corrupt"
                )
            raw_header = f.read(header_len)
    except OSError as exc:
        raise ModelFileError(f"Could not read {path}: {exc.strerror or exc}.", "model_file_corrupt") from exc
    try:
        header = json.loads(raw_header)
    except (ValueError, RecursionError) as exc:  # also a number past the 4300-digit limit, nesting past the stack
        raise ModelFileError(
            f"{path.name} has an unreadable .safetensors header. {corrupt_hint}", "model_file_corrupt"
        ) from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{path.name} has a malformed .safetensors header. {corrupt_hint}", "model_file_corrupt")
    data_len = size - 8 - header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise ModelFileError(
                f"{path.name}: tensor {name!r} has a malformed entry. {corrupt_hint}", "model_file_corrupt"
            )
        if offsets[1] > data_len:
            raise ModelFileError(
                f"{path.name} is truncated (tensor {name!r} ends past the end of the file). {corrupt_hint}",
                "model_file_corrupt",
            )
    return header


def detect_arch(keys: Iterable[str]) -> str | None:
    """Recognise an original-layout (LDM) Stable Diffusion checkpoint from its tensor names."""
    has_unet = has_vae = False
    sdxl = sd2 = sd1 = False
    for key in keys:
        if key.startswith("model.diffusion_model."):
            has_unet = True
        elif key.startswith("first_stage_model."):
            has_vae = True
        elif key.startswith("conditioner.embedders.1."):
            sdxl = True
        elif key.startswith("cond_stage_model.model."):
            sd2 = True
        elif key.startswith("cond_stage_model.transformer."):
            sd1 = True
    if not (has_unet and has_vae):
        return None
    if sdxl:
        return "sdxl"
    if sd2:
        return "sd21"
    if sd1:
        return "sd15"
    return None


def _unet_in_channels(header: Mapping[str, Any]) -> int | None:
    info = header.get("model.diffusion_model.input_blocks.0.0.weight")
    shape = info.get("shape") if isinstance(info, dict) else None
    if isinstance(shape, list) and len(shape) == 4 and isinstance(shape[1], int):
        return shape[1]
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8, not JSON, a 4300+ digit number
        raise ModelFileError(
            f"{path} is not readable JSON ({exc}). The model is damaged or incomplete: download or export it again.",
            "model_file_corrupt",
        ) from exc


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue  # a dangling symlink adds nothing to what is on disk
    return total


# --- import (copy) ------------------------------------------------------------------------------------------


def copy_into(path: Path, dest: Path) -> Path:
    """Copy a model folder or file to exactly ``dest`` (parents are created) and return ``dest``.

    The copy is written under a hidden temporary name next to ``dest`` and renamed into place, so a crash or a
    full disk never leaves a half-copied model under its real name. Symlinks are followed (hub caches are made
    of them). Raises ModelFileError "model_path_not_found" or "model_already_exists".
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise ModelFileError(f"No model at {source}: the path does not exist.", "model_path_not_found")
    target = Path(dest)
    if target.exists():
        raise ModelFileError(
            f"{target} already exists; remove it or import the model under another name.", "model_already_exists"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_name(target)
    try:
        if source.is_dir():
            shutil.copytree(source, tmp, symlinks=False)
        else:
            shutil.copy2(source, tmp)
        _rename_into_place(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    return target


def _partial_name(target: Path) -> Path:
    return target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"


def _rename_into_place(tmp: Path, target: Path) -> None:
    if target.exists():
        raise ModelFileError(f"{target} appeared while copying; not overwriting it.", "model_already_exists")
    os.replace(tmp, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


# --- hub pulls ----------------------------------------------------------------------------------------------


def select_hub_files(filenames: Iterable[str]) -> list[str]:
    """Choose the files of a diffusers repository worth downloading.

    Configs and tokenizer files everywhere; weights only inside component folders (root-level files are
    usually the same model again as one big checkpoint). Per component the preferred weights are fp16
    safetensors, then full-precision safetensors, then (only when a component has no safetensors at all)
    fp16/plain ``.bin`` files. Other variants (ema, non_ema...), ONNX/Flax files and the safety checker are
    skipped.
    """
    chosen: list[str] = []
    weights_by_folder: dict[str, list[str]] = {}
    for name in filenames:
        parts = name.split("/")
        if parts[0] in _SKIPPED_HUB_FOLDERS or any(p.startswith(".") for p in parts):
            continue
        if _weight_kind(parts[-1]) is not None:
            if len(parts) >= 2:
                weights_by_folder.setdefault("/".join(parts[:-1]), []).append(name)
        elif name.endswith(_HUB_METADATA_SUFFIXES):
            chosen.append(name)
    for files in weights_by_folder.values():
        chosen.extend(_pick_weights(files))
    return sorted(set(chosen))


def _weight_kind(filename: str) -> tuple[str, str] | None:
    """(format, variant) of a weight or weight-index file name, e.g. ("safetensors", "fp16"); None otherwise."""
    base = filename.rsplit("/", 1)[-1]
    if ".index." in base and base.endswith(".json"):
        # model.safetensors.index.json / diffusion_pytorch_model.safetensors.index.fp16.json
        head, _, tail = base.partition(".index.")
        fmt = head.rsplit(".", 1)[-1]
        variant = tail[: -len(".json")] if tail != "json" else ""
        return (fmt, variant) if fmt in ("safetensors", "bin") else None
    stem, dot, fmt = base.rpartition(".")
    if not dot or fmt not in ("safetensors", "bin"):
        return None
    # Shards look like "model-00001-of-00002" or, for variants, "model.fp16-00001-of-00002".
    stem = stem.split("-0", 1)[0] if "-of-" in stem else stem
    pieces = stem.split(".")
    return fmt, (pieces[-1] if len(pieces) > 1 else "")


def _pick_weights(files: list[str]) -> list[str]:
    kinds: dict[tuple[str, str], list[str]] = {}
    for name in files:
        kind = _weight_kind(name)
        if kind is not None:
            kinds.setdefault(kind, []).append(name)
    for preferred in (("safetensors", "fp16"), ("safetensors", ""), ("bin", "fp16"), ("bin", "")):
        if preferred in kinds:
            return kinds[preferred]
    return []


def _normalise_variants(folder: Path) -> None:
    """Give fp16-variant files their plain names so the folder loads without a ``variant=`` argument.

    Shard files keep their names: the (renamed) index file still points at them.
    """
    for file in list(folder.rglob("*")):
        if not file.is_file():
            continue
        name = file.name
        if ".index.fp16." in name:
            new = name.replace(".index.fp16.", ".index.")
        elif name.endswith((".fp16.safetensors", ".fp16.bin")):
            new = name.replace(".fp16.", ".")
        else:
            continue
        target = file.with_name(new)
        if not target.exists():
            file.rename(target)


def pull_from_hub(
    repo_id: str,
    dest_dir: Path,
    progress: ProgressCallback | None = None,
    timeout: float = 10.0,
    *,
    endpoint: str | None = None,
    token: str | None = None,
) -> Path:
    """Download the diffusers files of a hub repository into the folder ``dest_dir`` (created; must not exist).

    ``progress(done_bytes, total_bytes)`` is called from a helper thread about twice a second and once at the
    end. ``timeout`` bounds each connection/metadata request, so with no network the call fails within a few
    seconds with ModelFileError "hub_unreachable". Other codes: "model_not_found_on_hub",
    "hub_access_denied", "model_format_unsupported", "model_already_exists", "model_write_failed".
    ``endpoint`` overrides the hub URL (mirrors, tests).
    """
    if _hub_offline():
        raise _unreachable(repo_id, "HF_HUB_OFFLINE is set")
    target = Path(dest_dir)
    if target.exists():
        raise ModelFileError(f"{target} already exists; remove it to pull {repo_id} again.", "model_already_exists")

    import huggingface_hub
    from huggingface_hub import errors as hub_errors

    try:
        info = huggingface_hub.HfApi(endpoint=endpoint, token=token).model_info(
            repo_id, timeout=timeout, files_metadata=True
        )
    except Exception as exc:
        raise _translate_hub_error(repo_id, exc, hub_errors) from exc
    siblings = {s.rfilename: int(s.size or 0) for s in (info.siblings or [])}
    if "model_index.json" not in siblings:
        raise ModelFileError(
            f"{repo_id} is not a diffusers repository (it has no model_index.json). Download its .safetensors "
            f"checkpoint yourself and import it with {IMPORT_HINT}.",
            "model_format_unsupported",
        )
    files = select_hub_files(siblings)
    total = sum(siblings[f] for f in files)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_name(target)
    stop = threading.Event()
    reporter: threading.Thread | None = None
    if progress is not None:
        reporter = threading.Thread(
            target=_report_progress, args=(tmp, total, progress, stop), name="hub-pull-progress", daemon=True
        )
        reporter.start()
    try:
        huggingface_hub.snapshot_download(
            repo_id,
            revision=info.sha,
            local_dir=tmp,
            allow_patterns=files,
            etag_timeout=timeout,
            endpoint=endpoint,
            token=token,
            max_workers=4,
        )
        stop.set()
        if reporter is not None:
            reporter.join(timeout=5)
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        _normalise_variants(tmp)
        _rename_into_place(tmp, target)
    except BaseException as exc:
        stop.set()
        _remove(tmp)
        if isinstance(exc, ModelFileError) or not isinstance(exc, Exception):
            raise
        raise _translate_hub_error(repo_id, exc, hub_errors) from exc
    if progress is not None:
        progress(total, total)
    return target


def _report_progress(folder: Path, total: int, progress: ProgressCallback, stop: threading.Event) -> None:
    # Polling the download folder works whatever transfer backend huggingface_hub picks (HTTP or Xet).
    while not stop.wait(0.5):
        done = _tree_size(folder) if folder.exists() else 0
        progress(min(done, total), total)


def _hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _unreachable(repo_id: str, reason: str) -> ModelFileError:
    return ModelFileError(
        f"Cannot reach the model hub to pull {repo_id} ({reason}). Without network access, import a local "
        f"model instead with {IMPORT_HINT}.",
        "hub_unreachable",
    )


def _translate_hub_error(repo_id: str, exc: Exception, hub_errors: Any) -> ModelFileError:
    if isinstance(exc, ModelFileError):
        return exc
    if isinstance(exc, hub_errors.GatedRepoError):
        return ModelFileError(
            f"{repo_id} is gated: accept its license on the hub and configure an access token, or import a "
            f"local copy with {IMPORT_HINT}.",
            "hub_access_denied",
        )
    if isinstance(exc, hub_errors.RepositoryNotFoundError | hub_errors.RevisionNotFoundError):
        return ModelFileError(
            f"No model named {repo_id!r} on the hub (or it is private). Check the name, or import a local model "
            f"with {IMPORT_HINT}.",
            "model_not_found_on_hub",
        )
    if isinstance(exc, hub_errors.HFValidationError):
        return ModelFileError(
            f"{repo_id!r} is not a valid hub repository id (expected 'owner/name').", "model_not_found_on_hub"
        )
    if isinstance(exc, hub_errors.OfflineModeIsEnabled | hub_errors.LocalEntryNotFoundError):
        return _unreachable(repo_id, "offline mode is enabled or a download was cut off")
    if isinstance(exc, hub_errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return ModelFileError(
                f"The hub refused access to {repo_id} (HTTP {status}). Configure an access token, or import a "
                f"local copy with {IMPORT_HINT}.",
                "hub_access_denied",
            )
        return _unreachable(repo_id, f"the hub answered HTTP {status}" if status else str(exc))
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return ModelFileError(f"Could not write the model to disk: {exc}.", "model_write_failed")
    # Connection refused, DNS failure, timeouts: the transport exception types depend on the HTTP client
    # huggingface_hub uses, so anything else is reported as "unreachable" with its message.
    return _unreachable(repo_id, f"{type(exc).__name__}: {exc}")
