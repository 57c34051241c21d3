"""Workers load the default model in the background as they start (issue 20), so the first job does not wait."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studiolo.domain.generation.served import ServedModels
from studiolo.services import Services, build_services
from tests.tiny_pipeline import make_tiny_sd_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture
def make(settings_factory: Any, tiny_sd: Path) -> Iterator[Any]:
    made: list[Services] = []

    def build(default: bool = True, **overrides: Any) -> Services:
        services = build_services(settings_factory(**overrides))
        made.append(services)
        services.catalog.import_path(tiny_sd, model_id="tiny-sd", copy=False, default=default)
        return services

    yield build
    for services in made:
        services.close()


def _diffusers_loaded(services: Services) -> bool:
    return services.engines["diffusers"].is_loaded("tiny-sd")


def test_starting_workers_loads_the_default_diffusers_model_in_the_background(make: Any) -> None:
    services = make()
    assert not _diffusers_loaded(services)
    services.start_workers(1)
    deadline = time.monotonic() + 120  # a hang guard, not a timing assertion
    while not _diffusers_loaded(services) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _diffusers_loaded(services)


def test_no_preload_when_switched_off(make: Any) -> None:
    services = make(preload_default_model=False)
    services.start_workers(1)
    time.sleep(0.5)
    assert not _diffusers_loaded(services)


def test_no_preload_of_a_default_that_is_not_a_local_diffusers_model(make: Any) -> None:
    services = make(default=False)  # the test settings' default model is the echo engine's
    assert services.preload_default_model() is False


def test_no_preload_of_a_default_this_process_does_not_serve(make: Any) -> None:
    services = make()
    assert services.preload_default_model(ServedModels(services.catalog, ["echo"])) is False
    assert not _diffusers_loaded(services)
    assert services.preload_default_model() is True and _diffusers_loaded(services)


def test_a_default_model_that_fails_to_load_is_only_logged(make: Any, tmp_path: Path, caplog: Any) -> None:
    broken = make_tiny_sd_pipeline(tmp_path / "broken")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    services = make(default=False)
    services.catalog.import_path(broken, model_id="broken", copy=False, default=True)
    assert services.preload_default_model() is False
    assert "preloading default model broken failed" in caplog.text
