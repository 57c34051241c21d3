"""The invisible watermark: a 64-bit payload hidden in the chroma of every stored image (DWT-DCT).

The method of invisible-watermark's ``dwtDct`` (the one InvokeAI vendors and SD's reference scripts use), carried
here on numpy, PyWavelets and scipy because that package imports torch on import and pins opencv-python
(research 05): in the U and V channels, a Haar wavelet's approximation band is cut into 4x4 blocks; in each block's
DCT the largest AC coefficient is quantised (step 36) so its remainder says 0 or 1. The payload's bits repeat over
all blocks, and reading takes a vote of every block that carries a bit. Images under 256x256 are left unmarked
(too few blocks to vote). bench/safety.py measures what survives (JPEG, resizing).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pywt
from numpy.typing import NDArray
from PIL import Image as PILImage
from scipy.fft import dctn, idctn

PAYLOAD_BYTES = 8
MIN_AREA = 256 * 256
_BLOCK = 4
_SCALE = 36.0

Array = NDArray[np.float64]


def fits(image: PILImage.Image) -> bool:
    """Whether ``image`` is large enough to carry the payload reliably."""
    return image.width * image.height >= MIN_AREA


def payload_for(configured: str, install_key: bytes) -> bytes:
    """The install's 8-byte payload: the configured text (padded with zeros), else one derived from its secret key
    (so two installs mark differently, and the key itself cannot be read back from an image)."""
    if configured:
        return configured.encode()[:PAYLOAD_BYTES].ljust(PAYLOAD_BYTES, b"\0")
    return b"SL" + hashlib.sha256(b"studiolo-watermark:" + install_key).digest()[: PAYLOAD_BYTES - 2]


def _bits(payload: bytes) -> NDArray[np.uint8]:
    return np.unpackbits(np.frombuffer(payload, dtype=np.uint8))


def _to_yuv(rgb: Array) -> Array:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return np.stack([y, 0.492 * (b - y), 0.877 * (r - y)], axis=-1)


def _to_rgb(yuv: Array) -> Array:
    y, u, v = yuv[..., 0], yuv[..., 1], yuv[..., 2]
    b = y + u / 0.492
    r = y + v / 0.877
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return np.stack([r, g, b], axis=-1)


def _blocks(band: Array) -> tuple[Array, int, int]:
    """The band's whole 4x4 blocks as (n, 4, 4), row-major, and the block grid's rows and columns."""
    rows, cols = band.shape[0] // _BLOCK, band.shape[1] // _BLOCK
    cut = band[: rows * _BLOCK, : cols * _BLOCK]
    return cut.reshape(rows, _BLOCK, cols, _BLOCK).transpose(0, 2, 1, 3).reshape(-1, _BLOCK, _BLOCK), rows, cols


def _carrier(coeffs: Array) -> NDArray[np.intp]:
    """Per block, the flat index of its largest AC coefficient (the DC term at 0 is never used)."""
    flat = np.abs(coeffs.reshape(len(coeffs), -1))
    carrier: NDArray[np.intp] = np.argmax(flat[:, 1:], axis=1) + 1
    return carrier


def _embed_band(band: Array, bits: NDArray[np.uint8]) -> Array:
    blocks, rows, cols = _blocks(band)
    coeffs = dctn(blocks, axes=(1, 2), norm="ortho").reshape(len(blocks), -1)
    pos = _carrier(coeffs)
    index = np.arange(len(blocks))
    val = coeffs[index, pos]
    want = bits[index % len(bits)].astype(np.float64)
    coeffs[index, pos] = np.sign(val + (val == 0)) * (np.abs(val) // _SCALE + 0.25 + 0.5 * want) * _SCALE
    marked = idctn(coeffs.reshape(-1, _BLOCK, _BLOCK), axes=(1, 2), norm="ortho")
    out = band.copy()
    out[: rows * _BLOCK, : cols * _BLOCK] = (
        marked.reshape(rows, cols, _BLOCK, _BLOCK).transpose(0, 2, 1, 3).reshape(rows * _BLOCK, cols * _BLOCK)
    )
    return out


def _votes_band(band: Array, nbits: int) -> tuple[Array, Array]:
    blocks, _, _ = _blocks(band)
    coeffs = dctn(blocks, axes=(1, 2), norm="ortho").reshape(len(blocks), -1)
    val = np.abs(coeffs[np.arange(len(blocks)), _carrier(coeffs)])
    ones = (val % _SCALE > 0.5 * _SCALE).astype(np.float64)
    slot = np.arange(len(blocks)) % nbits
    counted: Array = np.bincount(slot, minlength=nbits).astype(np.float64)
    voted: Array = np.bincount(slot, weights=ones, minlength=nbits).astype(np.float64)
    return voted, counted


def embed(image: PILImage.Image, payload: bytes) -> PILImage.Image:
    """A copy of ``image`` (RGB) carrying ``payload`` in its chroma."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    yuv = _to_yuv(rgb)
    bits = _bits(payload)
    for channel in (1, 2):
        approx, details = pywt.dwt2(yuv[..., channel], "haar")
        restored = pywt.idwt2((_embed_band(approx, bits), details), "haar")
        yuv[..., channel] = restored[: rgb.shape[0], : rgb.shape[1]]
    return PILImage.fromarray(np.clip(np.rint(_to_rgb(yuv)), 0, 255).astype(np.uint8), "RGB")


def extract(image: PILImage.Image, nbytes: int = PAYLOAD_BYTES) -> tuple[bytes, float]:
    """The payload read from ``image``, and the vote's confidence (0.5: noise, 1.0: every block agreed)."""
    yuv = _to_yuv(np.asarray(image.convert("RGB"), dtype=np.float64))
    nbits = nbytes * 8
    ones, total = np.zeros(nbits), np.zeros(nbits)
    for channel in (1, 2):
        approx, _ = pywt.dwt2(yuv[..., channel], "haar")
        o, t = _votes_band(approx, nbits)
        ones, total = ones + o, total + t
    share = np.divide(ones, total, out=np.full(nbits, 0.5), where=total > 0)
    bits = (share > 0.5).astype(np.uint8)
    confidence = float(np.mean(np.maximum(share, 1 - share)))
    return np.packbits(bits).tobytes(), confidence
