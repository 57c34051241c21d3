"""LoRA / LyCORIS and textual-inversion embeddings on a loaded diffusers model (issue 19).

LoRAs go through diffusers' PEFT backend: each file is loaded once per cached model as a named PEFT adapter
(injected into the shared UNet and text encoders of ``entry.base``, which every task pipeline made with
``from_pipe`` shares), and a job picks its LoRAs and weights with ``set_adapters``; the base weights are never
touched or reloaded. A job without LoRAs disables the adapter layers, which then call the untouched base layers
only, so it gets exactly the base model's pixels. At most ``MAX_LORAS_PER_MODEL`` stay loaded per model (least
recently used deleted first).

Embeddings are added to the tokenizers and text encoders once per model with ``load_textual_inversion`` under the
adapter id as their token (how a prompt names them) and stay: a token acts only when a prompt uses it.

All state lives in ``entry.extras["lora"]`` and the bytes it holds in ``entry.extra_bytes["lora"]``, so evicting
the model drops it all. Every call runs with ``entry.run_lock`` held (engines/diffusers_engine.py ``_run``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studiolo.engines.base import AdapterRef, EngineError, GenerationRequest
from studiolo.engines.diffusers_entry import LoadedPipeline

STATE_KEY = "lora"
MAX_LORAS_PER_MODEL = 8
_PICKLE_SUFFIXES = (".pt", ".bin", ".ckpt", ".pth")


@dataclass
class _Lora:
    name: str  # the PEFT adapter name on the model's modules
    bytes: int


@dataclass
class _Embedding:
    key: tuple[str, str]
    tokens: list[str]  # the tokens added to each tokenizer (the id, then id_1, id_2... for more vectors)
    bytes: int


@dataclass
class _State:
    loras: OrderedDict[tuple[str, str], _Lora] = field(default_factory=OrderedDict)  # least recently used first
    embeddings: dict[str, _Embedding] = field(default_factory=dict)  # by token (the adapter id)
    lora_enabled: bool = False

    def bytes(self) -> int:
        return sum(x.bytes for x in self.loras.values()) + sum(e.bytes for e in self.embeddings.values())


def _state(entry: LoadedPipeline) -> _State:
    state = entry.extras.get(STATE_KEY)
    if not isinstance(state, _State):
        state = _State()
        entry.extras[STATE_KEY] = state
    return state


def _key(ref: AdapterRef) -> tuple[str, str]:
    # The file's content (sha256) when known: a re-imported file under the same id is a different LoRA.
    return (ref.id, ref.sha256 or str(ref.path))


# --- LoRA -----------------------------------------------------------------------------------------------------


def apply_loras(entry: LoadedPipeline, request: GenerationRequest) -> None:
    """Make ``request.loras`` (and only those) active on ``entry``'s modules at their weights."""
    base = entry.base
    state = _state(entry)
    # Weight 0 leaves the model as it is: such a LoRA is not loaded nor computed at all (exactly the base pixels).
    weights: dict[tuple[str, str], float] = {}
    refs: dict[tuple[str, str], AdapterRef] = {}
    for spec in request.loras:
        if spec.weight != 0:
            key = _key(spec.adapter)
            weights[key] = weights.get(key, 0.0) + float(spec.weight)  # the same LoRA twice: weights add up
            refs[key] = spec.adapter
    weights = {k: w for k, w in weights.items() if w != 0}
    if not weights:
        if state.lora_enabled:
            # Disabled PEFT layers call their base layer only: bit-identical to a model that never had a LoRA.
            base.disable_lora()
            state.lora_enabled = False
        return
    if not hasattr(base, "load_lora_weights") or not hasattr(base, "set_adapters"):
        raise EngineError(
            f"Model '{request.model.id}' ({type(base).__name__}) cannot take LoRAs.", code="adapters_unsupported"
        )
    names: list[str] = []
    for key, ref in refs.items():
        if key not in weights:
            continue
        lora = state.loras.get(key)
        if lora is None:
            # A fresh load leaves its layers active: from here on a job without LoRAs must switch them off, even
            # if this job fails before set_adapters below.
            state.lora_enabled = True
            _make_room(entry, state, keep=set(weights))
            lora = _load_lora(entry, ref)
            state.loras[key] = lora
            entry.extra_bytes[STATE_KEY] = state.bytes()
        state.loras.move_to_end(key)
        names.append(lora.name)
    try:
        base.enable_lora()
        base.set_adapters(names, adapter_weights=[weights[k] for k in refs if k in weights])
    except ValueError as exc:  # diffusers checks the names; ours come from the loads above
        raise EngineError(f"Could not activate the LoRAs: {exc}", code="generation_failed") from exc
    state.lora_enabled = True


def _make_room(entry: LoadedPipeline, state: _State, keep: set[tuple[str, str]]) -> None:
    """Delete least recently used LoRAs (not used by this job) until one more fits ``MAX_LORAS_PER_MODEL``."""
    for key in list(state.loras):
        if len(state.loras) < MAX_LORAS_PER_MODEL:
            break
        if key in keep:
            continue
        lora = state.loras.pop(key)
        _delete(entry.base, lora.name)
    entry.extra_bytes[STATE_KEY] = state.bytes()


def _load_lora(entry: LoadedPipeline, ref: AdapterRef) -> _Lora:
    import torch

    base = entry.base
    tensors = _read_tensors(ref)
    if not tensors or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise EngineError(f"LoRA '{ref.id}': {_file(ref).name} holds no LoRA tensors.", code="model_file_corrupt")
    _refuse_unsupported_layout(ref, tensors)
    # PEFT assigns the given tensors into its layers as they are (low_cpu_mem_usage), so they must already be on
    # the model's device and in its dtype.
    dtype = base.unet.dtype if getattr(base, "unet", None) is not None else torch.float32
    tensors = {
        k: (v.to(device=entry.device, dtype=dtype) if v.is_floating_point() and v.ndim > 0 else v)
        for k, v in tensors.items()
    }
    # PEFT adapter names become module-dict keys (no dots); the key's hash keeps them unique and stable.
    name = "lora_" + hashlib.sha256("\0".join(_key(ref)).encode()).hexdigest()[:16]
    try:
        with warnings.catch_warnings():
            # PEFT warns on every adapter after the first that a model holding several adapters is unusual; here
            # it is the design (one adapter per LoRA, chosen per job with set_adapters).
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            # ...and diffusers, cleaning up a load that failed, deletes the half-made adapter that PEFT had made active.
            warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
            if any(".lokr_" in k for k in tensors):
                _load_lokr(entry, ref, tensors, name)
            else:
                base.load_lora_weights(tensors, adapter_name=name)
    except EngineError:
        _forget(base, name)
        raise
    except Exception as exc:
        _forget(base, name)
        raise _lora_error(entry, ref, exc) from exc
    return _Lora(name=name, bytes=_adapter_bytes(base, name))


def _refuse_unsupported_layout(ref: AdapterRef, tensors: dict[str, Any]) -> None:
    if any(".hada_" in k for k in tensors):
        raise EngineError(
            f"LoRA '{ref.id}' is a LyCORIS LoHa; diffusers cannot load LoHa into Stable Diffusion models, so Studiolo "
            "cannot apply it. Use a LoRA or LoKr version of it.",
            code="adapter_incompatible",
        )


def _load_lokr(entry: LoadedPipeline, ref: AdapterRef, tensors: dict[str, Any], name: str) -> None:
    """A LyCORIS LoKr (Kronecker-product factors) into the UNet as a PEFT LoKr adapter.

    diffusers' pipeline loader only takes LoKr for its newer transformer models; its model-level loader takes any
    model's LoKr once the keys are the model's module paths, so kohya names (``lora_unet_<path with _>``) are matched
    against the UNet's own module names. Text-encoder LoKr layers have no loader in diffusers and are refused rather
    than silently dropped."""
    from diffusers.loaders.lora_conversion_utils import _bake_lokr_alpha_

    unet = entry.base.unet
    if any(k.startswith(("lora_te", "text_encoder")) for k in tensors):
        raise EngineError(
            f"LoRA '{ref.id}' is a LyCORIS LoKr with text-encoder layers, which diffusers cannot load; Studiolo "
            "applies LoKr to the UNet only.",
            code="adapter_incompatible",
        )
    by_kohya_name = {"lora_unet_" + path.replace(".", "_"): path for path, _ in unet.named_modules() if path}
    state: dict[str, Any] = {}
    for key, value in tensors.items():
        if key.startswith("unet."):  # diffusers layout: already module paths
            state[key.removeprefix("unet.")] = value
            continue
        module, _, part = key.partition(".")
        path = by_kohya_name.get(module)
        if path is None:
            raise EngineError(
                f"LoRA '{ref.id}' (LyCORIS LoKr) names a layer this model does not have ({module}); it was made for "
                "another base family, or uses the SDXL original-UNet names Studiolo does not map for LoKr.",
                code="adapter_incompatible",
            )
        state[f"{path}.{part}"] = value
    _bake_lokr_alpha_(state)  # LyCORIS' alpha / rank, folded into the weights as diffusers expects
    unet.load_lora_adapter(state, prefix=None, adapter_name=name, _pipeline=entry.base)


def _lora_error(entry: LoadedPipeline, ref: AdapterRef, exc: Exception) -> EngineError:
    text = str(exc)
    family = f"a {ref.family} LoRA" if ref.family else "this LoRA"
    if "size mismatch" in text or "shape" in text.lower():
        detail = "its tensors do not fit the model's layers (shape mismatch)"
    elif "not found in the base model" in text or "not correctly renamed" in text:
        detail = "its layer names match nothing in this model, or use a layout diffusers cannot convert"
    elif "out of memory" in text.lower():
        return EngineError(f"Not enough memory to load LoRA '{ref.id}'.", code="out_of_memory", retryable=True)
    else:
        detail = f"{type(exc).__name__}: {text[:300]}"
    return EngineError(
        f"LoRA '{ref.id}' cannot be applied to this model ({type(entry.base).__name__}): {detail}. Is {family} "
        "made for this model's base family?",
        code="adapter_incompatible",
    )


def _forget(base: Any, name: str) -> None:
    """Remove whatever part of a failed load stuck (diffusers cleans the component that failed, not the others)."""
    try:
        present = {n for names in base.get_list_adapters().values() for n in names}
        if name in present:
            _delete(base, name)
    except ValueError:  # no PEFT layers at all yet
        pass


def _delete(base: Any, name: str) -> None:
    with warnings.catch_warnings():
        # PEFT warns when the deleted adapter was the active one; the next job sets its own adapters anyway.
        warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
        base.delete_adapters([name])


def _adapter_bytes(base: Any, name: str) -> int:
    """Bytes of the parameters PEFT added for adapter ``name`` (its lora_A/lora_B, lokr_w1... entries)."""
    import torch

    total = 0
    for component in getattr(base, "_lora_loadable_modules", ("unet", "text_encoder", "text_encoder_2")):
        module = getattr(base, component, None)
        if isinstance(module, torch.nn.Module):
            for param_name, param in module.named_parameters():
                if name in param_name.split("."):
                    total += param.numel() * param.element_size()
    return total


# --- embeddings -----------------------------------------------------------------------------------------------


def apply_embeddings(entry: LoadedPipeline, request: GenerationRequest) -> None:
    """Load ``request.embeddings`` into ``entry``'s tokenizers and text encoders (once per model)."""
    if not request.embeddings:
        return
    base = entry.base
    if not hasattr(base, "load_textual_inversion") or getattr(base, "text_encoder", None) is None:
        raise EngineError(
            f"Model '{request.model.id}' ({type(base).__name__}) cannot take embeddings.", code="adapters_unsupported"
        )
    state = _state(entry)
    for ref in request.embeddings:
        loaded = state.embeddings.get(ref.id)
        if loaded is not None and loaded.key == _key(ref):
            continue
        if loaded is not None:  # the same name, another file (re-imported): replace it
            _unload_embedding(base, loaded)
            del state.embeddings[ref.id]
        state.embeddings[ref.id] = _load_embedding(entry, ref)
        entry.extra_bytes[STATE_KEY] = state.bytes()


def _encoders(base: Any) -> list[tuple[str, Any, Any]]:
    """(state-dict key, tokenizer, text encoder) per text encoder: SDXL's CLIP-L and CLIP-G, or SD 1/2's one."""
    if getattr(base, "text_encoder_2", None) is not None and getattr(base, "tokenizer_2", None) is not None:
        return [("clip_l", base.tokenizer, base.text_encoder), ("clip_g", base.tokenizer_2, base.text_encoder_2)]
    return [("", base.tokenizer, base.text_encoder)]


def _embedding_vectors(ref: AdapterRef, data: dict[str, Any], key: str) -> Any:
    """The [vectors, width] tensor for one text encoder from the formats users download."""
    import torch

    if key:  # SDXL: one tensor per text encoder
        vectors = data.get(key)
        if vectors is None:
            raise EngineError(
                f"Embedding '{ref.id}' has no '{key}' vectors: it is not an SDXL embedding.",
                code="adapter_incompatible",
            )
    elif "emb_params" in data:  # A1111 .safetensors
        vectors = data["emb_params"]
    elif isinstance(data.get("string_to_param"), dict) and "*" in data["string_to_param"]:  # A1111 .pt
        vectors = data["string_to_param"]["*"]
    elif "clip_l" in data or "clip_g" in data:
        raise EngineError(
            f"Embedding '{ref.id}' is an SDXL embedding (clip_l/clip_g); this model is not SDXL.",
            code="adapter_incompatible",
        )
    else:
        tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:  # diffusers' own format: {token: tensor}
            raise EngineError(
                f"Embedding '{ref.id}': {_file(ref).name} is not a textual-inversion embedding (keys: "
                f"{', '.join(sorted(data)[:5])}).",
                code="model_file_corrupt",
            )
        vectors = tensors[0]
    if not isinstance(vectors, torch.Tensor) or vectors.ndim not in (1, 2):
        raise EngineError(f"Embedding '{ref.id}' has malformed vectors.", code="model_file_corrupt")
    return vectors.reshape(1, -1) if vectors.ndim == 1 else vectors


def _load_embedding(entry: LoadedPipeline, ref: AdapterRef) -> _Embedding:
    base = entry.base
    data = _read_tensors(ref)
    plan = []
    for key, tokenizer, encoder in _encoders(base):
        vectors = _embedding_vectors(ref, data, key)
        width = int(encoder.get_input_embeddings().weight.shape[-1])
        if int(vectors.shape[-1]) != width:
            raise EngineError(
                f"Embedding '{ref.id}' has {vectors.shape[-1]}-wide vectors but this model's text encoder takes "
                f"{width}: it was made for another base family.",
                code="adapter_incompatible",
            )
        plan.append((tokenizer, encoder, vectors))
    tokens = [ref.id] + [f"{ref.id}_{i}" for i in range(1, int(plan[0][2].shape[0]))]
    done: list[tuple[Any, Any]] = []
    size = 0
    for tokenizer, encoder, vectors in plan:
        try:
            base.load_textual_inversion(
                vectors.detach().clone(), token=ref.id, tokenizer=tokenizer, text_encoder=encoder
            )
        except ValueError as exc:
            for t, e in done:  # leave the model as it was
                base.unload_textual_inversion(tokens=tokens, tokenizer=t, text_encoder=e)
            raise EngineError(f"Embedding '{ref.id}' cannot be loaded: {exc}", code="adapter_incompatible") from exc
        done.append((tokenizer, encoder))
        weight = encoder.get_input_embeddings().weight
        size += int(vectors.shape[0]) * int(weight.shape[-1]) * weight.element_size()
    return _Embedding(key=_key(ref), tokens=tokens, bytes=size)


def _unload_embedding(base: Any, embedding: _Embedding) -> None:
    for _key_name, tokenizer, encoder in _encoders(base):
        base.unload_textual_inversion(tokens=embedding.tokens, tokenizer=tokenizer, text_encoder=encoder)


# --- files ----------------------------------------------------------------------------------------------------


def _file(ref: AdapterRef) -> Path:
    """The weights file of an adapter: the file itself, or in a folder its ``meta.weight_name`` / only weights."""
    path = Path(ref.path)
    if not path.is_dir():
        return path
    weight_name = ref.meta.get("weight_name")
    if isinstance(weight_name, str) and (path / weight_name).is_file():
        return path / weight_name
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", *_PICKLE_SUFFIXES))
    if len(files) != 1:
        raise EngineError(
            f"Adapter '{ref.id}': {path} holds {len(files)} weight files and no meta.weight_name says which to use.",
            code="adapter_unavailable",
        )
    return files[0]


def _read_tensors(ref: AdapterRef) -> dict[str, Any]:
    """The file's tensors on the CPU: a damaged file is model_file_corrupt, a missing one adapter_unavailable."""
    import torch

    path = _file(ref)
    if not path.is_file():
        raise EngineError(f"Adapter '{ref.id}' is missing: nothing at {path}.", code="adapter_unavailable")
    try:
        if path.suffix in _PICKLE_SUFFIXES:
            # weights_only: a pickle that wants to build arbitrary objects is refused, never executed.
            data = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors/pickle errors have no common base class
        raise EngineError(
            f"Adapter '{ref.id}': {path.name} is damaged or not a weights file ({type(exc).__name__}: "
            f"{str(exc)[:200]}). Import it again.",
            code="model_file_corrupt",
        ) from exc
    if not isinstance(data, dict):
        raise EngineError(f"Adapter '{ref.id}': {path.name} holds no named tensors.", code="model_file_corrupt")
    return data
