"""ESRGAN-family upscaler files recognised from their .safetensors header alone (no torch): which network, its
native scale, channels and depth, and the catalog's arch label for it.

Two networks cover most upscalers users download (OpenModelDB, Real-ESRGAN releases):

- RRDBNet (ESRGAN, Real-ESRGAN x4plus/x2plus, the anime 6-block model, most community "4x_..." models), in two key
  layouts: the original ESRGAN one (``model.0.weight``, ``model.1.sub.N.RDB1.conv1.0.weight``, the upsampling and
  HR convs at later ``model.K`` indices) and BasicSR/Real-ESRGAN's (``conv_first``, ``body.N.rdb1.conv1``,
  ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``). Each upsampling conv doubles the size; an
  input of 4 or 16 times the output's channels means the net pixel-unshuffles its input first (Real-ESRGAN x2plus
  and x1 models), which halves or quarters the scale.
- SRVGGNetCompact (realesr-general-x4v3, realesr-animevideov3): ``body.N`` convs with PReLUs between them, the last
  conv making ``out_channels * scale**2`` channels for a pixel shuffle.

engines/esrgan.py builds and runs them; engines/model_files.py asks ``detect_esrgan`` before refusing a .safetensors
that is not a Stable Diffusion checkpoint. Tests: tests/unit/test_esrgan.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ESRGAN_ENGINE = "esrgan"
# The native scales an upscaler file may have (the "1x" ones restore an image without enlarging it).
_SCALES = (1, 2, 4, 8)
# The catalog's arch labels: "esrgan-x4" (RRDBNet), "compact-x4" (SRVGGNetCompact)...
ESRGAN_ARCHS: frozenset[str] = frozenset(f"{net}-x{s}" for net in ("esrgan", "compact") for s in _SCALES)
# What an upscale request may ask of any of them: the net runs at its own scale as often as needed (an x2 net twice
# for 4x), and Lanczos makes the exact size when that overshoots (an x4 net for 2x) or cannot grow (x1), as A1111
# does with its upscalers.
ESRGAN_FACTORS: tuple[int, ...] = (2, 4)
ESRGAN_UPSCALER_FACTORS: dict[str, tuple[int, ...]] = dict.fromkeys(ESRGAN_ARCHS, ESRGAN_FACTORS)

_OLD_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB1\.conv1\.0\.weight$")
_OLD_CONV = re.compile(r"^model\.(\d+)\.weight$")
_NEW_RDB = re.compile(r"^body\.(\d+)\.rdb1\.conv1\.weight$")
_NEW_UP = re.compile(r"^conv_up(\d+)\.weight$")
_COMPACT = re.compile(r"^body\.(\d+)\.(weight|bias)$")


@dataclass(frozen=True)
class EsrganLayout:
    """What a file holds. ``net``: "rrdb" or "compact"; ``keys``: "esrgan" (original layout), "real-esrgan" or
    "compact"; ``blocks``: RRDB blocks, or a compact net's hidden convs; ``grow``: an RRDB's growth channels (0 for
    compact); ``unshuffle``: the input's pixel-unshuffle factor (1: none); ``upconvs``: the RRDB's upsampling convs,
    by their key (old layout: ``model.K``; new: ``conv_upK``)."""

    net: Literal["rrdb", "compact"]
    keys: Literal["esrgan", "real-esrgan", "compact"]
    scale: int
    in_channels: int
    out_channels: int
    features: int
    blocks: int
    grow: int = 0
    unshuffle: int = 1
    ups: int = 0
    renames: tuple[tuple[str, str], ...] = ()

    @property
    def arch(self) -> str:
        """The catalog's label: "esrgan-x4", "compact-x2"..."""
        return f"{'esrgan' if self.net == 'rrdb' else 'compact'}-x{self.scale}"


def _shape(header: Mapping[str, Any], key: str) -> list[int] | None:
    info = header.get(key)
    shape = info.get("shape") if isinstance(info, dict) else None
    if isinstance(shape, list) and all(isinstance(d, int) and d > 0 for d in shape):
        return shape
    return None


def _conv(header: Mapping[str, Any], key: str) -> tuple[int, int] | None:
    """(out, in) channels of a 3x3 conv weight, None when ``key`` is not one."""
    shape = _shape(header, key)
    if shape is None or len(shape) != 4 or shape[2:] != [3, 3]:
        return None
    return shape[0], shape[1]


def detect_esrgan(header: Mapping[str, Any]) -> EsrganLayout | None:
    """The ESRGAN-family network a .safetensors header describes (see the module doc), None for anything else or a
    file whose tensors do not add up to one (a scale outside 1/2/4/8, a missing conv)."""
    keys = [k for k in header if k != "__metadata__"]
    if "model.0.weight" in header and any(_OLD_RDB.match(k) for k in keys):
        return _old_rrdb(header, keys)
    if "conv_first.weight" in header and "conv_last.weight" in header:
        return _new_rrdb(header, keys)
    if "body.0.weight" in header and all(_COMPACT.match(k) for k in keys):
        return _compact(header, keys)
    return None


def _rrdb(
    header: Mapping[str, Any],
    keys_kind: Literal["esrgan", "real-esrgan"],
    blocks: int,
    convs: dict[str, str],
    renames: tuple[tuple[str, str], ...] = (),
) -> EsrganLayout | None:
    """The RRDBNet whose convs outside the blocks are ``convs`` (Real-ESRGAN name -> this file's key)."""
    shapes = {name: _conv(header, key) for name, key in convs.items()}
    first_rdb = "body.0.rdb1.conv1.weight" if keys_kind == "real-esrgan" else "model.1.sub.0.RDB1.conv1.0.weight"
    rdb1 = _conv(header, first_rdb)
    head, tail = shapes["conv_first"], shapes["conv_last"]
    if head is None or tail is None or rdb1 is None or blocks < 1 or any(v is None for v in shapes.values()):
        return None
    features, in_ch = head
    out_ch = tail[0]
    unshuffle = {1: 1, 4: 2, 16: 4}.get(in_ch // out_ch) if in_ch % out_ch == 0 else None
    ups = sum(name.startswith("conv_up") for name in convs)
    if unshuffle is None or 2**ups % unshuffle or (2**ups // unshuffle) not in _SCALES:
        return None
    return EsrganLayout(
        "rrdb", keys_kind, 2**ups // unshuffle, in_ch, out_ch, features, blocks, rdb1[0], unshuffle, ups, renames
    )


def _old_rrdb(header: Mapping[str, Any], keys: list[str]) -> EsrganLayout | None:
    blocks = len({m.group(1) for k in keys if (m := _OLD_RDB.match(k))})
    # After model.0 (first conv) and model.1 (the blocks): the upsampling convs, then the HR conv and the last one.
    indices = sorted(int(m.group(1)) for k in keys if (m := _OLD_CONV.match(k)) and int(m.group(1)) >= 2)
    if len(indices) < 2:
        return None
    names = ["conv_first", "conv_body", *(f"conv_up{n}" for n in range(1, len(indices) - 1)), "conv_hr", "conv_last"]
    prefixes = ["model.0", f"model.1.sub.{blocks}", *(f"model.{i}" for i in indices)]
    pairs = list(zip(prefixes, names, strict=True))
    renames = tuple((old + ".", new + ".") for old, new in pairs)
    return _rrdb(header, "esrgan", blocks, {new: old + ".weight" for old, new in pairs}, renames)


def _new_rrdb(header: Mapping[str, Any], keys: list[str]) -> EsrganLayout | None:
    blocks = len({m.group(1) for k in keys if (m := _NEW_RDB.match(k))})
    ups = sorted(int(m.group(1)) for k in keys if (m := _NEW_UP.match(k)))
    if ups != list(range(1, len(ups) + 1)):
        return None
    names = ["conv_first", "conv_body", *(f"conv_up{n}" for n in ups), "conv_hr", "conv_last"]
    return _rrdb(header, "real-esrgan", blocks, {name: name + ".weight" for name in names})


def _compact(header: Mapping[str, Any], keys: list[str]) -> EsrganLayout | None:
    # Convs at even indices, a PReLU (one weight per channel) after each but the last.
    indices = sorted({int(m.group(1)) for k in keys if (m := _COMPACT.match(k))})
    last = indices[-1]
    if last < 2 or last % 2 or indices != list(range(last + 1)):
        return None  # no PReLUs between the convs (ReLU variants) or a gap: not a layout this engine builds
    first, tail = _conv(header, "body.0.weight"), _conv(header, f"body.{last}.weight")
    if first is None or tail is None:
        return None
    features, in_ch = first
    prelu = _shape(header, "body.1.weight")
    if prelu != [features] or tail[1] != features or tail[0] % in_ch:
        return None
    scale = round((tail[0] // in_ch) ** 0.5)
    if scale * scale * in_ch != tail[0] or scale not in _SCALES:
        return None
    return EsrganLayout("compact", "compact", scale, in_ch, in_ch, features, last // 2 - 1)
