"""An imported Stable Video Diffusion folder (`studiolo models import`; a tiny random one, tests/tiny_svd.py) is an
image-to-video model: arch "svd", listed by ``motion_models``, never the default, refused for drawing and left out of
the generator's model list, like an upscaler; and the film studio's motion engine runs it from the catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from studiolo.engines.demo.engine import DEMO_MODEL_ID
from studiolo.engines.image_to_video import MotionModel, SVDImageToVideo, motion_models
from studiolo.errors import Conflict
from studiolo.services import Services
from tests.helpers import app_with
from tests.tiny_svd import make_tiny_svd_pipeline

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def svd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_svd_pipeline(tmp_path_factory.mktemp("svd") / "tiny-svd")


def test_an_imported_svd_model_animates_and_draws_nothing(
    client: TestClient, services: Services, svd_folder: Path
) -> None:
    default = services.catalog.default_model_id()
    assert motion_models(services.catalog) == []
    info = services.catalog.import_path(svd_folder, model_id="tiny-svd")
    assert info.arch == "svd" and not info.is_default
    assert services.catalog.default_model_id() == default

    (model,) = motion_models(services.catalog)
    assert model == MotionModel(id="tiny-svd", name="tiny-svd", path=services.settings.models_dir / "tiny-svd")
    frames = SVDImageToVideo(device="cpu", steps=2, threads=1).frames(
        model, Image.new("RGB", (64, 36), (30, 120, 200)), width=32, height=18, count=5, fps=30, seed=3
    )
    assert [f.size for f in frames] == [(32, 18)] * 5

    listed = {m["id"]: m for m in client.get("/api/v1/models").json()["items"]}
    caps = listed["tiny-svd"]["capabilities"]
    assert listed["tiny-svd"]["arch"] == "svd" and not (caps["txt2img"] or caps["img2img"] or caps["inpaint"])
    r = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "model": "tiny-svd"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unsupported_task"
    assert client.get("/api/v1/upscalers").json()["items"][1:] == []  # not an upscaler either
    page = client.get("/generate")
    assert page.status_code == 200 and 'value="tiny-svd"' not in page.text

    with pytest.raises(Conflict) as refused:
        services.catalog.set_default("tiny-svd")
    assert refused.value.code == "model_is_motion"


def test_an_svd_model_cannot_be_imported_as_the_default(
    settings_factory: Any, svd_folder: Path, tmp_path: Path
) -> None:
    with app_with(settings_factory, default_model="not/installed") as (services, _api):
        with pytest.raises(Conflict) as refused:
            services.catalog.import_path(svd_folder, model_id="tiny-svd", default=True)
        assert refused.value.code == "model_is_motion"
        assert not (services.settings.models_dir / "tiny-svd").exists()
        services.catalog.import_path(svd_folder, model_id="tiny-svd", copy=False)
        assert services.catalog.default_model_id() == DEMO_MODEL_ID  # a fresh install still draws with the demo
        assert [m.id for m in motion_models(services.catalog)] == ["tiny-svd"]
