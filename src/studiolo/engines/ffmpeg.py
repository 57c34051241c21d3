"""ffmpeg as a separate program: finding a binary, running it cancellably, probing files, WAV in and out.

The binary comes from the ``imageio-ffmpeg`` wheel (a static FFmpeg build, so no system package is needed), or
from the system when its major version is at least the wheel's (Debian 12 ships 5.1, the wheel 9.x: the wheel
wins there), or from ``settings.film_ffmpeg``. The wheel ships no ffprobe: ``probe`` then parses ``ffmpeg -i``.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studiolo.engines.base import EngineError, GenerationCanceled
from studiolo.engines.wavcodec import decode_wav, encode_wav

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
STDERR_TAIL_LINES = 12


@dataclass(frozen=True)
class FFmpeg:
    ffmpeg: str  # path
    ffprobe: str | None  # path or None (probe() then parses `ffmpeg -i`)
    version: str


@dataclass(frozen=True)
class Probe:
    duration: float
    width: int
    height: int
    fps: float
    has_video: bool
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    subtitle_streams: int


# --------------------------------------------------------------------------- finding a binary


def _version_of(binary: str) -> str | None:
    """The version word of ``binary -version`` ("5.1.9-0+deb12u1", "n9.0.2-17-g2a571b6068-20260930"), or None."""
    try:
        done = subprocess.run(
            [binary, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"version\s+(\S+)", done.stdout)
    if done.returncode != 0 or match is None:
        return None
    return match.group(1)


def major_version(version: str) -> int | None:
    """5 for "5.1.9-0+deb12u1", 9 for "n9.0.2-...", None for a git snapshot ("N-112345-g...")."""
    match = re.match(r"n?(\d+)\.", version)
    return int(match.group(1)) if match else None


def _ffprobe_beside(ffmpeg: str) -> str | None:
    """The ffprobe next to ``ffmpeg`` (same folder), else the one on PATH, else None."""
    beside = Path(ffmpeg).with_name("ffprobe")
    if beside.is_file() and _version_of(str(beside)) is not None:
        return str(beside)
    on_path = shutil.which("ffprobe")
    if on_path and _version_of(on_path) is not None:
        return on_path
    return None


def _bundled_ffmpeg() -> str | None:
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError:  # the wheel has no binary for this platform
        return None


def find_ffmpeg(configured: str = "") -> FFmpeg | None:
    """The ffmpeg to use (see the module docstring); None when none runs.

    A configured binary is the only one considered: an administrator who names a binary means that one, and a
    broken path should show as "ffmpeg missing", not be papered over by another build.
    """
    if configured:
        configured = shutil.which(configured) or configured  # a bare name ("ffmpeg7") is looked up on PATH
        version = _version_of(configured)
        if version is None:
            log.warning("the configured ffmpeg %r does not run", configured)
            return None
        return FFmpeg(configured, _ffprobe_beside(configured), version)
    bundled = _bundled_ffmpeg()
    bundled_version = _version_of(bundled) if bundled else None
    system = shutil.which("ffmpeg")
    system_version = _version_of(system) if system else None
    if system and system_version is not None:
        system_major = major_version(system_version)
        bundled_major = major_version(bundled_version) if bundled_version else None
        if bundled_version is None or (
            system_major is not None and (bundled_major is None or system_major >= bundled_major)
        ):
            return FFmpeg(system, _ffprobe_beside(system), system_version)
    if bundled and bundled_version is not None:
        # The wheel ships no ffprobe; a system one reads the same files.
        return FFmpeg(bundled, _ffprobe_beside(bundled), bundled_version)
    return None


# --------------------------------------------------------------------------- running


def _tail(stderr: str, lines: int = STDERR_TAIL_LINES) -> str:
    # progress lines end in \r: treat them as lines too
    kept = [line.strip() for line in re.split(r"[\r\n]+", stderr) if line.strip()]
    return "\n".join(kept[-lines:])


def run_output(
    ff: FFmpeg,
    args: Sequence[str],
    *,
    should_stop: Callable[[], bool] | None = None,
    check: bool = True,
) -> str:
    """Like ``run`` but returns ffmpeg's stderr (what filters such as ``ebur128`` or ``loudnorm`` print).

    ``check=False`` returns the stderr of a failing run instead of raising (``ffmpeg -i`` with no output exits 1).
    """
    command = [ff.ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-y", *args]
    # stderr goes to a file, not a pipe: a pipe nobody reads while we poll would fill up and block ffmpeg.
    with tempfile.TemporaryFile() as errors:
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
        except OSError as exc:
            raise EngineError(f"ffmpeg could not start: {exc}", code="ffmpeg_failed", retryable=True) from exc
        try:
            while True:
                try:
                    returncode = process.wait(timeout=POLL_SECONDS if should_stop else None)
                    break
                except subprocess.TimeoutExpired:
                    if should_stop is not None and should_stop():
                        process.kill()
                        process.wait()
                        raise GenerationCanceled() from None
        finally:
            if process.poll() is None:  # an exception (KeyboardInterrupt ...) while waiting: never leave it behind
                process.kill()
                process.wait()
        errors.seek(0)
        stderr = errors.read().decode("utf-8", errors="replace")
    if returncode != 0 and check:
        raise EngineError(
            f"ffmpeg exited with status {returncode}:\n{_tail(stderr)}", code="ffmpeg_failed", retryable=True
        )
    return stderr


def run(ff: FFmpeg, args: Sequence[str], *, should_stop: Callable[[], bool] | None = None) -> None:
    """Run ``ffmpeg -hide_banner -nostdin -y <args>``; cancellable every 0.2 s through ``should_stop``.

    Raises GenerationCanceled when ``should_stop()`` turned true (ffmpeg is killed first) and
    EngineError(code="ffmpeg_failed", retryable=True) with the end of stderr on a non-zero exit.
    """
    run_output(ff, args, should_stop=should_stop)


# --------------------------------------------------------------------------- probing


def _fraction(text: str | None) -> float:
    if not text:
        return 0.0
    if "/" in text:
        numerator, denominator = text.split("/", 1)
        try:
            return float(numerator) / float(denominator) if float(denominator) else 0.0
        except ValueError:
            return 0.0
    try:
        return float(text)
    except ValueError:
        return 0.0


def _probe_json(ffprobe: str, path: Path) -> Probe:
    done = subprocess.run(
        [ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise EngineError(f"cannot read {path.name}: {_tail(done.stderr)}", code="probe_failed")
    data = json.loads(done.stdout or "{}")
    streams = data.get("streams") or []
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = _fraction((data.get("format") or {}).get("duration"))
    if not duration:
        duration = max((_fraction(s.get("duration")) for s in streams), default=0.0)
    fps = 0.0
    if video is not None:
        fps = _fraction(video.get("avg_frame_rate")) or _fraction(video.get("r_frame_rate"))
    return Probe(
        duration=duration,
        width=int(video.get("width") or 0) if video else 0,
        height=int(video.get("height") or 0) if video else 0,
        fps=fps,
        has_video=video is not None,
        has_audio=audio is not None,
        video_codec=video.get("codec_name") if video else None,
        audio_codec=audio.get("codec_name") if audio else None,
        subtitle_streams=sum(1 for s in streams if s.get("codec_type") == "subtitle"),
    )


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*:\s*(Video|Audio|Subtitle):\s*([A-Za-z0-9_]+)(.*)$", re.MULTILINE)
_SIZE = re.compile(r"\b(\d{2,5})x(\d{2,5})\b")
_FPS = re.compile(r"([\d.]+)\s*fps\b")
_TBR = re.compile(r"([\d.]+k?)\s*tbr\b")


def _probe_text(ff: FFmpeg, path: Path) -> Probe:
    """Read ``ffmpeg -i`` (it exits 1 for want of an output file: that is expected)."""
    stderr = run_output(ff, ["-i", str(path)], check=False)
    duration_match = _DURATION.search(stderr)
    streams = _STREAM.findall(stderr)
    if duration_match is None and not streams:
        raise EngineError(f"cannot read {path.name}: {_tail(stderr, 3)}", code="probe_failed")
    duration = 0.0
    if duration_match:
        hours, minutes, seconds = duration_match.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    width = height = 0
    fps = 0.0
    video_codec = audio_codec = None
    subtitles = 0
    for kind, codec, rest in streams:
        if kind == "Video" and video_codec is None:
            video_codec = codec
            size = _SIZE.search(rest)
            if size:
                width, height = int(size.group(1)), int(size.group(2))
            rate = _FPS.search(rest) or _TBR.search(rest)
            if rate:
                value = rate.group(1)
                fps = float(value[:-1]) * 1000 if value.endswith("k") else float(value)
        elif kind == "Audio" and audio_codec is None:
            audio_codec = codec
        elif kind == "Subtitle":
            subtitles += 1
    return Probe(
        duration=duration,
        width=width,
        height=height,
        fps=fps,
        has_video=video_codec is not None,
        has_audio=audio_codec is not None,
        video_codec=video_codec,
        audio_codec=audio_codec,
        subtitle_streams=subtitles,
    )


def probe(ff: FFmpeg, path: Path) -> Probe:
    """Streams, size, frame rate and duration of a media file (EngineError code "probe_failed" if unreadable)."""
    if not path.is_file():
        raise EngineError(f"no such file: {path.name}", code="probe_failed")
    if ff.ffprobe:
        return _probe_json(ff.ffprobe, path)
    return _probe_text(ff, path)


# --------------------------------------------------------------------------- WAV


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Float samples in [-1, 1], mono (N,) or multichannel (N, channels), as 16-bit PCM (wavcodec.py)."""
    data = np.asarray(samples, dtype=np.float32)
    if data.ndim not in (1, 2) or (data.ndim == 2 and data.shape[1] < 1):
        raise ValueError(f"samples must be (N,) or (N, channels), not {data.shape}")
    path.write_bytes(encode_wav(np.nan_to_num(data), int(sample_rate)))


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """WAV -> float32 in [-1, 1]: 1-D for mono, (N, channels) otherwise; and the sample rate. PCM 8/16/24/32-bit
    and float 32/64-bit, plain or WAVE_FORMAT_EXTENSIBLE (what ffmpeg writes for 24/32-bit): wavcodec.py."""
    samples, rate = decode_wav(path.read_bytes())
    return (samples[:, 0] if samples.shape[1] == 1 else samples), rate
