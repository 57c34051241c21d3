"""The Engine contract: what every image generator (local diffusers, the echo engine, remote APIs) offers.

The queue and the services only ever talk to this contract; ``tests/contract/test_engine_contract.py``
runs the same checks against every adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeAlias, runtime_checkable

from PIL import Image

JobKind = Literal["txt2img", "img2img", "inpaint", "upscale"]
ModelSource = Literal["hub", "folder", "single_file", "builtin", "remote"]

# A look at the image being made: a small picture, or a function that makes one (None: not possible now).
# Engines pass the function so that nobody pays for a preview nobody watches; it is valid only during the
# on_step call it was passed to (it may read tensors the next step overwrites).
Preview: TypeAlias = Image.Image | Callable[[], Image.Image | None]
CancelCheck = Callable[[], bool]


class StepCallback(Protocol):
    """Called by engines after every step: ``on_step(step, total)``, with ``preview=...`` and/or ``image=k``.

    ``step``/``total`` count the steps of the current sampling call. ``image``: the 1-based index of the image
    being sampled when the engine makes a job's images one after another (the demo engine), 0 when it samples
    them all in one call (diffusers, echo): the job's progress reads "Image 2 of 4 · step 3 of 8" or "Step 3 of 8
    · 4 images" accordingly (CONTRACTS.md "Progress").

    Previews are best effort: a picture of any size (the worker scales it down), ideally the first image of
    the batch (or the one being sampled) at the request's aspect ratio; tests/contract/test_engine_contract.py
    checks what adapters send.
    """

    def __call__(self, step: int, total: int, /, preview: Preview | None = None, image: int = 0) -> None: ...


def preview_size(width: int, height: int, longest: int) -> tuple[int, int]:
    """``width`` x ``height`` scaled down (never up) so its longest side is at most ``longest``."""
    scale = min(1.0, longest / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True)
class ModelRef:
    """Where a model lives and which engine runs it. ``path`` is None only for built-in models."""

    id: str
    engine: str
    source: ModelSource
    path: Path | None = None
    # Architecture hint for single-file checkpoints: "sd15", "sd21", "sdxl" (None: detect).
    arch: str | None = None
    # A hosted provider's model (source "remote", engines/remote): its name at the provider, and the options the
    # catalog row keeps for it (base_url, price_per_image, workflow, ...).
    remote_model: str | None = None
    options: Mapping[str, object] = field(default_factory=dict, compare=False, hash=False)


# --- adapters (issue 19): weights applied on top of a loaded model, per job -----------------------------------

# "preprocessor": a model that makes a ControlNet's map from a picture (a depth estimator), not applied to the model.
AdapterKind = Literal["lora", "embedding", "controlnet", "ip_adapter", "preprocessor"]
ADAPTER_KINDS: tuple[AdapterKind, ...] = ("lora", "embedding", "controlnet", "ip_adapter", "preprocessor")


@dataclass(frozen=True)
class AdapterRef:
    """An installed adapter's files, as the catalog (domain/adapters) resolves them for an engine.

    ``family``: the base family it was trained for ("sd15", "sd21", "sdxl"; the same labels as ``ModelRef.arch``),
    None when its tensors did not say. ``format``: how its tensors are laid out ("kohya", "peft", "diffusers",
    "a1111", "ldm"); ``meta``: what the importer learned (a ControlNet's control type, an embedding's vector count,
    an IP-Adapter's image encoder path...). ``sha256`` of the file (a folder: its weights file), for the A1111
    "Lora hashes" a PNG records."""

    id: str
    kind: AdapterKind
    path: Path
    family: str | None = None
    format: str | None = None
    sha256: str | None = None
    meta: Mapping[str, object] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA of a job and its weight (A1111's ``<lora:name:weight>``); weight 0 leaves the model as it is."""

    adapter: AdapterRef
    weight: float = 1.0


# Control types whose map Studiolo makes itself from any picture (engines/preprocess.py); the others ("depth",
# "pose", ...) need their preprocessor's model installed, or a ready map uploaded with preprocess=False.
CONTROL_TYPES = ("canny", "depth", "pose", "scribble", "lineart", "softedge", "tile", "seg", "normal", "mlsd")


@dataclass(frozen=True)
class ControlSpec:
    """One ControlNet unit: the ControlNet, the picture it follows, how strongly and over which part of sampling.

    ``image`` is what the user gave; with ``preprocess`` the engine turns it into a ``type`` map first (canny edges,
    scribble lines...), without it the image already is the map. ``strength`` scales the ControlNet's residuals (0:
    no effect, the job is then run as if it had no control); ``start``/``end``: the fraction of steps it acts in."""

    adapter: AdapterRef
    type: str
    image: Image.Image
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    preprocess: bool = True


@dataclass(frozen=True)
class ReferenceSpec:
    """An IP-Adapter reference image: the pictures made take its look (style, subject) by ``strength`` (0..1)."""

    adapter: AdapterRef
    image: Image.Image
    strength: float = 0.6


@dataclass(frozen=True)
class HiresSpec:
    """Hires fix: the job is sampled at the request's size, enlarged ``scale`` times by ``upscaler``, then sampled
    again as img2img at ``strength`` with ``steps`` steps (0: the request's steps), as A1111's "Hires. fix" does.

    ``upscaler``: "lanczos" (built in), "latent" (the latents enlarged, no decode/encode) or an installed upscaler
    model (``upscale`` then runs it)."""

    scale: float = 2.0
    upscaler: str = "lanczos"
    strength: float = 0.5
    steps: int = 0
    # Enlarges the first pass's pictures to (width, height) with an installed upscaler model; the worker builds it
    # from the engine that serves that model (domain/generation/worker.py). None: "lanczos" or "latent".
    upscale: Callable[[list[Image.Image], int, int], list[Image.Image]] | None = field(
        default=None, compare=False, hash=False
    )

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The final size: ``width`` x ``height`` times the scale, rounded down to multiples of 8."""
        return int(width * self.scale) // 8 * 8, int(height * self.scale) // 8 * 8


@dataclass(frozen=True)
class Capabilities:
    txt2img: bool = True
    img2img: bool = False
    inpaint: bool = False
    upscale: bool = False
    max_pixels: int = 2048 * 2048
    # Sampler and sigma-schedule names a request may give (besides "default" / "automatic"), in menu order.
    samplers: tuple[str, ...] = ()
    schedulers: tuple[str, ...] = ()
    # The job kinds whose initial noise honours variation_seed/variation_strength (A1111's subseed; engines/noise.py).
    variation_kinds: tuple[JobKind, ...] = ()
    # Sampling defaults of a model that needs its own (the demo model, issue 13); None: the generic ones.
    quality_steps: Mapping[str, int] | None = None  # quality preset -> steps
    default_guidance: float | None = None
    # Issue 19: the adapter kinds this engine applies to the model (LoRA, embeddings, ControlNet, IP-Adapter) and
    # whether it does hires fix; a request using others is refused before it is queued (422 adapters_unsupported).
    adapters: tuple[AdapterKind, ...] = ()
    hires: bool = False

    def supports(self, kind: JobKind) -> bool:
        return bool(getattr(self, kind))

    @property
    def variation_seed(self) -> bool:
        """True when at least txt2img honours a variation seed (what GET /models reports)."""
        return bool(self.variation_kinds)


@dataclass
class GenerationRequest:
    model: ModelRef
    prompt: str
    seeds: list[int]
    width: int = 512
    height: int = 512
    kind: JobKind = "txt2img"
    negative_prompt: str = ""
    steps: int = 20
    guidance: float = 7.0
    sampler: str | None = None
    # The sigma schedule (A1111's "Schedule type"): None/"automatic" keeps the sampler's own; "karras", ...
    scheduler: str | None = None
    # Per image: the variation seed whose noise the seed's noise is moved towards by ``variation_strength``
    # (engines/noise.py); None: no variation.
    variation_seeds: list[int] | None = None
    variation_strength: float = 0.0
    # img2img/inpaint: how far from the init image to go (0 keeps it, 1 ignores it).
    strength: float = 0.75
    # img2img/inpaint: the image to start from; upscale: the image to enlarge to width x height.
    init_image: Image.Image | None = None
    mask_image: Image.Image | None = None
    # Issue 19: adapters applied for this job only (the loaded model is left as it was for the next job).
    loras: list[LoraSpec] = field(default_factory=list)
    # Textual-inversion embeddings whose names the prompt or negative prompt uses (they are words of the prompt).
    embeddings: list[AdapterRef] = field(default_factory=list)
    controls: list[ControlSpec] = field(default_factory=list)
    reference: ReferenceSpec | None = None
    hires: HiresSpec | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    # The sampler actually used (engines may map "default" to a concrete scheduler name).
    sampler: str | None = None
    # The variation seed actually used for this image (None: none).
    variation_seed: int | None = None
    # What a hosted provider charged for this image, in US dollars (engines/remote); None: a local engine.
    cost: float | None = None


class EngineError(Exception):
    """A generation failed for a reason worth showing the user; ``code`` is a stable error code."""

    def __init__(self, message: str, *, code: str = "engine_error", retryable: bool = False):
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class ModelLoadError(EngineError):
    def __init__(self, message: str):
        super().__init__(message, code="model_unavailable", retryable=False)


class GenerationCanceled(Exception):
    """Raised inside ``generate`` when ``should_cancel()`` turned true at a step boundary."""


@runtime_checkable
class Engine(Protocol):
    """An image generator. Implementations must be safe to call from one worker thread at a time per model."""

    name: str

    def capabilities(self, model: ModelRef) -> Capabilities:
        """What this engine can do with ``model``."""
        ...

    def load(self, model: ModelRef) -> None:
        """Make ``model`` ready (may be slow); raises ModelLoadError with a helpful message."""
        ...

    def is_loaded(self, model_id: str) -> bool:
        """True when ``model_id`` is in memory (used to prefer jobs for already loaded models)."""
        ...

    def generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        """Return one image per seed, in seed order; image k equals the same seed generated alone."""
        ...
