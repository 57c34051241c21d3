"""The invisible watermark: a 64-bit payload hidden in the low frequencies of every stored image (DWT-DCT, QIM).

The first port of invisible-watermark's ``dwtDct`` (research 05) quantised the finest wavelet band of the full-size
image, so JPEG q80 (23 % bit errors) and a 50 % resize (39 %) erased it. This one works on a fixed-size copy, so
the mark lives at the same place whatever size the image is shown or saved at:

1. the chroma plane V (red minus luma: colour changes show less than brightness changes, and V's cost the least RGB
   error per unit, see ``_V_TO_RGB``) is resized to a canonical 256x256 working copy;
2. its Haar approximation band (128x128) is cut into 8x8 blocks and, in each block's DCT, the five lowest AC
   coefficients are quantised (QIM, step ``_STEP``) onto one of two lattices, 0 or 1, each shifted by a fixed
   pseudo-random dither so an unmarked or flat image reads as noise (confidence ~0.58), not as all zeros;
3. the 1,280 slots carry the 64 bits 20 times each in a fixed pseudo-random order (a washed-out sky or a black
   border costs a few votes of every bit, not all the votes of a few);
4. only the change goes back: blurred (no block edges on flat areas), resized to the image's size and added, so
   the image keeps its own detail. A second pass makes up what the blur took.

Reading resizes whatever image it is given to the same working copy and takes the vote. Those frequencies are
periods of 32 px and more on a 512x512 image: JPEG q70-90 quantises them lightly, and a downscale keeps them (bit
error rate 0 after JPEG q70, a 50 % resize, and both together; PSNR ~46 dB). Cropping moves the grid and is not
survived. Images under 256x256 are left unmarked. bench/safety.py measures the bit error rates, PSNR and time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image as PILImage

# OpenCV, PyWavelets and scipy.fft are imported where they are used, not here: every process imports this module
# (the output guard, the provenance check), and they cost ~0.2 s at start-up to commands and API processes that
# never embed or read a mark.

PAYLOAD_BYTES = 8
MIN_AREA = 256 * 256
FOUND_AT = 0.7  # vote confidence from which a payload counts as found
# (unmarked images read 0.58 +- 0.01: 20 votes per bit; marked ones after JPEG q70 + a 50 % resize 0.8 and more)

_CANON = 256  # the working copy's side
_BLOCK = 8
_SLOTS_PER_BLOCK = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0))  # the lowest AC coefficients of a block's DCT
_STEP = 48.0  # QIM step, in band units (one Haar level: 2x pixel units); PSNR ~46 dB
_BLUR = 2.0  # sigma of the blur on the working copy's change, in its pixels
_PASSES = 2
_SLOTS = (_CANON // 2 // _BLOCK) ** 2 * len(_SLOTS_PER_BLOCK)  # 1,280
_SEED = 0x5354_4C57  # "STLW": the dither and the slot order are fixed, so any install reads any other's mark
# RGB change per unit of V (V = 0.877 (R - Y), U and Y held): R += 1/0.877, G -= 0.299/0.587/0.877, B unchanged
_V_TO_RGB = np.array([1 / 0.877, -0.299 / (0.587 * 0.877), 0.0], dtype=np.float32)
_V_GRAD = 0.877 * np.array([0.701, -0.587, -0.114], dtype=np.float32)  # V = _V_GRAD . (R, G, B)

Array = NDArray[np.float32]


@dataclass(frozen=True)
class Reading:
    """What ``read`` found: the payload, the vote's confidence (0.5..1) and whether that counts as found."""

    payload: bytes
    confidence: float

    @property
    def found(self) -> bool:
        return self.confidence >= FOUND_AT


def fits(image: PILImage.Image) -> bool:
    """Whether ``image`` is large enough to carry the payload reliably."""
    return image.width * image.height >= MIN_AREA


def payload_for(configured: str, install_key: bytes) -> bytes:
    """The install's 8-byte payload: the configured text (padded with zeros), else one derived from its secret key
    (so two installs mark differently, and the key itself cannot be read back from an image)."""
    if configured:
        return configured.encode()[:PAYLOAD_BYTES].ljust(PAYLOAD_BYTES, b"\0")
    return b"SL" + hashlib.sha256(b"studiolo-watermark:" + install_key).digest()[: PAYLOAD_BYTES - 2]


@lru_cache(maxsize=4)
def _layout(nbits: int) -> tuple[NDArray[np.intp], Array]:
    """Per slot (block-major, then ``_SLOTS_PER_BLOCK``): the payload bit it carries and its dither."""
    slots = _SLOTS
    if not 0 < nbits <= slots // 8:  # at least 8 votes per bit
        raise ValueError(f"a payload of {nbits} bits does not fit ({slots // 8} at most)")
    rng = np.random.default_rng(_SEED)
    bit_of: NDArray[np.intp] = rng.permutation(slots) % nbits
    dither: Array = rng.uniform(0, _STEP, slots).astype(np.float32)
    return bit_of, dither


def _v_plane(rgb: Array) -> Array:
    v: Array = rgb @ _V_GRAD
    return v


def _canonical(plane: Array) -> Array:
    """The plane resized to the working copy: area averaging when shrinking (no aliasing), linear when growing."""
    import cv2

    h, w = plane.shape
    shrink = w >= _CANON and h >= _CANON
    canon: Array = cv2.resize(plane, (_CANON, _CANON), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return canon


def _coefficients(canon: Array) -> Array:
    """The block DCTs of the working copy's Haar approximation band, as (blocks, _BLOCK, _BLOCK), row-major."""
    import pywt
    from scipy.fft import dctn

    approx, _ = pywt.dwt2(canon, "haar")
    n = approx.shape[0] // _BLOCK
    blocks = approx.reshape(n, _BLOCK, n, _BLOCK).transpose(0, 2, 1, 3).reshape(-1, _BLOCK, _BLOCK)
    coeffs: Array = dctn(blocks, axes=(1, 2), norm="ortho")
    return coeffs


def _slot_values(coeffs: Array) -> Array:
    rows = [coeffs[:, r, c] for r, c in _SLOTS_PER_BLOCK]
    values: Array = np.stack(rows, axis=1).reshape(-1)
    return values


def _band_to_canonical(change: Array) -> Array:
    """A change of the slot values as a smooth change of the working copy."""
    import cv2
    import pywt
    from scipy.fft import idctn

    side, n = _CANON // 2, _CANON // 2 // _BLOCK
    delta_coeffs = np.zeros((n * n, _BLOCK, _BLOCK), dtype=np.float32)
    per_block = change.reshape(-1, len(_SLOTS_PER_BLOCK))
    for i, (r, c) in enumerate(_SLOTS_PER_BLOCK):
        delta_coeffs[:, r, c] = per_block[:, i]
    band = idctn(delta_coeffs, axes=(1, 2), norm="ortho").reshape(n, n, _BLOCK, _BLOCK).transpose(0, 2, 1, 3)
    zero = np.zeros((side, side), dtype=np.float32)
    # The band's change alone, back through the wavelet: the details are the image's own and stay as they are.
    delta = pywt.idwt2((band.reshape(side, side), (zero, zero, zero)), "haar").astype(np.float32)
    # Blurred: the block edges and the wavelet's 2x2 steps are what the eye would see on a flat area, and carry
    # nothing the reader uses; the second pass makes up what the blur took from the slots.
    smooth: Array = cv2.GaussianBlur(delta, (0, 0), _BLUR)
    return smooth


def embed(image: PILImage.Image, payload: bytes) -> PILImage.Image:
    """A copy of ``image`` (RGB) carrying ``payload``."""
    import cv2

    pixels = np.asarray(image.convert("RGB"))
    rgb = pixels.astype(np.float32)
    canon = _canonical(_v_plane(rgb))
    bit_of, dither = _layout(len(payload) * 8)
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8)).astype(np.float32)
    values = _slot_values(_coefficients(canon))
    offset = dither + bits[bit_of] * (_STEP / 2)  # the lattice this slot's bit says: offset + k * _STEP
    target: Array = (np.round((values - offset) / _STEP) * _STEP + offset).astype(np.float32)
    delta = np.zeros_like(canon)
    for step in range(_PASSES):
        now = values if step == 0 else _slot_values(_coefficients(canon + delta))
        delta += _band_to_canonical(target - now)
    h, w = rgb.shape[:2]
    full = cv2.resize(delta, (w, h), interpolation=cv2.INTER_LINEAR)
    # With luma and U held, a V change moves R and G only: two planes to compute at full size, not three.
    red = rgb[..., 0] + full * _V_TO_RGB[0]
    green = rgb[..., 1] + full * _V_TO_RGB[1]
    blue = rgb[..., 2]
    red_in, green_in = np.clip(red, 0, 255), np.clip(green, 0, 255)
    clipped = (red_in != red) | (green_in != green)
    count = np.count_nonzero(clipped)
    if count > clipped.size // 4:  # mostly white or black: whole planes beat gathering most of them
        red_in, green_in, blue = _unclip(red, green, red_in, green_in, blue)
    elif count:  # a few highlights: only those pixels
        fixed = _unclip(red[clipped], green[clipped], red_in[clipped], green_in[clipped], blue[clipped])
        red_in[clipped], green_in[clipped], blue[clipped] = fixed
    out = np.empty_like(pixels)
    for channel, plane in enumerate((red_in, green_in, blue)):
        out[..., channel] = np.rint(plane)
    return PILImage.fromarray(out, "RGB")


def _unclip(red: Array, green: Array, red_in: Array, green_in: Array, blue: Array) -> tuple[Array, Array, Array]:
    """The V change that white or black clipped from R or G, made up by the channels that can still move.

    On pure white a +V change raises R (clipped) and lowers G: only 30 % of it was left, and JPEG q80 then erased
    a white image's mark; lowering G and B a little more restores it (at the cost of a slight luma change there).
    Elementwise: on whole planes, or on the clipped pixels gathered into vectors.
    """
    short = _V_GRAD[0] * (red - red_in) + _V_GRAD[1] * (green - green_in)  # the V change still lacking
    sign = np.sign(short)
    moved = []
    for grad, plane in zip(_V_GRAD, (red_in, green_in, blue), strict=True):
        up = sign * grad > 0  # this channel gains V by going up here
        free = np.where(up, plane < 255, plane > 0) & (sign != 0)
        moved.append(np.where(free, grad, np.float32(0)))
    norm = moved[0] ** 2 + moved[1] ** 2 + moved[2] ** 2
    scale = np.divide(short, norm, out=np.zeros_like(short), where=norm > 0)
    r, g, b = (np.clip(plane + w * scale, 0, 255) for plane, w in zip((red_in, green_in, blue), moved, strict=True))
    return r, g, b


def read(image: PILImage.Image, nbytes: int = PAYLOAD_BYTES) -> Reading:
    """The payload read from ``image`` and the vote's confidence."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    coeffs = _coefficients(_canonical(_v_plane(rgb)))
    nbits = nbytes * 8
    bit_of, dither = _layout(nbits)
    # Where the value sits between its two lattices: 0 on the 0-lattice, 0.5 on the 1-lattice.
    phase = np.mod(_slot_values(coeffs) - dither, _STEP) / _STEP
    ones = (np.abs(phase - 0.5) < 0.25).astype(np.float64)
    total = np.bincount(bit_of, minlength=nbits).astype(np.float64)
    share = np.bincount(bit_of, weights=ones, minlength=nbits) / total
    bits = (share > 0.5).astype(np.uint8)
    confidence = float(np.mean(np.maximum(share, 1 - share)))
    return Reading(np.packbits(bits).tobytes(), confidence)


def extract(image: PILImage.Image, nbytes: int = PAYLOAD_BYTES) -> tuple[bytes, float]:
    """The payload read from ``image``, and the vote's confidence (0.5: noise, 1.0: every slot agreed)."""
    reading = read(image, nbytes)
    return reading.payload, reading.confidence
