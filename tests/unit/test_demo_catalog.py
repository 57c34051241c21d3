"""The catalog uses the built-in demo model only when nothing else can serve a request naming no model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from studiolo.domain.generation.catalog import ModelCatalog
from studiolo.domain.generation.models import InstalledModel
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.engines.base import Engine
from studiolo.engines.demo.engine import DEFAULT_GUIDANCE, DEMO_MODEL_ID, QUALITY_STEPS, DemoEngine
from studiolo.engines.echo import EchoEngine
from studiolo.engines.remote import remote_engines
from studiolo.errors import Conflict, ModelUnavailable, NotFound
from studiolo.services import Services, build_services
from tests.tiny_demo import make_tiny_demo_weights

Factory = Callable[..., Services]


@pytest.fixture(scope="module")
def demo_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_demo_weights(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def make_services(settings_factory: Any, demo_weights: Path) -> Iterator[Factory]:
    built: list[Services] = []

    def factory(*, weights: Path | None = None, echo: bool = False, **overrides: Any) -> Services:
        settings = settings_factory(
            enable_echo_engine=echo, default_model="echo" if echo else "stabilityai/sd-turbo", **overrides
        )
        engines: dict[str, Engine] = {"demo": DemoEngine(weights=weights or demo_weights)}
        if echo:
            engines["echo"] = EchoEngine()
        services = build_services(settings, engines=engines, upgrade_db=False)
        built.append(services)
        return services

    yield factory
    for services in built:
        services.close(timeout=5)


def _install(catalog: ModelCatalog, model_id: str, *, default: bool = False) -> None:
    with catalog.db.session() as session:
        session.add(
            InstalledModel(id=model_id, engine="diffusers", source="folder", path="/nowhere", is_default=default)
        )
    catalog._invalidate()


def test_fresh_install_defaults_to_the_demo_model(make_services: Factory) -> None:
    catalog = make_services().catalog
    assert catalog.default_model_id() == DEMO_MODEL_ID
    assert catalog.resolve(None).engine == "demo"
    (info,) = catalog.models()
    assert info.id == DEMO_MODEL_ID and info.demo and info.is_default and info.source == "builtin"


def test_an_explicitly_requested_missing_model_is_still_unavailable(make_services: Factory) -> None:
    with pytest.raises(ModelUnavailable) as excinfo:
        make_services().catalog.resolve("stabilityai/sd-turbo")
    assert "studiolo models import" in str(excinfo.value)


def test_any_installed_model_wins_over_the_demo(make_services: Factory) -> None:
    catalog = make_services().catalog
    _install(catalog, "my-model")
    # Not flagged default: the configured default applies (and stays missing), the demo is not used.
    assert catalog.default_model_id() == "stabilityai/sd-turbo"
    _install(catalog, "other-model", default=True)
    assert catalog.default_model_id() == "other-model"
    assert [m.id for m in catalog.models() if m.demo] == [DEMO_MODEL_ID]  # still listed, never the default


def test_a_hosted_providers_model_is_no_fallback_until_made_the_default(make_services: Factory) -> None:
    """Issue 18: a remote model costs money per image, so installing one keeps the demo model the fallback; only
    `models default` sends requests that name no model to it."""
    services = make_services(provider_pollinations_enabled=True)
    catalog = services.catalog
    catalog.engines.update(remote_engines(services.settings))  # this factory's engines are the demo's only
    catalog.add_remote("flux", provider="pollinations", remote_model="flux")
    assert catalog.default_model_id() == DEMO_MODEL_ID
    assert catalog.resolve("flux").source == "remote" and catalog.resolve("flux").remote_model == "flux"
    catalog.set_default("flux")
    assert catalog.default_model_id() == "flux"


def test_a_configured_builtin_default_wins_over_the_demo(make_services: Factory) -> None:
    catalog = make_services(echo=True).catalog
    assert catalog.default_model_id() == "echo"
    assert {m.id: m.demo for m in catalog.models()} == {"echo": False, DEMO_MODEL_ID: True}


def test_without_weights_the_demo_model_is_not_offered(make_services: Factory, tmp_path: Path) -> None:
    catalog = make_services(weights=tmp_path / "missing.safetensors").catalog
    assert catalog.models() == []
    assert catalog.default_model_id() == "stabilityai/sd-turbo"


def test_the_demo_model_lists_its_real_size(make_services: Factory, demo_weights: Path) -> None:
    (info,) = make_services().catalog.models()
    # Its weights and config on disk (the packaged ones are 15.9 MB), not 0 (issue 13).
    assert info.size_bytes == demo_weights.stat().st_size + demo_weights.with_suffix(".json").stat().st_size > 0


def test_a_typo_suggests_the_installed_model(make_services: Factory) -> None:
    catalog = make_services().catalog
    _install(catalog, "dreamshaper-8")
    with pytest.raises(ModelUnavailable) as typo:
        catalog.resolve("studiolo-dmeo")
    assert typo.value.message == (
        "Model 'studiolo-dmeo' is not installed. Did you mean 'studiolo-demo'? "
        "Installed models: dreamshaper-8, studiolo-demo."
    )
    assert typo.value.details["suggestions"] == [DEMO_MODEL_ID]
    with pytest.raises(ModelUnavailable) as case:
        catalog.resolve("DreamShaper-8")
    assert case.value.details["suggestions"] == ["dreamshaper-8"]
    # A hub id may be another model than the one it resembles: it keeps the advice to pull it.
    with pytest.raises(ModelUnavailable) as hub:
        catalog.resolve("lykon/dreamshaper-8")
    assert "`studiolo models pull lykon/dreamshaper-8`" in hub.value.message
    with pytest.raises(ModelUnavailable) as unknown:
        catalog.resolve("sdxl")
    assert unknown.value.details["suggestions"] == []
    assert "studiolo models import PATH" in unknown.value.message and "models pull sdxl" not in unknown.value.message
    with pytest.raises(NotFound) as removed:
        catalog.remove("dreamshaper8")
    assert removed.value.code == "model_not_found" and removed.value.details["suggestions"] == ["dreamshaper-8"]


def test_builtin_models_are_not_removed_replaced_or_made_default(make_services: Factory, tmp_path: Path) -> None:
    catalog = make_services(echo=True).catalog
    for model_id in (DEMO_MODEL_ID, "echo"):
        with pytest.raises(Conflict) as removed:
            catalog.remove(model_id)
        assert removed.value.code == "model_builtin" and "cannot be removed" in removed.value.message
        with pytest.raises(Conflict) as made_default:
            catalog.set_default(model_id)
        assert made_default.value.code == "model_builtin"
    # Reserved even where the demo's weights are missing: an import under its name would shadow it later.
    bare = make_services(weights=tmp_path / "missing.safetensors").catalog
    with pytest.raises(Conflict) as imported:
        bare._check_new_id(DEMO_MODEL_ID)
    assert imported.value.code == "model_exists"


def test_the_demo_model_has_its_own_steps_and_guidance(make_services: Factory) -> None:
    # Issue 13: a rectified-flow model needs far fewer steps than Stable Diffusion (8 matched 12 steps on the
    # held-out prompts, bench/demo.py --quality), and it was checked at CFG 4, not SD's 7. Other models keep
    # the generic defaults; what a request says always wins.
    services = make_services(echo=True)

    def defaults(model: str, **params: Any) -> tuple[int, float]:
        prepared, model_id, _seeds = services.generation.prepare(
            "someone", GenerationParams(prompt="a house", model=model, **params), "txt2img"
        )
        assert model_id == model
        return int(prepared["steps"]), float(prepared["guidance"])

    assert defaults(DEMO_MODEL_ID) == (QUALITY_STEPS["standard"], DEFAULT_GUIDANCE) == (8, 4.0)
    assert defaults(DEMO_MODEL_ID, quality="draft")[0] == 4
    assert defaults(DEMO_MODEL_ID, quality="high")[0] == 25
    assert defaults(DEMO_MODEL_ID, steps=30, guidance=7.5) == (30, 7.5)
    assert defaults(DEMO_MODEL_ID, guidance=0) == (8, 0.0)
    assert defaults("echo") == (25, 7.0)
    assert defaults("echo", quality="draft")[0] == 12
