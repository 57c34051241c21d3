"""Film media: the ffmpeg engine (finding, running, probing, WAV) and render.py (clips, concat, mix, mux, checks).

Everything runs the real ffmpeg on tiny frames (320x180, shots of 1.5-2 s): the bundled imageio-ffmpeg build, and
the system's where one is installed (Debian's 5.1 next to the wheel's 9.x: the filters must work on both).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import psutil
import pytest
from PIL import Image, ImageOps

from studiolo.domain.film.render import (
    Frame,
    Shot,
    ass_document,
    concat,
    frame_for,
    frames,
    mix,
    motion_filter,
    mux,
    plan_clips,
    quality_check,
    render_clip,
    thumbnail,
)
from studiolo.domain.film.subtitles import Cue, parse_srt, to_srt
from studiolo.engines.base import EngineError, GenerationCanceled
from studiolo.engines.ffmpeg import (
    FFmpeg,
    find_ffmpeg,
    major_version,
    probe,
    read_wav,
    run,
    run_output,
    write_wav,
)

FRAME = Frame(320, 180, 30)
SECONDS = (1.5, 2.0, 1.7)


def _binaries() -> list[FFmpeg]:
    bundled = imageio_ffmpeg.get_ffmpeg_exe()
    found = [FFmpeg(bundled, shutil.which("ffprobe"), "bundled")]
    system = shutil.which("ffmpeg")
    if system and os.path.realpath(system) != os.path.realpath(bundled):
        found.append(FFmpeg(system, shutil.which("ffprobe"), "system"))
    return found


BINARIES = _binaries()


@pytest.fixture(scope="module", params=BINARIES, ids=[b.version for b in BINARIES])
def ff(request: pytest.FixtureRequest) -> FFmpeg:
    binary: FFmpeg = request.param
    return binary


@pytest.fixture(scope="module")
def bundled() -> FFmpeg:
    return BINARIES[0]


# --------------------------------------------------------------------------- images and helpers


def _pictures() -> list[np.ndarray]:
    """Three pictures told apart in grey at 16x16, whatever part of them a Ken Burns move shows."""
    y, x = np.mgrid[0:360, 0:640].astype(np.float32)
    left_right = x / 639 * 255
    top_bottom = y / 359 * 255
    centre = 255 - np.clip(np.hypot(x - 320, y - 180) / 200 * 255, 0, 255)
    colours = [(1.0, 0.4, 0.3), (0.3, 1.0, 0.4), (0.4, 0.3, 1.0)]
    return [
        np.stack([plane * c for c in colour], axis=-1).astype(np.uint8)
        for plane, colour in zip((left_right, top_bottom, centre), colours, strict=True)
    ]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for k, pixels in enumerate(_pictures()):
        path = folder / f"scene{k}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _shots(images: list[Path], *, cues: bool = False) -> list[Shot]:
    return [
        Shot(
            image=image,
            image_hash=f"hash-{k}",
            seconds=seconds,
            motion_seed=100 + k,
            cues=(Cue(0.1, seconds - 0.1, f"Scene {k} is speaking now"),) if cues else (),
        )
        for k, (image, seconds) in enumerate(zip(images, SECONDS, strict=True))
    ]


def _grey16(picture: Image.Image) -> np.ndarray:
    fitted = ImageOps.fit(picture.convert("RGB"), (FRAME.width, FRAME.height))
    return np.asarray(fitted.convert("L").resize((16, 16), Image.Resampling.BOX), dtype=np.float32)


def _grab(ff: FFmpeg, video: Path, at: float, out: Path) -> Image.Image:
    run(ff, ["-ss", f"{at:.3f}", "-i", str(video), "-frames:v", "1", "-update", "1", str(out)])
    with Image.open(out) as grabbed:
        return grabbed.convert("RGB")


def _count_decoded(ff: FFmpeg, video: Path) -> int:
    stderr = run_output(ff, ["-i", str(video), "-map", "0:v", "-vf", "showinfo", "-f", "null", "-"])
    return len(re.findall(r"\bn:\s*\d+", stderr))


def _rms_at(signal: np.ndarray, rate: int, start: float, end: float, hz: float) -> float:
    """Amplitude of the ``hz`` component between ``start`` and ``end`` seconds (a single-bin DFT)."""
    piece = signal[int(start * rate) : int(end * rate)]
    t = np.arange(len(piece)) / rate
    return float(2 * np.abs(np.sum(piece * np.exp(-2j * np.pi * hz * t))) / len(piece))


def _integrated_loudness(ff: FFmpeg, audio: Path) -> float:
    stderr = run_output(ff, ["-i", str(audio), "-af", "ebur128", "-f", "null", "-"])
    summary = stderr[stderr.rindex("Summary:") :]
    return float(re.search(r"I:\s*(-?[\d.]+) LUFS", summary).group(1))  # type: ignore[union-attr]


# --------------------------------------------------------------------------- finding and running ffmpeg


def test_find_ffmpeg_prefers_the_newer_major_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = find_ffmpeg()
    assert found is not None
    bundled_major = major_version(imageio_ffmpeg.get_ffmpeg_version())
    system = shutil.which("ffmpeg")
    if system is not None:
        printed = subprocess.run([system, "-version"], capture_output=True, text=True, check=True).stdout
        system_major = major_version(printed.split("version ", 1)[1].split()[0])
        chosen_system = system_major is not None and bundled_major is not None and system_major >= bundled_major
        assert found.ffmpeg == (system if chosen_system else imageio_ffmpeg.get_ffmpeg_exe())
    else:
        assert found.ffmpeg == imageio_ffmpeg.get_ffmpeg_exe()

    # a (pretend) system ffmpeg newer than the wheel's wins; an older one does not
    def fake(version: str) -> Path:
        folder = tmp_path / version
        folder.mkdir()
        script = folder / "ffmpeg"
        script.write_text(f"#!/bin/sh\necho 'ffmpeg version {version} Copyright (c) the FFmpeg developers'\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        return folder

    monkeypatch.setenv("PATH", str(fake("99.1.0")))
    newer = find_ffmpeg()
    assert newer is not None
    assert newer.ffmpeg == str(tmp_path / "99.1.0" / "ffmpeg")
    assert newer.version == "99.1.0"
    assert newer.ffprobe is None
    monkeypatch.setenv("PATH", str(fake("1.0.0")))
    older = find_ffmpeg()
    assert older is not None
    assert older.ffmpeg == imageio_ffmpeg.get_ffmpeg_exe()


def test_find_ffmpeg_uses_only_the_configured_binary(tmp_path: Path) -> None:
    configured = find_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())
    assert configured is not None
    assert configured.ffmpeg == imageio_ffmpeg.get_ffmpeg_exe()
    assert major_version(configured.version) == major_version(imageio_ffmpeg.get_ffmpeg_version())
    assert find_ffmpeg(str(tmp_path / "no-such-ffmpeg")) is None
    if shutil.which("ffmpeg"):  # a bare name is looked up on PATH
        by_name = find_ffmpeg("ffmpeg")
        assert by_name is not None and by_name.ffmpeg == shutil.which("ffmpeg")


def test_major_version() -> None:
    assert major_version("5.1.9-0+deb12u1") == 5
    assert major_version("n9.0.2-17-g2a571b6068-20260930") == 9
    assert major_version("N-112345-gdeadbeef") is None


def test_run_failure_is_an_engine_error_with_the_end_of_stderr(bundled: FFmpeg, tmp_path: Path) -> None:
    with pytest.raises(EngineError) as caught:
        run(bundled, ["-i", str(tmp_path / "missing.mp4"), str(tmp_path / "out.mp4")])
    assert caught.value.code == "ffmpeg_failed"
    assert caught.value.retryable is True
    assert "missing.mp4" in str(caught.value)


def test_run_cancel_kills_ffmpeg(bundled: FFmpeg, tmp_path: Path) -> None:
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    # -re: real time, so this would take a minute if it were not killed
    args = ["-re", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "60", "-f", "null", "-"]
    with pytest.raises(GenerationCanceled):
        run(bundled, args, should_stop=stop.is_set)
    assert time.monotonic() - started < 30
    assert not _live_children()


def test_wav_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    mono = rng.uniform(-1, 1, 4800).astype(np.float32)
    stereo = rng.uniform(-1, 1, (4800, 2)).astype(np.float32)
    write_wav(tmp_path / "mono.wav", mono, 24000)
    write_wav(tmp_path / "stereo.wav", stereo, 48000)
    back, rate = read_wav(tmp_path / "mono.wav")
    assert rate == 24000 and back.shape == (4800,) and back.dtype == np.float32
    assert np.abs(back - mono).max() < 1e-4
    back, rate = read_wav(tmp_path / "stereo.wav")
    assert rate == 48000 and back.shape == (4800, 2)
    assert np.abs(back - stereo).max() < 1e-4
    write_wav(tmp_path / "loud.wav", np.array([2.0, -3.0, np.nan], dtype=np.float32), 8000)
    assert read_wav(tmp_path / "loud.wav")[0].tolist() == pytest.approx([32767 / 32768, -32767 / 32768, 0.0])


def test_read_wav_reads_what_ffmpeg_writes_in_other_widths(bundled: FFmpeg, tmp_path: Path) -> None:
    for codec in ("pcm_u8", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f64le"):
        out = tmp_path / f"{codec}.wav"
        run(
            bundled, ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=0.5", "-c:a", codec, str(out)]
        )
        samples, rate = read_wav(out)
        assert rate == 16000 and samples.shape == (8000,)
        assert 0.05 < float(np.abs(samples).max()) <= 1.0
        assert _rms_at(samples, rate, 0.0, 0.5, 440) > 0.05


# --------------------------------------------------------------------------- planning and keys


def test_frame_for() -> None:
    assert frame_for("16:9", "720p") == Frame(1280, 720)
    assert frame_for("9:16", "720p") == Frame(720, 1280)
    assert frame_for("1:1", "720p") == Frame(720, 720)
    assert frame_for("16:9", "1080p") == Frame(1920, 1080)
    assert frame_for("9:16", "1080p") == Frame(1080, 1920)
    assert frame_for("1:1", "1080p") == Frame(1080, 1080)
    with pytest.raises(ValueError):
        frame_for("4:3", "720p")
    with pytest.raises(ValueError):
        frame_for("16:9", "480p")


def test_plan_clips_chains_crossfades(images: list[Path]) -> None:
    shots = [*_shots(images), replace(_shots(images)[0], seconds=0.4)]
    specs = plan_clips(shots, FRAME, crossfade=0.5)
    assert [s.index for s in specs] == [0, 1, 2, 3]
    assert [s.next_shot for s in specs] == [*shots[1:], None]
    # a crossfade is at most half of either slot it joins: 0.4 s -> 6 frames
    assert [s.crossfade for s in specs] == [0.5, 0.5, 0.2, 0.0]
    assert [s.previous_crossfade for s in specs] == [0.0, 0.5, 0.5, 0.2]
    with pytest.raises(ValueError):
        plan_clips([], FRAME)
    with pytest.raises(ValueError, match="less than one frame"):
        plan_clips([replace(shots[0], seconds=0.01)], FRAME)


@pytest.mark.parametrize("changed", [0, 1, 2, 3])
def test_clip_keys_change_only_for_the_clips_that_show_an_edited_shot(images: list[Path], changed: int) -> None:
    shots = [*_shots(images), replace(_shots(images)[0], image_hash="hash-3", motion_seed=7)]
    before = [s.key() for s in plan_clips(shots, FRAME)]
    edited = list(shots)
    edited[changed] = replace(shots[changed], image_hash="a new image")
    after = [s.key() for s in plan_clips(edited, FRAME)]
    differ = {k for k in range(len(shots)) if before[k] != after[k]}
    assert differ == {k for k in (changed - 1, changed) if k >= 0}
    assert len(set(before)) == len(before)


def test_clip_key_ignores_the_index_and_unburned_cues(images: list[Path]) -> None:
    shots = _shots(images)
    spec = plan_clips(shots, FRAME)[1]
    assert replace(spec, index=7).key() == spec.key()
    with_cues = replace(spec, shot=_shots(images, cues=True)[1])
    assert with_cues.key() == spec.key()
    assert replace(with_cues, burn=True).key() != replace(spec, burn=True).key()
    assert replace(spec, frame=Frame(640, 360)).key() != spec.key()


def test_ass_document_keeps_cues_inside_the_slot_and_text_inert() -> None:
    document = ass_document(
        [Cue(-1.0, 0.5, "a {\\b1} b\\Nc"), Cue(0.5, 9.0, "two\nlines"), Cue(5.0, 6.0, "after the slot")],
        FRAME,
        seconds=2.0,
    )
    dialogue = [line for line in document.splitlines() if line.startswith("Dialogue:")]
    assert dialogue == [
        "Dialogue: 0,0:00:00.00,0:00:00.50,Default,,0,0,0,,a (/b1) b/Nc",
        "Dialogue: 0,0:00:00.50,0:00:02.00,Default,,0,0,0,,two\\Nlines",
    ]
    assert "PlayResX: 320" in document and "DejaVu Sans" in document


def test_images_are_cropped_to_the_frame_never_stretched(tmp_path: Path) -> None:
    from studiolo.domain.film.render import PRESCALE, _prescaled

    y, x = np.mgrid[0:300, 0:300]
    disc = ((np.hypot(x - 150, y - 150) < 60) * 255).astype(np.uint8)
    square = tmp_path / "disc.png"
    Image.fromarray(disc).save(square)
    for frame in (FRAME, Frame(180, 320)):
        raw = _prescaled(square, frame, tmp_path / "disc.rgb")
        pixels = np.fromfile(raw, dtype=np.uint8).reshape(frame.height * PRESCALE, frame.width * PRESCALE, 3)
        lit = pixels[..., 0] > 127
        rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
        # the disc stays round: as wide as it is high (a stretch would make an ellipse)
        assert abs((rows[-1] - rows[0]) - (cols[-1] - cols[0])) <= 2
    transparent = Image.new("RGBA", (64, 64), (255, 255, 255, 0))
    transparent.save(tmp_path / "clear.png")
    raw = _prescaled(tmp_path / "clear.png", FRAME, tmp_path / "clear.rgb")
    assert np.fromfile(raw, dtype=np.uint8).max() == 0  # transparency over black


# --------------------------------------------------------------------------- motion


def _raw_motion(
    ff: FFmpeg, image: Path, total: int, offset: int, count: int, out: Path, *, seed: int = 5
) -> np.ndarray:
    """Frames ``offset .. offset+count-1`` of a move, straight from the filter (no encoder in between)."""
    from studiolo.domain.film.render import _prescaled, _raw_input

    raw = _prescaled(image, FRAME, out.with_suffix(".rgb"))
    graph = f"[0:v]format=yuv420p,{motion_filter(seed, total, offset, count, FRAME)},format=rgb24[out]"
    run(ff, [*_raw_input(raw, FRAME), "-filter_complex", graph, "-map", "[out]", "-f", "rawvideo", str(out)])
    return np.fromfile(out, dtype=np.uint8).reshape(-1, FRAME.height, FRAME.width, 3).astype(np.float32)


def test_motion_frames_are_the_same_in_both_clips(ff: FFmpeg, images: list[Path], tmp_path: Path) -> None:
    """Frame i of a shot's move is the same drawn from its start (in the previous clip's crossfade) or from i."""
    whole = _raw_motion(ff, images[0], 40, 0, 40, tmp_path / "whole.raw")
    head = _raw_motion(ff, images[0], 40, 0, 15, tmp_path / "head.raw")
    tail = _raw_motion(ff, images[0], 40, 15, 25, tmp_path / "tail.raw")
    assert whole.shape[0] == 40 and head.shape[0] == 15 and tail.shape[0] == 25
    assert np.array_equal(np.concatenate([head, tail]), whole)
    # and it moves
    assert np.abs(whole[0] - whole[-1]).mean() > 2


# --------------------------------------------------------------------------- clips and film


@pytest.fixture(scope="module")
def film(ff: FFmpeg, images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    folder = tmp_path_factory.mktemp(f"film-{ff.version}")
    clips = []
    for spec in plan_clips(_shots(images), FRAME, crossfade=0.5):
        out = folder / f"clip{spec.index}.mp4"
        render_clip(ff, spec, out)
        clips.append(out)
    movie = folder / "film.mp4"
    concat(ff, clips, movie)
    return clips, movie


def test_clips_have_their_slot_length(ff: FFmpeg, film: tuple[list[Path], Path]) -> None:
    clips, _ = film
    for clip, seconds in zip(clips, SECONDS, strict=True):
        info = probe(ff, clip)
        assert info.has_video and not info.has_audio
        assert (info.width, info.height, info.video_codec) == (320, 180, "h264")
        assert info.fps == pytest.approx(30)
        assert info.duration == pytest.approx(seconds, abs=1 / 30 + 1e-6)
        assert _count_decoded(ff, clip) == frames(seconds, 30)


def test_concat_lasts_the_sum_of_the_slots(ff: FFmpeg, film: tuple[list[Path], Path]) -> None:
    _, movie = film
    info = probe(ff, movie)
    assert info.duration == pytest.approx(sum(SECONDS), abs=1 / 30 + 1e-6)
    assert _count_decoded(ff, movie) == sum(frames(s, 30) for s in SECONDS)


def test_each_slot_shows_its_own_image(
    ff: FFmpeg, film: tuple[list[Path], Path], images: list[Path], tmp_path: Path
) -> None:
    _, movie = film
    references = []
    for image in images:
        with Image.open(image) as opened:
            references.append(_grey16(opened))
    start = 0.0
    for k, seconds in enumerate(SECONDS):
        grabbed = _grey16(_grab(ff, movie, start + seconds / 2, tmp_path / f"mid{k}.png"))
        distances = [float(np.abs(grabbed - reference).mean()) for reference in references]
        assert int(np.argmin(distances)) == k, distances
        start += seconds


def _frame_number(ff: FFmpeg, video: Path, n: int, out: Path) -> np.ndarray:
    run(ff, ["-i", str(video), "-vf", f"select=eq(n\\,{n})", "-frames:v", "1", "-update", "1", str(out)])
    with Image.open(out) as grabbed:
        return np.asarray(grabbed.convert("RGB"), dtype=np.float32)


def test_crossfade_is_continuous_across_clips(ff: FFmpeg, film: tuple[list[Path], Path], tmp_path: Path) -> None:
    """The last frame of clip k is almost all shot k+1, and clip k+1's first frame continues it."""
    clips, _ = film
    for k in range(len(clips) - 1):
        last = _frame_number(ff, clips[k], frames(SECONDS[k], 30) - 1, tmp_path / f"last{k}.png")
        first = _frame_number(ff, clips[k + 1], 0, tmp_path / f"first{k}.png")
        own = _frame_number(ff, clips[k], 0, tmp_path / f"own{k}.png")
        assert np.abs(last - first).mean() < 0.2 * np.abs(own - first).mean()


def test_crossfade_shows_the_next_moves_first_frames_and_the_next_clip_goes_on(ff: FFmpeg, tmp_path: Path) -> None:
    """Clip k's last frame blends frame C-1 of shot k+1's move, clip k+1 starts at frame C: no frame skipped or
    shown twice. Odd timings (31 and 47 frames, an 11-frame crossfade) so that no offset is a round number."""
    grids = []
    for k, colour in enumerate(((220, 60, 40), (40, 200, 90))):
        pixels = np.zeros((360, 640, 3), dtype=np.uint8) + np.array(colour, dtype=np.uint8)
        pixels[:: 14 + 4 * k] = 255  # fine lines: one frame of motion changes many pixels
        pixels[:, :: 18 + 4 * k] = 0
        Image.fromarray(pixels).save(tmp_path / f"grid{k}.png")
        grids.append(tmp_path / f"grid{k}.png")
    shots = [Shot(grids[0], "g0", 31 / 30, 0), Shot(grids[1], "g1", 47 / 30, 1)]
    first_clip, second_clip = plan_clips(shots, FRAME, crossfade=0.37)
    fade = first_clip.fade_frames
    assert (fade, second_clip.offset_frames) == (11, 11)
    render_clip(ff, first_clip, tmp_path / "c0.mp4")
    render_clip(ff, second_clip, tmp_path / "c1.mp4")
    assert _count_decoded(ff, tmp_path / "c0.mp4") == 31
    assert _count_decoded(ff, tmp_path / "c1.mp4") == 47
    own = _raw_motion(ff, grids[0], 31, 0, 31, tmp_path / "own.raw", seed=0)
    following = _raw_motion(ff, grids[1], fade + 47, 0, fade + 2, tmp_path / "next.raw", seed=1)
    last = _frame_number(ff, tmp_path / "c0.mp4", 30, tmp_path / "last.png")
    first = _frame_number(ff, tmp_path / "c1.mp4", 0, tmp_path / "first.png")
    # xfade's last frame: 1/fade of the outgoing shot, the rest the incoming one
    blends = {j: own[30] / fade + following[j] * (fade - 1) / fade for j in (fade - 2, fade - 1, fade)}
    assert min(blends, key=lambda j: float(np.abs(last - blends[j]).mean())) == fade - 1
    assert min((fade - 1, fade, fade + 1), key=lambda j: float(np.abs(first - following[j]).mean())) == fade


def test_burned_subtitles_change_only_the_bottom_third(ff: FFmpeg, images: list[Path], tmp_path: Path) -> None:
    spec = plan_clips(_shots(images, cues=True), FRAME)[0]
    plain, burned = tmp_path / "plain.mp4", tmp_path / "burned.mp4"
    render_clip(ff, spec, plain)
    render_clip(ff, replace(spec, burn=True), burned)
    a = np.asarray(_grab(ff, plain, 0.7, tmp_path / "a.png"), dtype=np.float32)
    b = np.asarray(_grab(ff, burned, 0.7, tmp_path / "b.png"), dtype=np.float32)
    difference = np.abs(a - b).max(axis=-1)
    bottom, top = difference[120:], difference[:100]
    assert (bottom > 60).sum() > 300  # white letters with a dark outline
    assert (top > 60).sum() == 0


def test_render_clip_cancel_leaves_no_file(bundled: FFmpeg, images: list[Path], tmp_path: Path) -> None:
    spec = plan_clips(_shots(images), frame_for("16:9", "1080p"))[1]
    out = tmp_path / "clip.mp4"
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(GenerationCanceled):
        render_clip(bundled, spec, out, should_stop=stop)
    assert len(calls) >= 3  # asked before starting, then while ffmpeg ran
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(GenerationCanceled):
        render_clip(bundled, spec, out, should_stop=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_render_clip_refuses_an_unreadable_image(bundled: FFmpeg, images: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    spec = plan_clips([replace(_shots(images)[0], image=broken)], FRAME)[0]
    with pytest.raises(EngineError) as caught:
        render_clip(bundled, spec, tmp_path / "clip.mp4")
    assert caught.value.code == "invalid_image"
    assert not (tmp_path / "clip.mp4").exists()


# --------------------------------------------------------------------------- audio


MIX_SECONDS = 10.0
VOICE = (3.0, 6.0)  # the narration speaks between these times
VOICE_HZ, MUSIC_HZ = 660.0, 220.0


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tracks")
    rate = 24000
    t = np.arange(int(MIX_SECONDS * rate)) / rate
    voice = np.where((t >= VOICE[0]) & (t < VOICE[1]), 0.5 * np.sin(2 * np.pi * VOICE_HZ * t), 0.0)
    write_wav(folder / "narration.wav", voice.astype(np.float32), rate)
    rate = 48000
    t = np.arange(int(MIX_SECONDS * rate)) / rate
    bed = 0.3 * np.sin(2 * np.pi * MUSIC_HZ * t)
    write_wav(folder / "music.wav", np.stack([bed, bed], axis=1).astype(np.float32), rate)
    return folder / "narration.wav", folder / "music.wav"


def _decoded(ff: FFmpeg, audio: Path, out: Path) -> tuple[np.ndarray, int]:
    run(ff, ["-i", str(audio), "-ac", "1", "-c:a", "pcm_s16le", str(out)])
    return read_wav(out)


def test_mix_ducks_the_music_under_the_voice_at_minus_16_lufs(
    ff: FFmpeg, tracks: tuple[Path, Path], tmp_path: Path
) -> None:
    narration, music = tracks
    out = tmp_path / "mix.m4a"
    mix(ff, narration, music, MIX_SECONDS, out)
    info = probe(ff, out)
    assert info.has_audio and not info.has_video and info.audio_codec == "aac"
    assert info.duration == pytest.approx(MIX_SECONDS, abs=0.05)
    assert _integrated_loudness(ff, out) == pytest.approx(-16, abs=1.5)
    samples, rate = _decoded(ff, out, tmp_path / "mix.wav")
    assert rate == 48000
    before = _rms_at(samples, rate, 1.0, 2.5, MUSIC_HZ)
    under_voice = _rms_at(samples, rate, 4.0, 5.5, MUSIC_HZ)
    after = _rms_at(samples, rate, 7.0, 8.0, MUSIC_HZ)  # the voice is over: the music comes back (apad)
    assert under_voice < 0.5 * before
    assert after > 0.5 * before
    assert _rms_at(samples, rate, 4.0, 5.5, VOICE_HZ) > 2 * under_voice


def test_mix_without_music_is_the_normalised_voice(ff: FFmpeg, tracks: tuple[Path, Path], tmp_path: Path) -> None:
    narration, _ = tracks
    out = tmp_path / "voice.m4a"
    mix(ff, narration, None, MIX_SECONDS, out)
    assert probe(ff, out).duration == pytest.approx(MIX_SECONDS, abs=0.05)
    samples, rate = _decoded(ff, out, tmp_path / "voice.wav")
    assert _rms_at(samples, rate, 4.0, 5.5, VOICE_HZ) > 0.1
    assert np.abs(samples[: int(2.5 * rate)]).max() < 0.01


# --------------------------------------------------------------------------- the finished film


@pytest.fixture(scope="module")
def finished(
    ff: FFmpeg, film: tuple[list[Path], Path], tracks: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, list[Cue]]:
    folder = tmp_path_factory.mktemp(f"finished-{ff.version}")
    narration, music = tracks
    seconds = sum(SECONDS)
    # the narration track cut to the film's length (mix pads or cuts it anyway)
    audio = folder / "mix.m4a"
    mix(ff, narration, music, seconds, audio)
    cues = [Cue(0.2, 1.4, "First scene"), Cue(1.6, 3.4, "Second scene,\non two lines"), Cue(3.6, 5.1, "Third")]
    srt = folder / "film.srt"
    srt.write_text(to_srt(cues), encoding="utf-8")
    movie = folder / "film.mp4"
    mux(ff, film[1], audio, movie, subtitles=srt)
    silent = folder / "silent.mp4"
    shutil.copy(film[1], silent)
    return movie, silent, cues


def test_mux_makes_a_checked_film_with_soft_subtitles(
    ff: FFmpeg, finished: tuple[Path, Path, list[Cue]], tmp_path: Path
) -> None:
    movie, _, cues = finished
    info = quality_check(ff, movie, seconds=sum(SECONDS), frame=FRAME)
    assert info.has_video and info.has_audio and info.subtitle_streams == 1
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    # the index (moov) before the media data: playable while it downloads
    head = movie.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))
    extracted = tmp_path / "back.srt"
    run(ff, ["-i", str(movie), "-map", "0:s:0", str(extracted)])
    assert parse_srt(extracted.read_text(encoding="utf-8")) == cues
    stderr = run_output(ff, ["-i", str(movie)], check=False)
    assert re.search(r"Stream #0:2\S*\(eng\): Subtitle: mov_text", stderr)


def test_probe_without_ffprobe_parses_ffmpeg_i(ff: FFmpeg, finished: tuple[Path, Path, list[Cue]]) -> None:
    movie, silent, _ = finished
    parsed = probe(replace(ff, ffprobe=None), movie)
    assert parsed.duration == pytest.approx(sum(SECONDS), abs=0.05)
    assert (parsed.width, parsed.height, parsed.fps) == (320, 180, 30.0)
    assert (parsed.has_video, parsed.has_audio, parsed.subtitle_streams) == (True, True, 1)
    assert (parsed.video_codec, parsed.audio_codec) == ("h264", "aac")
    assert probe(replace(ff, ffprobe=None), silent).has_audio is False
    if ff.ffprobe is not None:  # where Debian's ffprobe is installed, both readings agree
        with_ffprobe = probe(ff, movie)
        assert parsed.duration == pytest.approx(with_ffprobe.duration, abs=0.02)
        assert replace(parsed, duration=0) == replace(with_ffprobe, duration=0)


def test_probe_refuses_what_is_not_media(ff: FFmpeg, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    for binary in (ff, replace(ff, ffprobe=None)):
        with pytest.raises(EngineError) as caught:
            probe(binary, junk)
        assert caught.value.code == "probe_failed"
        with pytest.raises(EngineError) as caught:
            probe(binary, tmp_path / "absent.mp4")
        assert caught.value.code == "probe_failed"


def test_quality_check_refuses_a_wrong_film(ff: FFmpeg, finished: tuple[Path, Path, list[Cue]], tmp_path: Path) -> None:
    movie, silent, _ = finished
    cases = [
        (movie, sum(SECONDS) + 2, FRAME, "lasts 5.20 s instead of 7.20 s"),
        (silent, sum(SECONDS), FRAME, "no audio stream"),
        (movie, sum(SECONDS), Frame(640, 360), "is 320x180 instead of 640x360"),
    ]
    for path, seconds, frame, message in cases:
        with pytest.raises(EngineError) as caught:
            quality_check(ff, path, seconds=seconds, frame=frame)
        assert caught.value.code == "quality_check_failed"
        assert caught.value.retryable is False
        assert message in str(caught.value)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"nothing")
    with pytest.raises(EngineError) as caught:
        quality_check(ff, junk, seconds=1, frame=FRAME)
    assert caught.value.code == "quality_check_failed"


def test_thumbnail(ff: FFmpeg, finished: tuple[Path, Path, list[Cue]], images: list[Path], tmp_path: Path) -> None:
    movie, _, _ = finished
    out = tmp_path / "thumb.jpg"
    thumbnail(ff, movie, out, at=3.0)  # 3.0 s is inside slot 1 (1.5 .. 3.5)
    with Image.open(out) as made:
        assert made.format == "JPEG" and made.size == (320, 180)
        grey = _grey16(made)
    distances = []
    for image in images:
        with Image.open(image) as opened:
            distances.append(float(np.abs(grey - _grey16(opened)).mean()))
    assert int(np.argmin(distances)) == 1
    thumbnail(ff, movie, out, at=60.0)  # past the end: the middle instead
    with Image.open(out) as made:
        assert made.size == (320, 180)


def test_outputs_are_complete_or_absent(bundled: FFmpeg, tmp_path: Path) -> None:
    """A failing step leaves neither the target nor its partial file behind (a cache key never names half a file)."""
    out = tmp_path / "film.mp4"
    with pytest.raises(EngineError):
        concat(bundled, [tmp_path / "missing.mp4"], out)
    assert list(tmp_path.iterdir()) == []


def _live_children() -> list[str]:
    """Command lines of this process's running children (ffmpeg is the only program these tests start)."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(" ".join(child.cmdline()))
        except psutil.NoSuchProcess:  # ended while we looked
            continue
    return alive


@pytest.fixture(autouse=True)
def _no_leftover_ffmpeg() -> Iterator[None]:
    yield
    assert not _live_children()
