"""Adapters as catalog items (issue 19): imported through the catalog and `studiolo models import`, listed by
GET /api/v1/adapters and `models list`, removed with their files; names shared with models; and a request's adapters
checked against the model before a job is queued (unknown LoRA 422, wrong family 409)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from studiolo.cli import app
from studiolo.errors import Conflict, InvalidInput, NotFound
from studiolo.services import Services
from tests import synthetic_adapters as fake
from tests.helpers import auth_headers, create_user, job_count
from tests.tiny_pipeline import make_tiny_sd_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")
GEN = "/api/v1/generations"


def test_import_list_and_remove_through_the_catalog(services: Services, tmp_path: Path) -> None:
    source = fake.kohya_lora(tmp_path / "downloads" / "pixel-art.safetensors", 768, rank=4)
    info = services.adapters.import_path(source)
    assert (info.id, info.kind, info.family, info.format, info.source) == (
        "pixel-art",
        "lora",
        "sd15",
        "kohya",
        "single_file",
    )
    copied = services.settings.models_dir / "adapters" / "pixel-art" / "pixel-art.safetensors"
    assert Path(info.path) == copied and copied.read_bytes() == source.read_bytes()
    assert info.meta["rank"] == 4 and info.sha256 and len(info.sha256) == 64
    net = services.adapters.import_path(fake.controlnet_folder(tmp_path / "tiny-canny", 32), adapter_id="net/canny")
    assert (net.kind, net.meta["control_type"], net.source) == ("controlnet", "canny", "folder")
    assert Path(net.path) == services.settings.models_dir / "adapters" / "net--canny"
    assert [a.id for a in services.adapters.adapters("lora")] == ["pixel-art"]

    removed = services.adapters.remove("pixel-art")
    assert removed.id == "pixel-art" and not copied.parent.exists() and source.exists()
    with pytest.raises(NotFound) as gone:
        services.adapters.remove("pixel-art")
    assert gone.value.code == "adapter_not_found"
    services.adapters.remove("net/canny")
    assert not (services.settings.models_dir / "adapters" / "net--canny").exists()


def test_an_in_place_import_keeps_its_files_on_removal(services: Services, tmp_path: Path) -> None:
    source = fake.embedding(tmp_path / "bad-hands.safetensors", 768, vectors=4)
    info = services.adapters.import_path(source, copy=False)
    assert Path(info.path) == source.resolve() and info.meta["vectors"] == 4
    services.adapters.remove("bad-hands")
    assert source.exists()


def test_ip_adapter_copies_its_image_encoder(services: Services, tmp_path: Path) -> None:
    adapter = fake.ip_adapter(tmp_path / "h94" / "ip-adapter_sd15.safetensors", 768)
    fake.image_encoder(tmp_path / "h94" / "image_encoder")
    info = services.adapters.import_path(adapter, adapter_id="ip-sd15")
    encoder = services.settings.models_dir / "adapters" / "ip-sd15" / "image_encoder"
    assert info.meta["image_encoder"] == str(encoder.resolve()) and (encoder / "config.json").is_file()


def test_refusals(services: Services, tmp_path: Path) -> None:
    net = fake.controlnet_folder(tmp_path / "my-net", 768)
    with pytest.raises(InvalidInput) as untyped:
        services.adapters.import_path(net)
    assert untyped.value.code == "control_type_required" and "--control-type" in untyped.value.message
    assert services.adapters.import_path(net, control_type="depth").meta["control_type"] == "depth"
    with pytest.raises(InvalidInput) as bad_type:
        services.adapters.import_path(net, adapter_id="other", control_type="sketchy")
    assert bad_type.value.code == "invalid_control_type"
    pickle = tmp_path / "style.pt"
    pickle.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(InvalidInput) as refused:
        services.adapters.import_path(pickle)
    assert refused.value.code == "model_format_unsupported"
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(fake.kohya_lora(tmp_path / "whole.safetensors").read_bytes()[:-10])
    with pytest.raises(InvalidInput) as corrupt:
        services.adapters.import_path(broken)
    assert corrupt.value.code == "model_file_corrupt"
    with pytest.raises(InvalidInput) as bad_id:
        services.adapters.import_path(fake.embedding(tmp_path / "e.safetensors"), adapter_id="../up")
    assert bad_id.value.code == "invalid_model_id"
    assert [a.id for a in services.adapters.adapters(fresh=True)] == ["my-net"]
    assert not (services.settings.models_dir / "adapters" / "broken").exists()


@pytest.fixture
def tiny(services: Services, tmp_path: Path) -> Services:
    """The tiny random SD pipeline, recorded as an SD 1.x model."""
    services.catalog.import_path(make_tiny_sd_pipeline(tmp_path / "tiny"), model_id="tiny", arch="sd15", copy=False)
    return services


def test_names_are_unique_across_models_and_adapters(tiny: Services, tmp_path: Path) -> None:
    lora = fake.kohya_lora(tmp_path / "tiny.safetensors")
    with pytest.raises(Conflict) as clash:
        tiny.adapters.import_path(lora)
    assert clash.value.code == "model_exists"
    with pytest.raises(Conflict):
        tiny.adapters.import_path(lora, adapter_id="studiolo-demo")
    tiny.adapters.import_path(lora, adapter_id="style")
    with pytest.raises(Conflict) as twice:
        tiny.adapters.import_path(lora, adapter_id="style")
    assert twice.value.code == "model_exists"
    with pytest.raises(Conflict) as model_clash:
        tiny.catalog.import_path(make_tiny_sd_pipeline(tmp_path / "other"), model_id="style", copy=False)
    assert model_clash.value.code == "model_exists"


def test_a_request_s_loras_are_checked_against_the_model(tiny: Services, client: TestClient, tmp_path: Path) -> None:
    tiny.adapters.import_path(fake.kohya_lora(tmp_path / "xl-style.safetensors", 2048, sdxl=True))
    tiny.adapters.import_path(fake.peft_lora(tmp_path / "tiny-style.safetensors", 32))
    before = job_count(tiny)
    base = {"prompt": "a red fox", "model": "tiny", "size": "64x64", "steps": 2}

    unknown = client.post(GEN, json={**base, "loras": [{"name": "nope", "weight": 0.8}]})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_adapter"
    tagged = client.post(GEN, json={**base, "prompt": "a red fox <lora:nope:0.5>"})
    assert tagged.status_code == 422 and tagged.json()["error"]["code"] == "unknown_adapter"
    wrong = client.post(GEN, json={**base, "loras": [{"name": "xl-style"}]})
    assert wrong.status_code == 409, wrong.text
    error: dict[str, Any] = wrong.json()["error"]
    assert error["code"] == "adapter_incompatible" and error["details"]["adapter_family"] == "sdxl"
    assert job_count(tiny) == before  # refused before anything was queued
    # What each model takes, from its engine's capabilities: the web studio hides the pickers a model cannot use.
    models = {m["id"]: m for m in client.get("/api/v1/models").json()["items"]}
    assert (models["tiny"]["adapters"], models["tiny"]["hires"]) == (
        ["lora", "embedding", "controlnet", "ip_adapter"],
        True,
    )
    assert (models["studiolo-demo"]["adapters"], models["studiolo-demo"]["hires"]) == ([], False)


def test_the_list_is_for_every_signed_in_user(services: Services, client: TestClient, api: TestClient) -> None:
    folder = Path(services.settings.data_dir) / "incoming"
    services.adapters.import_path(fake.kohya_lora(folder / "pixel-art.safetensors", 768))
    services.adapters.import_path(fake.controlnet_ldm_file(folder / "control_v11p_sd15_openpose.safetensors"))
    services.adapters.import_path(fake.depth_preprocessor(folder / "dpt-hybrid"))
    items = client.get("/api/v1/adapters").json()["items"]
    by_id = {a["id"]: a for a in items}
    assert by_id["pixel-art"] | {"created_at": None} == {
        "id": "pixel-art",
        "kind": "lora",
        "family": "sd15",
        "family_label": "SD 1.x",
        "format": "kohya",
        "size_bytes": (folder / "pixel-art.safetensors").stat().st_size,
        "control_type": None,
        "preprocessor": None,
        "created_at": None,
    }
    assert by_id["control_v11p_sd15_openpose"]["control_type"] == "pose"
    assert by_id["dpt-hybrid"]["preprocessor"] == "depth" and by_id["dpt-hybrid"]["family_label"] == "an unknown base"
    only = client.get("/api/v1/adapters", params={"kind": "controlnet"}).json()["items"]
    assert [a["id"] for a in only] == ["control_v11p_sd15_openpose"]
    assert client.get("/api/v1/adapters", params={"kind": "vae"}).status_code == 422

    other = create_user(services, "other@example.com")
    seen = api.get("/api/v1/adapters", headers=auth_headers(services, other))
    assert seen.status_code == 200 and {a["id"] for a in seen.json()["items"]} == set(by_id)
    assert api.get("/api/v1/adapters").status_code == 401

    a1111 = api.get("/sdapi/v1/loras", headers=auth_headers(services, other)).json()
    assert [(x["name"], x["alias"]) for x in a1111] == [("pixel-art", "pixel-art")]


def test_a1111_embeddings_are_sorted_by_the_checkpoint(tiny: Services, client: TestClient, tmp_path: Path) -> None:
    tiny.adapters.import_path(fake.embedding(tmp_path / "sd15-word.safetensors", 768, vectors=2))
    tiny.adapters.import_path(fake.sdxl_embedding(tmp_path / "xl-word.safetensors", vectors=3))
    client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny"})
    listed = client.get("/sdapi/v1/embeddings").json()
    assert listed["loaded"] == {
        "sd15-word": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 768, "vectors": 2}
    }
    assert list(listed["skipped"]) == ["xl-word"]


# --- the CLI ------------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in list(os.environ):
        if key.startswith(("STUDIOLO_", "HF_")):
            monkeypatch.delenv(key)
    values = {
        "STUDIOLO_DATA_DIR": str(tmp_path / "data"),
        "STUDIOLO_ENV": "test",
        "STUDIOLO_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
    }
    if database_url:
        values["STUDIOLO_DATABASE_URL"] = database_url
    return values


def test_the_cli_imports_lists_and_removes_adapters(cli_env: dict[str, str], tmp_path: Path) -> None:
    def run(*args: str) -> Any:
        return CliRunner().invoke(app, list(args), env=cli_env)

    lora = fake.kohya_lora(tmp_path / "pixel-art.safetensors", 768, rank=8)
    imported = run("models", "import", str(lora))
    assert imported.exit_code == 0, imported.output
    assert f"Imported LoRA 'pixel-art' (SD 1.x, rank 8, {round(lora.stat().st_size / 1e3)} kB)" in imported.stderr
    assert "<lora:pixel-art:0.8>" in imported.stderr

    untyped = run("models", "import", str(fake.controlnet_folder(tmp_path / "my-net", 768)))
    assert untyped.exit_code == 1 and "control_type_required" in untyped.stderr
    typed = run("models", "import", str(tmp_path / "my-net"), "--control-type", "depth", "--id", "depth-net")
    assert typed.exit_code == 0 and "ControlNet 'depth-net' (SD 1.x, depth" in typed.stderr
    wrong_kind = run("models", "import", str(lora), "--kind", "embedding", "--id", "x")
    assert wrong_kind.exit_code == 1 and "is a LoRA, not a textual-inversion embedding" in wrong_kind.stderr
    forced = run("models", "import", str(fake.peft_lora(tmp_path / "t.safetensors")), "--family", "sdxl", "--link")
    assert forced.exit_code == 0 and "LoRA 't' (SDXL" in forced.stderr
    pipeline = run("models", "import", str(make_tiny_sd_pipeline(tmp_path / "tiny")), "--link")
    assert pipeline.exit_code == 0 and "imported tiny (folder" in pipeline.stderr

    listed = run("models", "list")
    assert listed.exit_code == 0
    table = listed.stdout[listed.stdout.index("Adapters") :]
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in table.splitlines() if "│" in line]
    assert ["LoRA", "pixel-art", "SD 1.x", f"{round(lora.stat().st_size / 1e3)} kB"] in rows
    assert [r[:3] for r in rows] == [
        ["ControlNet (depth)", "depth-net", "SD 1.x"],
        ["LoRA", "pixel-art", "SD 1.x"],
        ["LoRA", "t", "SDXL"],
    ]
    assert "tiny" in listed.stdout[: listed.stdout.index("Adapters")]
    only = run("models", "list", "--kind", "controlnet")
    assert "depth-net" in only.stdout and "pixel-art" not in only.stdout and "studiolo-demo" not in only.stdout
    assert "No IP-Adapter installed" in run("models", "list", "--kind", "ip-adapter").stderr

    assert run("models", "remove", "pixel-art").exit_code == 0
    assert "pixel-art" not in run("models", "list").stdout
    assert run("models", "remove", "tiny").exit_code == 0
    missing = run("models", "remove", "pixel-art")
    assert missing.exit_code == 1 and "model_not_found" in missing.stderr
