"""WAV bytes <-> float32 samples, for the speech and music engines.

Tolerant on purpose: ``espeak-ng --stdout`` and OpenAI-style servers stream WAV, so their RIFF and data chunk sizes
are placeholders (0x7FFFFFFF, 0xFFFFFFFF or 0) that Python's ``wave`` module takes at face value. Here a data chunk
runs to the end of the bytes when its size says more than there is (tests/unit/test_speech.py).
"""

from __future__ import annotations

import struct

import numpy as np

_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE


class WavError(ValueError):
    """The bytes are not a WAV this decoder reads (RIFF/WAVE with PCM 8/16/24/32-bit or float 32/64)."""


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """-> (samples float32 of shape (frames, channels) in [-1, 1], sample rate)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None  # format tag, channels, rate, bits per sample
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise WavError("truncated fmt chunk")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body : body + 16])
            if tag == _EXTENSIBLE and size >= 40:
                (tag,) = struct.unpack("<H", data[body + 24 : body + 26])  # the sub-format GUID's first two bytes
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise WavError("data chunk before the fmt chunk")
            end = len(data) if size in (0, 0xFFFFFFFF) or body + size > len(data) else body + size
            return _samples(data[body:end], *fmt), fmt[2]
        pos = body + size + (size & 1)
    raise WavError("no data chunk")


def _samples(raw: bytes, tag: int, channels: int, rate: int, bits: int) -> np.ndarray:
    if channels < 1 or rate < 1:
        raise WavError(f"bad WAV header: {channels} channels, {rate} Hz")
    width = bits // 8
    if tag not in (_PCM, _FLOAT) or width not in (1, 2, 3, 4, 8) or (tag == _PCM and width == 8):
        raise WavError(f"unsupported WAV encoding (format {tag}, {bits} bits)")
    frame = width * channels
    raw = raw[: len(raw) - len(raw) % frame]
    if tag == _FLOAT:
        out = np.frombuffer(raw, dtype="<f4" if width == 4 else "<f8").astype(np.float32)
    elif width == 1:
        out = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        out = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        out = ints.astype(np.float32) / float(1 << 23)
    else:
        out = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    return np.clip(out.reshape(-1, channels), -1.0, 1.0)


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """float samples (frames,) or (frames, channels) in [-1, 1] -> 16-bit PCM WAV bytes."""
    a = np.asarray(samples, dtype=np.float32)
    if a.ndim == 1:
        a = a[:, None]
    channels = a.shape[1]
    pcm = (np.clip(a, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        _PCM,
        channels,
        sample_rate,
        sample_rate * channels * 2,
        channels * 2,
        16,
        b"data",
        len(pcm),
    )
    return header + pcm
