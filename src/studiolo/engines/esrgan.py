"""Model upscalers from the ESRGAN family (.safetensors from OpenModelDB, Real-ESRGAN releases), behind the Engine
contract: RRDBNet (ESRGAN, Real-ESRGAN x4plus/x2plus, anime 6B) and SRVGGNetCompact (realesr-general-x4v3,
animevideov3), built here in plain torch (spandrel would bring torchvision, which breaks beside the CPU torch build).

The file's header says which net, scale and sizes (engines/esrgan_files.py); ``load`` builds the net and loads the
weights strictly, so a file whose tensors do not fit is refused (``model_file_corrupt``) instead of making noise.
An upscale runs the net at its own scale in tiles (with an overlap cut away afterwards, so the seams do not show and
an 8K result fits in memory), as many times as the asked size needs (an x2 net twice for 4x), then resizes with
Lanczos to the exact size when that differs (an x4 net asked for 2x; a hires fix's 1.5x), as A1111 does.
Tests: tests/unit/test_esrgan.py, tests/integration/test_esrgan_upscale.py.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from studiolo.engines.base import (
    CancelCheck,
    Capabilities,
    GeneratedImage,
    GenerationCanceled,
    GenerationRequest,
    ModelLoadError,
    ModelRef,
    StepCallback,
)
from studiolo.engines.esrgan_files import ESRGAN_ENGINE, EsrganLayout, detect_esrgan
from studiolo.engines.model_cache import evict_least_recent, free_device_memory
from studiolo.engines.model_files import UNSAFE_SUFFIXES, ModelFileError, read_safetensors_header
from studiolo.engines.threads import torch_threads
from studiolo.engines.upscale import check_upscale_request

if TYPE_CHECKING:
    import numpy as np
    import torch

# The same largest output as the built-in upscaler (engines/upscale.py): 8192 x 8192.
_MAX_PIXELS = 8192 * 8192
# A net is run at most this many times per upscale (A1111 stops at 3 too): enough for 8x with an x2 net.
_MAX_PASSES = 3


class EsrganFileError(ModelLoadError):
    """An upscaler file that cannot be used: damaged, not an ESRGAN-family net, or a pickle (``code`` says which)."""

    def __init__(self, message: str, code: str = "model_file_corrupt"):
        super().__init__(message)
        self.code = code


def read_layout(path: Path) -> EsrganLayout:
    """The layout of the upscaler file at ``path``; EsrganFileError when it is not one this engine runs."""
    if path.suffix.lower() in UNSAFE_SUFFIXES:
        raise EsrganFileError(
            f"{path.name} is a pickle-based file; opening one can run arbitrary code, so Studiolo refuses it. Use "
            "the model's .safetensors version (OpenModelDB offers one for most upscalers).",
            "model_format_unsupported",
        )
    try:
        layout = detect_esrgan(read_safetensors_header(path))
    except ModelFileError as exc:
        raise EsrganFileError(str(exc), exc.code) from exc
    if layout is None:
        raise EsrganFileError(
            f"{path.name} is not an ESRGAN, Real-ESRGAN or compact (SRVGG) upscaler this engine can build.",
            "model_format_unsupported",
        )
    return layout


# --- the engine ----------------------------------------------------------------------------------------------


@dataclass
class _Loaded:
    net: Any
    layout: EsrganLayout
    path: Path
    bytes: int
    dtype: Any
    in_use: int = 0
    run_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def size_bytes(self) -> int:
        return self.bytes


class EsrganUpscaleEngine:
    """Runs installed ESRGAN-family upscaler files (catalog engine "esrgan"): ``request.init_image`` enlarged to
    ``request.width`` x ``request.height``, one output per seed (the seed changes nothing)."""

    name = ESRGAN_ENGINE

    def __init__(
        self,
        device: str = "auto",
        memory_budget_bytes: int = 512 * 2**20,
        *,
        max_models: int = 2,
        tile: int = 256,
        overlap: int = 16,
    ):
        """``tile``: the input tile side in pixels (a multiple of 8); ``overlap``: the context each tile is run with
        and that is cut away (a multiple of 4, so pixel-unshuffling nets see the same pixel grid in every tile).
        ``max_models`` and ``memory_budget_bytes`` bound the nets kept loaded (least recently used go first)."""
        if tile < 8 or tile % 8 or overlap < 0 or overlap % 4:
            raise ValueError("tile must be a positive multiple of 8 and overlap a multiple of 4")
        self._device_pref = device
        self._device: str | None = None
        self.memory_budget_bytes = memory_budget_bytes
        self.max_models = max_models
        self.tile = tile
        self.overlap = overlap
        self._cache: OrderedDict[str, _Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    @property
    def device(self) -> str:
        if self._device is None:
            import torch

            pref = self._device_pref
            self._device = pref if pref != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        return self._device

    def capabilities(self, model: ModelRef) -> Capabilities:
        return Capabilities(txt2img=False, upscale=True, max_pixels=_MAX_PIXELS)

    def is_loaded(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._cache

    def loaded_bytes(self) -> int:
        with self._lock:
            return sum(e.size_bytes for e in self._cache.values())

    def load(self, model: ModelRef) -> None:
        self._release(self._acquire(model))

    def unload(self, model_id: str) -> bool:
        with self._lock:
            entry = self._cache.pop(model_id, None)
        if entry is None:
            return False
        del entry
        free_device_memory(self._device)
        return True

    def _acquire(self, model: ModelRef) -> _Loaded:
        if model.path is None:
            raise ModelLoadError(f"Upscaler '{model.id}' has no file; import it with `studiolo models import PATH`.")
        path = Path(model.path)
        with self._load_lock:
            with self._lock:
                entry = self._cache.get(model.id)
                if entry is not None and entry.path == path:
                    self._cache.move_to_end(model.id)
                    entry.in_use += 1
                    return entry
            entry = self._build(model.id, path)
            with self._lock:
                entry.in_use += 1
                self._cache[model.id] = entry
                evicted = evict_least_recent(self._cache, self.memory_budget_bytes, keep=model.id)
                while len(self._cache) > self.max_models:
                    idle = next((k for k, e in self._cache.items() if k != model.id and not e.in_use), None)
                    if idle is None:
                        break
                    evicted.append(self._cache.pop(idle))
        if evicted:
            del evicted
            free_device_memory(self._device)
        return entry

    def _release(self, entry: _Loaded) -> None:
        with self._lock:
            entry.in_use -= 1

    def _build(self, model_id: str, path: Path) -> _Loaded:
        if not path.is_file():
            raise ModelLoadError(f"Upscaler '{model_id}' is missing: nothing at {path}. Import it again.")
        layout = read_layout(path)
        import torch
        from safetensors.torch import load_file

        from studiolo.engines.esrgan_nets import build_net, state_for

        try:
            state = state_for(layout, load_file(str(path)))
        except Exception as exc:  # safetensors' own error type, an OSError, a truncated file
            raise EsrganFileError(f"{path.name} could not be read ({exc}); download it again.") from exc
        net = build_net(layout)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # missing, extra or misshapen tensors
            raise EsrganFileError(f"{path.name} does not hold a complete {layout.arch} upscaler: {exc}") from exc
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        net = net.eval().requires_grad_(False).to(self.device, dtype=dtype)
        size = sum(p.numel() * p.element_size() for p in net.parameters())
        return _Loaded(net, layout, path, size, dtype)

    def generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        source = check_upscale_request(request, "An upscaler model", _MAX_PIXELS)
        if should_cancel():
            raise GenerationCanceled()
        entry = self._acquire(request.model)
        try:
            with entry.run_lock, torch_threads(0):
                image = self._upscale(entry, source.convert("RGB"), request, on_step, should_cancel)
        finally:
            self._release(entry)
        return [GeneratedImage(image=image, seed=seed, sampler=ESRGAN_ENGINE) for seed in request.seeds]

    def _upscale(
        self, entry: _Loaded, image: Image.Image, request: GenerationRequest, on_step: StepCallback, cancel: CancelCheck
    ) -> Image.Image:
        target = (request.width, request.height)
        sizes = pass_sizes(image.size, target, entry.layout.scale)
        total = sum(self._tile_count(w, h) for w, h in sizes)
        done = 0

        def step() -> None:
            nonlocal done
            if cancel():
                raise GenerationCanceled()
            done += 1
            on_step(done, total)

        for _ in sizes:
            image = Image.fromarray(self.run_tiles(entry, image, step))
        if image.size != target:
            image = image.resize(target, Image.Resampling.LANCZOS)
        return image

    def _tile_count(self, width: int, height: int) -> int:
        return -(-width // self.tile) * -(-height // self.tile)

    def run_tiles(self, entry: _Loaded, image: Image.Image, step: Any = None) -> np.ndarray:
        """One pass of the net over ``image`` in tiles: an HxWx3 uint8 array ``scale`` times larger. ``step()`` is
        called before each tile (it raises to cancel)."""
        import numpy as np
        import torch

        scale, grid = entry.layout.scale, entry.layout.unshuffle
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        height, width = pixels.shape[:2]
        out = np.zeros((height * scale, width * scale, 3), dtype=np.uint8)
        device = next(entry.net.parameters()).device
        with torch.inference_mode():
            for y0 in range(0, height, self.tile):
                for x0 in range(0, width, self.tile):
                    if step is not None:
                        step()
                    y1, x1 = min(y0 + self.tile, height), min(x0 + self.tile, width)
                    # The tile with ``overlap`` pixels of context; its start stays on the unshuffle grid.
                    py0, px0 = max(0, y0 - self.overlap), max(0, x0 - self.overlap)
                    py1, px1 = min(height, y1 + self.overlap), min(width, x1 + self.overlap)
                    tile = torch.from_numpy(np.ascontiguousarray(pixels[py0:py1, px0:px1].transpose(2, 0, 1)))
                    tile = tile.unsqueeze(0).to(device, dtype=entry.dtype)
                    result = _run_net(entry.net, tile, grid)
                    crop = result[:, (y0 - py0) * scale : (y1 - py0) * scale, (x0 - px0) * scale : (x1 - px0) * scale]
                    array = (crop.float().clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()
                    out[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = array
        return out


def _run_net(net: Any, tile: torch.Tensor, grid: int) -> torch.Tensor:
    """The net's output for one 1x3xHxW tile (first image, CxH'xW'); a pixel-unshuffling net gets its input padded
    (reflected) to a multiple of its grid, and the padding's output is cut off again."""
    from torch.nn import functional

    height, width = tile.shape[2:]
    pad_h, pad_w = -height % grid, -width % grid
    if pad_h or pad_w:
        mode = "reflect" if height > pad_h and width > pad_w else "replicate"
        tile = functional.pad(tile, (0, pad_w, 0, pad_h), mode=mode)
    out: torch.Tensor = net(tile)[0]
    scale = out.shape[1] // tile.shape[2]
    return out[:, : height * scale, : width * scale]


def pass_sizes(size: tuple[int, int], target: tuple[int, int], scale: int) -> list[tuple[int, int]]:
    """The input size of each pass of a ``scale`` net that enlarges ``size`` towards ``target``: passes until the
    result covers the target (at most ``_MAX_PASSES``), one for a net that does not enlarge (x1: it restores)."""
    sizes: list[tuple[int, int]] = []
    width, height = size
    while len(sizes) < _MAX_PASSES and (not sizes or width < target[0] or height < target[1]):
        sizes.append((width, height))
        if scale == 1:
            break
        width, height = width * scale, height * scale
    return sizes
