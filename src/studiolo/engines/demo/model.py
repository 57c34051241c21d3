"""The demo model's network: a small pixel-space UNet conditioned on a jointly trained text encoder.

Rectified flow: ``x_t = (1 - t) * image + t * noise`` and the network predicts the velocity ``noise - image``,
so sampling walks from pure noise at t=1 to the image at t=0 with plain Euler steps.

Shape (64x64 RGB): pixel-unshuffle to 32x32x12, levels of 48/96/160 channels at 32/16/8 pixels, residual
blocks with FiLM from (time + pooled text), and cross-attention to the text encoder's per-token states at
16x16 and 8x8 (plus self-attention at 8x8). Per-token states, not one pooled vector, are what lets "a red
square on a blue background" put red on the square: a pooled sentence vector loses which word goes with which.
This module imports torch; the engine imports it lazily (server start-up must not pull torch in).
mypy sees torch as ``Any`` (pyproject: follow_imports = "skip"), hence the ignores on the nn.Module subclasses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from studiolo.engines.demo.text import PAD, Tokenizer


@dataclass(frozen=True)
class DemoConfig:
    """Architecture and vocabulary; saved as JSON next to the weights."""

    vocab: list[str] = field(default_factory=list)
    max_tokens: int = 24
    text_dim: int = 128
    text_layers: int = 3
    text_heads: int = 4
    channels: tuple[int, int, int] = (48, 96, 160)
    blocks: int = 2
    heads: int = 4
    cond_dim: int = 192
    image_size: int = 64

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DemoConfig:
        values = dict(data)
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        known = cls.__dataclass_fields__
        return cls(**{key: value for key, value in values.items() if key in known})

    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.vocab, self.max_tokens)


class Attention(nn.Module):  # type: ignore[misc]
    """Multi-head attention from ``dim`` queries to ``context_dim`` keys/values, with an optional key mask."""

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(context_dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        # Zero output: every attention block starts as the identity, which keeps early training stable.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class TextEncoder(nn.Module):  # type: ignore[misc]
    """Word embeddings + learned positions + a few pre-norm transformer layers -> per-token states."""

    def __init__(self, config: DemoConfig, vocab_size: int):
        super().__init__()
        d = config.text_dim
        self.embed = nn.Embedding(vocab_size, d)
        self.pos = nn.Parameter(torch.randn(config.max_tokens, d) * 0.02)
        self.layers = nn.ModuleList()
        for _ in range(config.text_layers):
            self.layers.append(
                nn.ModuleDict(
                    {
                        "norm1": nn.LayerNorm(d),
                        "attn": Attention(d, d, config.text_heads),
                        "norm2": nn.LayerNorm(d),
                        "mlp": nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)),
                    }
                )
            )
        self.norm = nn.LayerNorm(d)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """States (B, T, D), key mask (B, T; True = a real token) and the mean of the real tokens (B, D)."""
        mask = ids != PAD
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        for layer in self.layers:
            x = x + layer["attn"](layer["norm1"](x), layer["norm1"](x), mask)
            x = x + layer["mlp"](layer["norm2"](x))
        x = self.norm(x)
        weights = mask.to(x.dtype)[..., None]
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return x, mask, pooled


def _groups(channels: int) -> int:
    return 8 if channels % 8 == 0 else 1


class ResBlock(nn.Module):  # type: ignore[misc]
    """GroupNorm-SiLU-conv twice, with FiLM (scale, shift) from the conditioning vector in between."""

    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip: nn.Module = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class AttnBlock(nn.Module):  # type: ignore[misc]
    """Optional self-attention over pixels, cross-attention to the text tokens, then a pixel-wise MLP."""

    def __init__(self, channels: int, text_dim: int, heads: int, self_attention: bool):
        super().__init__()
        self.norm_in = nn.GroupNorm(_groups(channels), channels)
        self.self_attn = Attention(channels, channels, heads) if self_attention else None
        self.norm_self = nn.LayerNorm(channels)
        self.norm_cross = nn.LayerNorm(channels)
        self.cross = Attention(channels, text_dim, heads)
        self.norm_mlp = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        start = self.norm_in(x).flatten(2).transpose(1, 2)
        h = start
        if self.self_attn is not None:
            n = self.norm_self(h)
            h = h + self.self_attn(n, n)
        h = h + self.cross(self.norm_cross(h), text, mask)
        h = h + self.mlp(self.norm_mlp(h))
        # The block works on a normalised copy; add only its change so the residual stream keeps its scale.
        return x + (h - start).transpose(1, 2).reshape(b, c, hgt, wid)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class DemoModel(nn.Module):  # type: ignore[misc]
    """Text encoder + UNet; ``forward(x_t, t, ids)`` returns the predicted velocity."""

    def __init__(self, config: DemoConfig):
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels
        cd, td = config.cond_dim, config.text_dim
        self.text = TextEncoder(config, config.tokenizer().size)
        self.time_mlp = nn.Sequential(nn.Linear(128, cd), nn.SiLU(), nn.Linear(cd, cd))
        self.text_to_cond = nn.Linear(td, cd)
        self.stem = nn.Conv2d(12, c1, 3, padding=1)
        n = config.blocks
        self.down1 = nn.ModuleList([ResBlock(c1, c1, cd) for _ in range(n)])
        self.pool1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.down2 = nn.ModuleList([ResBlock(c2, c2, cd) for _ in range(n)])
        self.attn2 = nn.ModuleList([AttnBlock(c2, td, config.heads, False) for _ in range(n)])
        self.pool2 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.down3 = nn.ModuleList([ResBlock(c3, c3, cd) for _ in range(n)])
        self.attn3 = nn.ModuleList([AttnBlock(c3, td, config.heads, True) for _ in range(n)])
        self.mid1 = ResBlock(c3, c3, cd)
        self.mid_attn = AttnBlock(c3, td, config.heads, True)
        self.mid2 = ResBlock(c3, c3, cd)
        self.up3 = nn.ModuleList([ResBlock(2 * c3, c3, cd) for _ in range(n)])
        self.up_attn3 = nn.ModuleList([AttnBlock(c3, td, config.heads, True) for _ in range(n)])
        self.unpool3 = nn.Conv2d(c3, c2, 3, padding=1)
        self.up2 = nn.ModuleList([ResBlock(2 * c2, c2, cd) for _ in range(n)])
        self.up_attn2 = nn.ModuleList([AttnBlock(c2, td, config.heads, False) for _ in range(n)])
        self.unpool2 = nn.Conv2d(c2, c1, 3, padding=1)
        self.up1 = nn.ModuleList([ResBlock(2 * c1, c1, cd) for _ in range(n)])
        self.out_norm = nn.GroupNorm(_groups(c1), c1)
        self.out = nn.Conv2d(c1, 12, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def encode_text(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        result: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = self.text(ids)
        return result

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, text: tuple[torch.Tensor, ...] | None = None
    ) -> torch.Tensor:
        """``text``: the output of ``encode_text(ids)`` when the caller reuses it across sampling steps."""
        states, mask, pooled = text if text is not None else self.encode_text(ids)
        cond = F.silu(self.time_mlp(timestep_embedding(t, 128)) + self.text_to_cond(pooled))
        h = self.stem(F.pixel_unshuffle(x, 2))
        skips1: list[torch.Tensor] = []
        for block in self.down1:
            h = block(h, cond)
            skips1.append(h)
        h = self.pool1(h)
        skips2: list[torch.Tensor] = []
        for block, attn in zip(self.down2, self.attn2, strict=True):
            h = attn(block(h, cond), states, mask)
            skips2.append(h)
        h = self.pool2(h)
        skips3: list[torch.Tensor] = []
        for block, attn in zip(self.down3, self.attn3, strict=True):
            h = attn(block(h, cond), states, mask)
            skips3.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, cond), states, mask), cond)
        for block, attn in zip(self.up3, self.up_attn3, strict=True):
            h = attn(block(torch.cat([h, skips3.pop()], dim=1), cond), states, mask)
        h = self.unpool3(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        for block, attn in zip(self.up2, self.up_attn2, strict=True):
            h = attn(block(torch.cat([h, skips2.pop()], dim=1), cond), states, mask)
        h = self.unpool2(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        for block in self.up1:
            h = block(torch.cat([h, skips1.pop()], dim=1), cond)
        return F.pixel_shuffle(self.out(F.silu(self.out_norm(h))), 2)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def euler_sample(
    model: DemoModel,
    noise: torch.Tensor,
    ids: torch.Tensor,
    uncond_ids: torch.Tensor,
    steps: int,
    guidance: float,
    on_step: Callable[[int, int, Callable[[], torch.Tensor]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    start: float = 1.0,
    init: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Integrate the flow from t=``start`` to an image (t=0) in ``steps`` Euler steps, with CFG.

    txt2img starts from ``noise`` at t=1. Image-to-image gives ``init`` (images in [-1, 1]) and starts on the
    flow's straight path at t=``start`` (the strength): x = (1 - t) * init + t * noise, so 0 keeps the init image
    and 1 ignores it. Inpainting also gives ``mask`` (1 = repaint, 0 = keep; values between blend): after every
    step the kept region is put back on the path at the new t, the init image re-noised with the same noise, so
    the repainted region grows to fit what is kept around it.

    ``guidance`` <= 0 or 1 skips the unconditional branch (one network call per step instead of two).
    ``on_step(step, steps, estimate)``: ``estimate()`` is the image the walk is heading for (in [-1, 1]),
    computed only when called. Returns images in [-1, 1], or None when ``should_stop`` turned true (checked
    after every step).
    """
    use_cfg = guidance > 0 and guidance != 1
    batch = noise.shape[0]
    all_ids = torch.cat([ids, uncond_ids]) if use_cfg else ids
    text = model.encode_text(all_ids)
    x = noise if init is None else (1.0 - start) * init + start * noise
    times = torch.linspace(start, 0.0, steps + 1)
    for i in range(steps):
        t, t_next = float(times[i]), float(times[i + 1])
        inputs = torch.cat([x, x]) if use_cfg else x
        v = model(inputs, torch.full((inputs.shape[0],), t), all_ids, text)
        if use_cfg:
            v_cond, v_uncond = v[:batch], v[batch:]
            v = v_uncond + guidance * (v_cond - v_uncond)
        x = x + (t_next - t) * v
        if init is not None and mask is not None:
            x = mask * x + (1.0 - mask) * ((1.0 - t_next) * init + t_next * noise)
        if on_step is not None:
            on_step(i + 1, steps, partial(_image_estimate, x, v, t_next))
        if should_stop is not None and should_stop():
            return None
    return x.clamp(-1.0, 1.0)


def _image_estimate(x: torch.Tensor, v: torch.Tensor, t: float) -> torch.Tensor:
    # x_t = (1 - t) * image + t * noise and v = noise - image, so image = x_t - t * v: the x0 prediction that
    # live previews show (the straight line the current velocity points along, followed to t=0).
    return (x - t * v).clamp(-1.0, 1.0)
