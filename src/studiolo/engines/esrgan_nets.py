"""The ESRGAN-family networks in plain torch (BasicSR's definitions, Real-ESRGAN's parameter names), for
engines/esrgan.py, which imports this module only when it loads a net (importing it imports torch).

``state_for`` renames an original-layout ESRGAN file's tensors to these names, so both layouts load strictly into
the same module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional

from studiolo.engines.esrgan_files import EsrganLayout


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


class ResidualDenseBlock(nn.Module):  # type: ignore[misc]
    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.conv1, self.conv2 = _conv(nf, gc), _conv(nf + gc, gc)
        self.conv3, self.conv4 = _conv(nf + 2 * gc, gc), _conv(nf + 3 * gc, gc)
        self.conv5 = _conv(nf + 4 * gc, nf)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5: torch.Tensor = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):  # type: ignore[misc]
    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (ResidualDenseBlock(nf, gc) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.rdb3(self.rdb2(self.rdb1(x)))
        return out * 0.2 + x


class RRDBNet(nn.Module):  # type: ignore[misc]
    """ESRGAN / Real-ESRGAN: RRDB blocks at the input's size, then nearest 2x enlargements each followed by a conv
    (a pixel-unshuffling net first folds its input into channels, which is how x2 and x1 nets share the design)."""

    def __init__(self, layout: EsrganLayout):
        super().__init__()
        nf = layout.features
        self.unshuffle = layout.unshuffle
        self.ups = layout.ups
        self.conv_first = _conv(layout.in_channels, nf)
        self.body = nn.Sequential(*(RRDB(nf, layout.grow) for _ in range(layout.blocks)))
        self.conv_body = _conv(nf, nf)
        for i in range(1, layout.ups + 1):
            self.add_module(f"conv_up{i}", _conv(nf, nf))
        self.conv_hr = _conv(nf, nf)
        self.conv_last = _conv(nf, layout.out_channels)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = functional.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(1, self.ups + 1):
            up = getattr(self, f"conv_up{i}")
            feat = self.lrelu(up(functional.interpolate(feat, scale_factor=2, mode="nearest")))
        out: torch.Tensor = self.conv_last(self.lrelu(self.conv_hr(feat)))
        return out


class SRVGGNetCompact(nn.Module):  # type: ignore[misc]
    """Real-ESRGAN's compact net: convs with PReLUs at the input's size, a pixel shuffle, plus the nearest-neighbour
    enlargement of the input (the net learns the difference from it)."""

    def __init__(self, layout: EsrganLayout):
        super().__init__()
        nf, scale = layout.features, layout.scale
        layers: list[nn.Module] = [_conv(layout.in_channels, nf), nn.PReLU(nf)]
        for _ in range(layout.blocks):
            layers += [_conv(nf, nf), nn.PReLU(nf)]
        layers.append(_conv(nf, layout.out_channels * scale * scale))
        self.body = nn.ModuleList(layers)
        self.scale = scale
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        base = functional.interpolate(x, scale_factor=self.scale, mode="nearest") if self.scale > 1 else x
        result: torch.Tensor = self.shuffle(out) + base
        return result


def build_net(layout: EsrganLayout) -> nn.Module:
    """An untrained net of ``layout``'s shape."""
    return SRVGGNetCompact(layout) if layout.net == "compact" else RRDBNet(layout)


def state_for(layout: EsrganLayout, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with an original-layout ESRGAN file's keys renamed to Real-ESRGAN's (other layouts unchanged)."""
    if layout.keys != "esrgan":
        return state
    renamed: dict[str, Any] = {}
    for key, tensor in state.items():
        new = key
        parts = key.split(".")
        if len(parts) == 8 and parts[:3] == ["model", "1", "sub"] and parts[4].startswith("RDB"):
            # model.1.sub.N.RDBk.convj.0.weight -> body.N.rdbk.convj.weight
            new = f"body.{parts[3]}.{parts[4].lower()}.{parts[5]}.{parts[7]}"
        else:
            for old, replacement in layout.renames:
                if key.startswith(old):
                    new = replacement + key[len(old) :]
                    break
        renamed[new] = tensor
    return renamed
