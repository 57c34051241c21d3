"""Pure media for a film: Ken Burns clips per scene slot, their concatenation, the audio mix, the final MP4.

The film is a sequence of clips, one per scene slot. Clip k shows shot k's Ken Burns motion and, in its last
``crossfade`` seconds, crossfades into the FIRST ``crossfade`` seconds of shot k+1's motion; clip k+1 then starts
at that point of shot k+1's motion (``previous_crossfade``). Every clip is encoded with the same codec settings,
so the concat demuxer joins them with ``-c copy``: a continuous film with real crossfades and no final re-encode.
An edit of scene k changes only the keys of clips k-1 and k, so only those two are rendered again.

A shot's motion is a function of (motion_seed, the shot's total motion frames, frame number) only — never of the
clip that draws it — so the frames of shot k+1 inside clip k's crossfade are exactly the frames clip k+1 continues
from (tests/unit/test_film_render.py::test_motion_frames_are_the_same_in_both_clips).

No database and no object store here: paths in, files out. Every output is written beside its target and renamed
into place once complete, so a canceled or killed render never leaves a half file under a cache key.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from studiolo.domain.film.subtitles import Cue
from studiolo.engines.base import EngineError, GenerationCanceled
from studiolo.engines.ffmpeg import FFmpeg, Probe, probe, run

# Bump when a change here alters the pixels of a clip: every cached clip key changes with it.
RENDER_VERSION = 1
PRESCALE = 2  # zoompan crops at whole pixels: on a 2x source a crop step is half an output pixel (no visible jitter)
X264 = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-profile:v", "high")
AUDIO_RATE = 48000
AUDIO_BITRATE = "192k"
LOUDNESS = "I=-16:TP=-1.5:LRA=11"
# loudnorm works at 192 kHz and leaves its output there: back to 48 kHz, and a layout named outright (ffmpeg 5.1
# cannot pick one for the link to the encoder after loudnorm on its own)
OUT_FORMAT = f"aresample={AUDIO_RATE},aformat=sample_fmts=fltp:sample_rates={AUDIO_RATE}:channel_layouts=stereo"
FONT_FILE = "DejaVuSans.ttf"
FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",  # Debian/Ubuntu fonts-dejavu-core
    "/usr/share/fonts/dejavu",  # Fedora, Arch
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
    "/Library/Fonts",
)

ShouldStop = Callable[[], bool] | None


# --------------------------------------------------------------------------- frames and shots


@dataclass(frozen=True)
class Frame:
    width: int
    height: int
    fps: int = 30


_SHORT_SIDE = {"720p": 720, "1080p": 1080}


def frame_for(aspect: str, resolution: str) -> Frame:
    """ "16:9"/"720p" -> 1280x720, "9:16"/"720p" -> 720x1280, "1:1"/"720p" -> 720x720; 1080p likewise."""
    if resolution not in _SHORT_SIDE:
        raise ValueError(f"unknown resolution {resolution!r} (720p or 1080p)")
    short = _SHORT_SIDE[resolution]
    long = short * 16 // 9
    sizes = {"16:9": (long, short), "9:16": (short, long), "1:1": (short, short)}
    if aspect not in sizes:
        raise ValueError(f"unknown aspect {aspect!r} (16:9, 9:16 or 1:1)")
    return Frame(*sizes[aspect])


def frames(seconds: float, fps: int) -> int:
    """How many frames ``seconds`` lasts at ``fps`` (what a clip of that slot holds)."""
    return round(seconds * fps)


def snap(seconds: float, fps: int) -> float:
    """``seconds`` rounded to whole frames: slots given so make the video exactly as long as the audio timeline."""
    return frames(seconds, fps) / fps


@dataclass(frozen=True)
class Shot:  # one scene on the film's timeline
    image: Path  # its image, any size (cropped to the frame, never stretched)
    image_hash: str  # sha256 of the image bytes (for clip keys)
    seconds: float  # its slot: the crossfade into the next scene takes the slot's last `crossfade` seconds
    motion_seed: int  # Ken Burns direction and zoom (deterministic)
    cues: tuple[Cue, ...] = ()  # its subtitles, times relative to the slot start (burned in only if burn=True)
    # An image-to-video model's motion for the shot in place of Ken Burns: a video of the frame's size and fps whose
    # frames cover the shot's whole span (the part shown in the previous clip's crossfade, then its slot), named
    # in clip keys by ``video_hash`` (what made it). Made only when a clip needing it is rendered (pipeline.py).
    video: Path | None = None
    video_hash: str | None = None


@dataclass(frozen=True)
class ClipSpec:  # clip k of the film: shot k's slot, including the crossfade into shot k+1
    index: int
    shot: Shot
    next_shot: Shot | None  # None for the last
    previous_crossfade: float  # seconds of shot k's motion already shown inside clip k-1's crossfade (0 for k=0)
    crossfade: float
    frame: Frame
    burn: bool

    @property
    def frame_count(self) -> int:
        return frames(self.shot.seconds, self.frame.fps)

    @property
    def fade_frames(self) -> int:
        return frames(self.crossfade, self.frame.fps) if self.next_shot is not None else 0

    @property
    def offset_frames(self) -> int:
        """Frames of this shot's motion shown before this clip starts (in the previous clip's crossfade)."""
        return frames(self.previous_crossfade, self.frame.fps)

    def key(self) -> str:
        """sha256 hex of everything that decides the clip's pixels (not the index: a moved scene keeps its clip)."""

        def shot(s: Shot, *, cues: bool) -> dict[str, object]:
            fields: dict[str, object] = {
                "image": s.image_hash,
                "frames": frames(s.seconds, self.frame.fps),
                "motion": s.motion_seed,
            }
            if s.video_hash is not None:
                fields["video"] = s.video_hash
            if cues:
                fields["cues"] = [[round(c.start, 3), round(c.end, 3), c.text] for c in s.cues]
            return fields

        payload = {
            "version": RENDER_VERSION,
            "frame": [self.frame.width, self.frame.height, self.frame.fps],
            "shot": shot(self.shot, cues=self.burn),
            "next": shot(self.next_shot, cues=False) if self.next_shot is not None and self.fade_frames else None,
            "offset": self.offset_frames,
            "fade": self.fade_frames,
            "burn": self.burn,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan_clips(shots: Sequence[Shot], frame: Frame, *, crossfade: float = 0.5, burn: bool = False) -> list[ClipSpec]:
    """One clip per shot. A crossfade is at most half of either slot it joins, so a short scene still shows itself."""
    if not shots:
        raise ValueError("a film needs at least one shot")
    counts = [frames(s.seconds, frame.fps) for s in shots]
    for position, count in enumerate(counts):
        if count < 1:
            raise ValueError(f"shot {position} lasts less than one frame ({shots[position].seconds} s)")
    wanted = max(0, frames(crossfade, frame.fps))
    fades = [min(wanted, counts[k] // 2, counts[k + 1] // 2) for k in range(len(shots) - 1)] + [0]
    return [
        ClipSpec(
            index=k,
            shot=shot,
            next_shot=shots[k + 1] if k + 1 < len(shots) else None,
            previous_crossfade=fades[k - 1] / frame.fps if k > 0 else 0.0,
            crossfade=fades[k] / frame.fps,
            frame=frame,
            burn=burn,
        )
        for k, shot in enumerate(shots)
    ]


# --------------------------------------------------------------------------- Ken Burns motion


@dataclass(frozen=True)
class Motion:
    zoom_start: float
    zoom_end: float
    x_start: float  # where the crop window sits in the free room, 0 (left/top) .. 1 (right/bottom)
    y_start: float
    x_end: float
    y_end: float


def motion_for(seed: int) -> Motion:
    """Zoom in or out by 12-25 % while drifting across the picture; the same seed, the same move."""
    rng = random.Random(seed)
    amount = rng.uniform(0.12, 0.25)
    zoom_in = rng.random() < 0.5
    start = (rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))
    end = (rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))
    return Motion(
        zoom_start=1.0 if zoom_in else 1.0 + amount,
        zoom_end=1.0 + amount if zoom_in else 1.0,
        x_start=start[0],
        y_start=start[1],
        x_end=end[0],
        y_end=end[1],
    )


def motion_filter(seed: int, total: int, offset: int, count: int, frame: Frame) -> str:
    """zoompan drawing frames ``offset .. offset+count-1`` of a ``total``-frame move of one still image.

    The expressions read only the absolute frame number (``on`` + offset) and ``total``: whichever clip draws
    frame i of a shot's motion draws the same pixels.
    """
    m = motion_for(seed)
    t = f"((on+{offset})/{max(total - 1, 1)})"

    def lerp(a: float, b: float) -> str:
        return f"({a:.6f}+{b - a:.6f}*{t})"

    return (
        f"zoompan=z='{lerp(m.zoom_start, m.zoom_end)}'"
        f":x='(iw-iw/zoom)*{lerp(m.x_start, m.x_end)}'"
        f":y='(ih-ih/zoom)*{lerp(m.y_start, m.y_end)}'"
        f":d={count}:s={frame.width}x{frame.height}:fps={frame.fps},setsar=1"
    )


def _prescaled(image: Path, frame: Frame, out: Path) -> Path:
    """The image cropped to the frame's shape (never stretched) at PRESCALE x the frame, as raw RGB for ffmpeg.

    Pillow reads it (EXIF rotation, palette, alpha over black, any format the gallery stores) so that ffmpeg
    never sees a file name it could take for an image-sequence pattern.
    """
    size = (frame.width * PRESCALE, frame.height * PRESCALE)
    try:
        with Image.open(image) as opened:
            picture = ImageOps.exif_transpose(opened)
            if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
                rgba = picture.convert("RGBA")
                picture = Image.new("RGB", rgba.size, (0, 0, 0))
                picture.paste(rgba, mask=rgba.getchannel("A"))
            fitted = ImageOps.fit(picture.convert("RGB"), size, method=Image.Resampling.LANCZOS)
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read the scene image {image.name}: {exc}", code="invalid_image") from exc
    out.write_bytes(fitted.tobytes())
    return out


def _raw_input(path: Path, frame: Frame, *, prescale: int = PRESCALE) -> list[str]:
    size = f"{frame.width * prescale}x{frame.height * prescale}"
    return ["-f", "rawvideo", "-pix_fmt", "rgb24", "-video_size", size, "-framerate", str(frame.fps), "-i", str(path)]


# --------------------------------------------------------------------------- burned-in subtitles


def font_dir() -> Path | None:
    """A folder holding DejaVu Sans (fonts-dejavu-core on Debian), or None."""
    for folder in FONT_DIRS:
        if (Path(folder) / FONT_FILE).is_file():
            return Path(folder)
    return None


def _ass_time(seconds: float) -> str:
    centis = max(0, round(seconds * 100))
    hours, centis = divmod(centis, 360_000)
    minutes, centis = divmod(centis, 6000)
    secs, centis = divmod(centis, 100)
    return f"{hours}:{minutes:02d}:{secs:02d}.{centis:02d}"


def _ass_text(text: str) -> str:
    # Backslashes start override codes and braces override blocks in ASS; they have no escape, so they are swapped
    # for look-alikes rather than letting a line of narration restyle the captions.
    cleaned = text.replace("\\", "/").replace("{", "(").replace("}", ")")
    return "\\N".join(line.strip() for line in cleaned.splitlines() if line.strip())


def ass_document(cues: Sequence[Cue], frame: Frame, seconds: float) -> str:
    """An ASS script for ``cues`` at the frame's pixel size: white DejaVu Sans, dark outline, bottom centre."""
    # Sized so that a 42-character line fits the width (portrait frames) and is ~5.5 % of the height otherwise.
    size = max(10, round(min(frame.height * 0.055, frame.width * 0.92 / (42 * 0.56))))
    outline = max(1.0, size / 14)
    margin = round(frame.height * 0.06)
    lines = [
        "[Script Info]",
        "ScriptType: v4.00+",
        f"PlayResX: {frame.width}",
        f"PlayResY: {frame.height}",
        "WrapStyle: 0",
        "ScaledBorderAndShadow: yes",
        "",
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
        "Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, "
        "MarginR, MarginV, Encoding",
        f"Style: Default,DejaVu Sans,{size},&H00FFFFFF,&H000000FF,&H00101010,&H80000000,0,0,0,0,100,100,0,0,1,"
        f"{outline:.1f},0,2,{margin},{margin},{margin},1",
        "",
        "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    ]
    for cue in cues:
        start, end = max(0.0, cue.start), min(seconds, cue.end)
        text = _ass_text(cue.text)
        if end > start and text:
            lines.append(f"Dialogue: 0,{_ass_time(start)},{_ass_time(end)},Default,,0,0,0,,{text}")
    return "\n".join(lines) + "\n"


def _filter_value(value: str) -> str:
    """``value`` escaped as a filter option inside a filtergraph (both escaping levels of ffmpeg-filters(1))."""
    level1 = value.replace("\\", "\\\\").replace("'", "\\'").replace(":", "\\:")
    return "".join("\\" + c if c in "\\'[],;" else c for c in level1)


# --------------------------------------------------------------------------- files


@contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="studiolo-film-") as folder:
        yield Path(folder)


@contextmanager
def _atomic(out: Path) -> Iterator[Path]:
    """A partial path beside ``out`` (same suffix, so ffmpeg picks the same muxer), renamed onto ``out`` on success."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    try:
        yield partial
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


def _video_codec_args(frame: Frame) -> list[str]:
    """Identical for every clip: what lets the concat demuxer join clips with -c copy."""
    gop = 2 * frame.fps
    return [
        *X264,
        "-r",
        str(frame.fps),
        "-g",
        str(gop),
        "-keyint_min",
        str(gop),
        "-sc_threshold",
        "0",
        "-video_track_timescale",
        str(frame.fps * 512),
    ]


# --------------------------------------------------------------------------- clips and film


def render_clip(ff: FFmpeg, spec: ClipSpec, out: Path, *, should_stop: ShouldStop = None) -> None:
    """Clip ``spec.index``: round(seconds*fps) frames of H.264, the last ``crossfade`` of them fading into the
    next shot's motion; the shot's cues burned in when ``spec.burn``."""
    frame = spec.frame
    count, fade, offset = spec.frame_count, spec.fade_frames, spec.offset_frames
    if should_stop is not None and should_stop():  # before the prescaling, which ffmpeg's polling does not cover
        raise GenerationCanceled()
    with _workdir() as work, _atomic(out) as partial:
        args, moving = _shot_input(spec.shot, frame, work / "shot.rgb", offset, count, offset + count)
        graph = [f"[0:v]{moving}[a]"]
        label = "a"
        if spec.next_shot is not None and fade > 0:
            next_total = fade + frames(spec.next_shot.seconds, frame.fps)
            more, next_moving = _shot_input(spec.next_shot, frame, work / "next.rgb", 0, fade, next_total)
            args += more
            graph.append(f"[1:v]{next_moving}[b]")
            timing = f"duration={fade / frame.fps:.6f}:offset={(count - fade) / frame.fps:.6f}"
            graph.append(f"[a][b]xfade=transition=fade:{timing}[x]")
            label = "x"
        if spec.burn and spec.shot.cues:
            fonts = font_dir()
            if fonts is None:
                raise EngineError(
                    f"burned-in subtitles need the DejaVu Sans font ({FONT_FILE}); install fonts-dejavu-core",
                    code="subtitle_font_missing",
                )
            subtitles = work / "cues.ass"
            subtitles.write_text(ass_document(spec.shot.cues, frame, spec.shot.seconds), encoding="utf-8")
            graph.append(
                f"[{label}]ass=filename={_filter_value(str(subtitles))}:fontsdir={_filter_value(str(fonts))}[s]"
            )
            label = "s"
        graph.append(f"[{label}]format=yuv420p[out]")
        args += ["-filter_complex", ";".join(graph), "-map", "[out]", "-frames:v", str(count), "-an"]
        args += [*_video_codec_args(frame), "-f", "mp4", str(partial)]
        run(ff, args, should_stop=should_stop)


def _shot_input(shot: Shot, frame: Frame, scratch: Path, offset: int, count: int, total: int) -> tuple[list[str], str]:
    """The ffmpeg input of a shot and the filter giving frames [offset, offset + count) of its ``total``-frame
    motion: its image under Ken Burns, or those frames of its image-to-video motion."""
    if shot.video is not None:
        cut = f"trim=start_frame={offset}:end_frame={offset + count},setpts=PTS-STARTPTS"
        return ["-i", str(shot.video)], f"{cut},fps={frame.fps},format=yuv420p"
    zoompan = motion_filter(shot.motion_seed, total, offset, count, frame)
    return _raw_input(_prescaled(shot.image, frame, scratch), frame), f"format=yuv420p,{zoompan}"


def encode_frames(ff: FFmpeg, raw: Path, frame: Frame, count: int, out: Path) -> None:
    """``count`` raw RGB frames of the frame's size (an image-to-video model's) as a near-lossless intermediate
    video, the input of the clips that show them."""
    with _atomic(out) as partial:
        args = [*_raw_input(raw, frame, prescale=1), "-frames:v", str(count), "-an", "-c:v", "libx264"]
        args += ["-preset", "ultrafast", "-crf", "8", "-pix_fmt", "yuv444p", "-f", "mp4", str(partial)]
        run(ff, args)


def _concat_line(path: Path) -> str:
    return "file '" + str(path.resolve()).replace("'", "'\\''") + "'"


def concat(ff: FFmpeg, clips: Sequence[Path], out: Path, *, should_stop: ShouldStop = None) -> None:
    """The clips one after another: concat demuxer, stream copy, no re-encode."""
    if not clips:
        raise ValueError("nothing to concatenate")
    with _workdir() as work, _atomic(out) as partial:
        listing = work / "clips.txt"
        listing.write_text("\n".join(_concat_line(c) for c in clips) + "\n", encoding="utf-8")
        run(
            ff,
            ["-f", "concat", "-safe", "0", "-i", str(listing), "-map", "0:v", "-c", "copy", "-f", "mp4", str(partial)],
            should_stop=should_stop,
        )


def mix(
    ff: FFmpeg,
    narration: Path,
    music: Path | None,
    seconds: float,
    out: Path,
    *,
    should_stop: ShouldStop = None,
) -> None:
    """Narration over the music bed: the music ducked under the voice, loudness -16 LUFS, AAC 192k, ``seconds`` long.

    The voice is padded to the full length (apad) before it keys the compressor: without it the sidechain input
    ends with the last line and the ducked music stops there too (research/04, "the apad pitfall").
    """
    if seconds <= 0:
        raise ValueError("a mix lasts more than 0 seconds")
    total = f"{seconds:.6f}"
    voice = f"aresample={AUDIO_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo,apad=whole_dur={total}"
    args = ["-i", str(narration)]
    if music is None:
        graph = f"[0:a]{voice},atrim=0:{total},loudnorm={LOUDNESS},{OUT_FORMAT}[out]"
    else:
        fade = min(1.5, seconds / 4)
        args += ["-i", str(music)]
        graph = ";".join(
            [
                f"[0:a]{voice},asplit=2[voice][key]",
                f"[1:a]aresample={AUDIO_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo,"
                f"apad=whole_dur={total},atrim=0:{total},volume=0.5,"
                f"afade=t=out:st={seconds - fade:.6f}:d={fade:.6f}[bed]",
                "[bed][key]sidechaincompress=threshold=0.03:ratio=8:attack=20:release=400[ducked]",
                f"[voice][ducked]amix=inputs=2:duration=longest:normalize=0,atrim=0:{total},"
                f"loudnorm={LOUDNESS},{OUT_FORMAT}[out]",
            ]
        )
    with _atomic(out) as partial:
        args += ["-filter_complex", graph, "-map", "[out]", "-t", total, "-c:a", "aac", "-b:a", AUDIO_BITRATE]
        args += ["-ar", str(AUDIO_RATE), "-f", "mp4", str(partial)]
        run(ff, args, should_stop=should_stop)


def mux(
    ff: FFmpeg,
    video: Path,
    audio: Path,
    out: Path,
    *,
    subtitles: Path | None = None,
    language: str = "eng",
) -> None:
    """The film: video and audio copied, the SRT as a soft mov_text track, the index first (+faststart)."""
    args = ["-i", str(video), "-i", str(audio)]
    maps = ["-map", "0:v:0", "-map", "1:a:0"]
    codecs = ["-c:v", "copy", "-c:a", "copy"]
    if subtitles is not None:
        args += ["-f", "srt", "-i", str(subtitles)]
        maps += ["-map", "2:s:0"]
        codecs += ["-c:s", "mov_text", "-metadata:s:s:0", f"language={language}"]
    with _atomic(out) as partial:
        run(ff, [*args, *maps, *codecs, "-movflags", "+faststart", "-f", "mp4", str(partial)])


def thumbnail(ff: FFmpeg, video: Path, out: Path, *, at: float = 3.0) -> None:
    """A JPEG of the frame at ``at`` seconds (the middle of a film shorter than that), at the frame's size."""
    info = probe(ff, video)
    moment = at if info.duration <= 0 or at < info.duration else info.duration / 2
    args = ["-ss", f"{moment:.3f}", "-i", str(video), "-frames:v", "1", "-q:v", "3", "-update", "1"]
    with _atomic(out) as partial:
        run(ff, [*args, "-f", "image2", "-c:v", "mjpeg", str(partial)])


def quality_check(ff: FFmpeg, path: Path, *, seconds: float, frame: Frame, tolerance: float = 0.5) -> Probe:
    """The rendered film as promised: video and audio present, ``seconds`` long (± tolerance), the frame's size."""
    try:
        info = probe(ff, path)
    except EngineError as exc:
        raise EngineError(f"the film cannot be read back: {exc}", code="quality_check_failed") from exc
    problems = []
    if not info.has_video:
        problems.append("it has no video stream")
    if not info.has_audio:
        problems.append("it has no audio stream")
    if abs(info.duration - seconds) > tolerance:
        problems.append(f"it lasts {info.duration:.2f} s instead of {seconds:.2f} s (± {tolerance} s)")
    if info.has_video and (info.width, info.height) != (frame.width, frame.height):
        problems.append(f"it is {info.width}x{info.height} instead of {frame.width}x{frame.height}")
    if problems:
        raise EngineError(f"quality check failed: {'; '.join(problems)}", code="quality_check_failed")
    return info
