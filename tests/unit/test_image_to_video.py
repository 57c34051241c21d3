"""Image-to-video (engines/image_to_video.py): a tiny random Stable Video Diffusion pipeline (tests/tiny_svd.py)
saved with save_pretrained, recognised by Studiolo's model inspection as arch "svd", and loaded and run through
SVDImageToVideo on the CPU; plus the frame timing and geometry it is built on."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studiolo.engines.base import EngineError, GenerationCanceled, ModelLoadError, ModelRef
from studiolo.engines.diffusers_engine import DiffusersEngine
from studiolo.engines.image_to_video import (
    ImageToVideo,
    MotionModel,
    SVDImageToVideo,
    conditioning_fps,
    fit_frame,
    model_size,
    time_stretch,
)
from studiolo.engines.model_files import inspect_model_path, pipeline_tasks
from tests.tiny_pipeline import make_tiny_sd_pipeline
from tests.tiny_svd import TINY_SVD_FRAMES, make_tiny_svd_pipeline

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def svd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_svd_pipeline(tmp_path_factory.mktemp("svd") / "tiny-svd")


@pytest.fixture(scope="module")
def engine() -> SVDImageToVideo:
    return SVDImageToVideo(device="cpu", steps=2, threads=1)


def _picture(width: int = 48, height: int = 32) -> Image.Image:
    rng = np.random.default_rng(5)
    blocks = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((width, height), Image.Resampling.NEAREST)


def _arrays(frames: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(f) for f in frames])


# --- pure parts ---------------------------------------------------------------------------------------------------


def test_time_stretch_cross_blends_neighbouring_frames() -> None:
    black = Image.new("RGB", (4, 2), (0, 0, 0))
    white = Image.new("RGB", (4, 2), (255, 255, 255))
    grey = Image.new("RGB", (4, 2), (100, 100, 100))
    out = time_stretch([black, white], 5)
    assert [int(np.asarray(f)[0, 0, 0]) for f in out] == [0, 63, 127, 191, 255]
    out = time_stretch([black, grey, white], 5)  # positions 0, 0.5, 1, 1.5, 2
    assert [int(np.asarray(f)[0, 0, 0]) for f in out] == [0, 50, 100, 177, 255]
    # Fewer frames than generated: spread over the whole clip, first and last kept.
    picked = time_stretch([black, grey, white], 2)
    assert [int(np.asarray(f)[0, 0, 0]) for f in picked] == [0, 255]
    assert [int(np.asarray(f)[0, 0, 0]) for f in time_stretch([black, white], 1)] == [0]
    with pytest.raises(ValueError):
        time_stretch([], 3)


def test_model_size_keeps_the_area_and_the_films_aspect() -> None:
    assert model_size(768, 64, 1280, 720) == (1024, 576)  # SVD's own size for a 16:9 film
    assert model_size(768, 64, 720, 1280) == (576, 1024)
    assert model_size(768, 64, 1080, 1080) == (768, 768)
    assert model_size(32, 4, 40, 24) == (40, 24)


def test_fit_frame_crops_to_the_aspect_and_never_stretches() -> None:
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 50, 100))  # a blue band on the left quarter, cropped off for a square
    square = fit_frame(wide, 50, 50)
    assert square.size == (50, 50) and square.mode == "RGB"
    assert np.asarray(square)[:, :, 2].max() < 40  # no blue left: cropped, not squeezed


def test_conditioning_fps_is_the_rate_the_generated_frames_are_shown_at() -> None:
    assert conditioning_fps(14, 60, 30) == 7  # 14 frames over 2 s
    assert conditioning_fps(14, 180, 30) == 3  # 6 s would be 2.3 fps: SVD's lowest kept
    assert conditioning_fps(25, 15, 30) == 30


# --- the model through Studiolo's inspection and loader ------------------------------------------------------------


def test_an_svd_folder_is_arch_svd_and_draws_nothing(svd_folder: Path) -> None:
    info = inspect_model_path(svd_folder)
    assert (info.format, info.arch, info.pipeline_class) == ("folder", "svd", "StableVideoDiffusionPipeline")
    assert pipeline_tasks(info.pipeline_class) == (False, False, False)
    # The image engine agrees, before and after loading it: nothing to draw with.
    engine = DiffusersEngine(device="cpu")
    ref = ModelRef(id="tiny-svd", engine="diffusers", source="folder", path=svd_folder, arch="svd")
    before = engine.capabilities(ref)
    engine.load(ref)
    assert engine.capabilities(ref) == before
    assert not any(before.supports(kind) for kind in ("txt2img", "img2img", "inpaint", "upscale"))


def test_svd_makes_count_frames_of_the_asked_size_deterministic_per_seed(
    svd_folder: Path, engine: SVDImageToVideo
) -> None:
    assert isinstance(engine, ImageToVideo)
    model = MotionModel(id="tiny-svd", name="tiny-svd", path=svd_folder)
    image = _picture()
    first = engine.frames(model, image, width=40, height=24, count=9, fps=30, seed=7)
    assert engine.is_loaded("tiny-svd")
    assert len(first) == 9 and all(f.size == (40, 24) and f.mode == "RGB" for f in first)
    again = engine.frames(model, image, width=40, height=24, count=9, fps=30, seed=7)
    assert np.array_equal(_arrays(first), _arrays(again))
    other = engine.frames(model, image, width=40, height=24, count=9, fps=30, seed=8)
    assert not np.array_equal(_arrays(first), _arrays(other))
    # The frames move: 9 frames stretched from the model's 4, the blends lie between the generated frames.
    stack = _arrays(first).astype(np.int16)
    assert TINY_SVD_FRAMES < 9 and np.abs(np.diff(stack, axis=0)).max() > 0
    assert not np.array_equal(stack[0], stack[-1])
    # Another count and size from the same pipeline: exactly as asked.
    tall = engine.frames(model, image, width=24, height=40, count=3, fps=12, seed=7)
    assert [f.size for f in tall] == [(24, 40)] * 3


def test_svd_stops_between_denoising_steps_when_canceled(svd_folder: Path) -> None:
    engine = SVDImageToVideo(device="cpu", steps=3, threads=1)
    model = MotionModel(id="tiny-svd", name="tiny-svd", path=svd_folder)
    asked: list[int] = []

    def stop_after_first_step() -> bool:
        asked.append(1)
        return len(asked) > 2  # the check before starting, the end of step 1, then the end of step 2: stop

    with pytest.raises(GenerationCanceled):
        engine.frames(
            model, _picture(), width=32, height=32, count=4, fps=30, seed=1, should_stop=stop_after_first_step
        )
    assert len(asked) == 3  # stopped at the second step, not after the third
    with pytest.raises(GenerationCanceled):
        engine.frames(model, _picture(), width=32, height=32, count=4, fps=30, seed=1, should_stop=lambda: True)
    # Canceling leaves the model usable.
    frames = engine.frames(model, _picture(), width=32, height=32, count=4, fps=30, seed=1)
    assert len(frames) == 4


def test_svd_refuses_a_model_that_is_not_image_to_video(tmp_path: Path, engine: SVDImageToVideo) -> None:
    sd = make_tiny_sd_pipeline(tmp_path / "sd")
    with pytest.raises(ModelLoadError, match="not an image-to-video model"):
        engine.frames(MotionModel("sd", "sd", sd), _picture(), width=32, height=32, count=2, fps=30, seed=1)
    with pytest.raises(ModelLoadError):
        engine.frames(
            MotionModel("gone", "gone", tmp_path / "gone"), _picture(), width=32, height=32, count=2, fps=30, seed=1
        )
    with pytest.raises(EngineError) as bad:
        engine.frames(MotionModel("sd", "sd", sd), _picture(), width=32, height=32, count=0, fps=30, seed=1)
    assert bad.value.code == "invalid_request"


def test_svd_serves_threads_at_once_with_one_loaded_pipeline(svd_folder: Path) -> None:
    engine = SVDImageToVideo(device="cpu", steps=2, threads=1)
    model = MotionModel(id="tiny-svd", name="tiny-svd", path=svd_folder)

    def run(seed: int) -> np.ndarray:
        return _arrays(engine.frames(model, _picture(), width=32, height=32, count=6, fps=30, seed=seed))

    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(run, (1, 2))  # re-raises a thread's exception here
    assert np.array_equal(first, run(1)) and not np.array_equal(first, second)
    assert engine.is_loaded("tiny-svd") and engine.unload("tiny-svd") and not engine.is_loaded("tiny-svd")
