"""The initial noise of a generation, shared by every engine that samples from noise (demo, diffusers).

A1111's variation seed ("subseed"): the starting noise of an image is ``slerp(noise(seed), noise(variation_seed),
strength)``, so strength 0 is the seed's own picture, strength 1 the variation seed's, and values in between walk
from one to the other along the sphere Gaussian noise lives on (a straight line would shrink the noise towards the
middle and wash the picture out). Each image draws from its own generator, so image k of a batch is the same
picture as its seed alone (tests/contract/test_engine_contract.py).

torch is imported inside the functions: engines import this module at server start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Below this angle (dot product of the normalised noises above 1 - eps) slerp divides by ~0: interpolate linearly.
_PARALLEL = 0.9995


def variation_seeds(base: int | None, n: int) -> list[int] | None:
    """The variation seed of each image of an ``n``-image job: ``base + k`` (as A1111 counts subseeds), or None."""
    if base is None:
        return None
    return [(base + k) % 2**32 for k in range(n)]


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1), over the whole tensor."""
    import torch

    if t <= 0.0:
        return a
    if t >= 1.0:
        return b
    a_flat, b_flat = a.flatten().double(), b.flatten().double()
    dot = float(torch.dot(a_flat / a_flat.norm(), b_flat / b_flat.norm()).clamp(-1.0, 1.0))
    if dot > _PARALLEL:
        mixed = (1.0 - t) * a_flat + t * b_flat
    else:
        omega = torch.acos(torch.tensor(dot, dtype=torch.float64))
        so = torch.sin(omega)
        mixed = (torch.sin((1.0 - t) * omega) / so) * a_flat + (torch.sin(t * omega) / so) * b_flat
    return mixed.to(a.dtype).reshape(a.shape)


def seeded_noise(
    shape: Sequence[int],
    seed: int,
    *,
    variation_seed: int | None = None,
    variation_strength: float = 0.0,
    device: str = "cpu",
    dtype: Any = None,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` from ``seed`` (drawn on ``device``'s generator, as diffusers does), moved
    towards ``variation_seed``'s noise by ``variation_strength`` (no variation seed or strength 0: the seed's own)."""
    import torch

    def draw(s: int) -> torch.Tensor:
        generator = torch.Generator(device).manual_seed(s % 2**63)
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype or torch.float32)

    noise = draw(seed)
    if variation_seed is None or variation_strength <= 0.0:
        return noise
    return slerp(noise, draw(variation_seed), variation_strength)
