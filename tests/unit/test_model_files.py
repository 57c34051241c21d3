"""Model file inspection, atomic import copies and hub pulls (against local fake hubs, never the network)."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studiolo.engines import model_files
from studiolo.engines.model_files import (
    ModelFileError,
    copy_into,
    detect_arch,
    inspect_model_path,
    pull_from_hub,
    select_hub_files,
)

IMPORT_ADVICE = "`studiolo models import PATH` (a diffusers folder or a .safetensors checkpoint)"

SD15_KEYS = [
    "model.diffusion_model.input_blocks.0.0.weight",
    "first_stage_model.encoder.conv_in.weight",
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
]
SD21_KEYS = [*SD15_KEYS[:2], "cond_stage_model.model.token_embedding.weight"]
SDXL_KEYS = [
    *SD15_KEYS[:2],
    "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
    "conditioner.embedders.1.model.token_embedding.weight",
]


def write_safetensors(path: Path, keys: list[str], *, in_channels: int = 4, truncate: int = 0) -> Path:
    """A structurally valid .safetensors file (zero-filled tensors) written without torch."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key in keys:
        shape = [8, in_channels, 1, 1] if key.endswith("input_blocks.0.0.weight") else [2, 2]
        size = 2
        for dim in shape:
            size *= dim
        header[key] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", len(raw)) + raw + bytes(offset)
    path.write_bytes(data[: len(data) - truncate])
    return path


def write_folder(path: Path, pipeline_class: str = "StableDiffusionPipeline", cross_attention_dim: int = 768) -> Path:
    (path / "unet").mkdir(parents=True)
    (path / "model_index.json").write_text(json.dumps({"_class_name": pipeline_class}), encoding="utf-8")
    (path / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": cross_attention_dim}))
    (path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"w" * 1000)
    return path


# --- inspect ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pipeline_class", "cross_attention_dim", "arch"),
    [
        ("StableDiffusionPipeline", 768, "sd15"),
        ("StableDiffusionPipeline", 1024, "sd21"),
        ("StableDiffusionXLPipeline", 2048, "sdxl"),
        ("FluxPipeline", 4096, None),
    ],
)
def test_inspect_diffusers_folder(tmp_path: Path, pipeline_class: str, cross_attention_dim: int, arch: str) -> None:
    folder = write_folder(tmp_path / "m", pipeline_class, cross_attention_dim)
    info = inspect_model_path(folder)
    assert (info.format, info.arch, info.pipeline_class) == ("folder", arch, pipeline_class)
    assert info.size_bytes == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_inspect_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as excinfo:
        inspect_model_path(tmp_path / "nope")
    assert excinfo.value.code == "model_path_not_found"
    assert isinstance(excinfo.value, ValueError)


def test_folder_without_model_index_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as excinfo:
        inspect_model_path(tmp_path)
    assert excinfo.value.code == "model_format_unsupported"
    message = str(excinfo.value)
    assert "model_index.json" in message and "`studiolo models import PATH`" in message
    assert message.count(".safetensors checkpoint") == 1  # the advice said the same thing twice (issue 13)


@pytest.mark.parametrize("content", ["{broken", '{"no_class": 1}', "[]"])
def test_corrupt_model_index(tmp_path: Path, content: str) -> None:
    (tmp_path / "model_index.json").write_text(content)
    with pytest.raises(ModelFileError) as excinfo:
        inspect_model_path(tmp_path)
    assert excinfo.value.code == "model_file_corrupt"


@pytest.mark.parametrize(
    ("keys", "arch", "pipeline_class"),
    [
        (SD15_KEYS, "sd15", "StableDiffusionPipeline"),
        (SD21_KEYS, "sd21", "StableDiffusionPipeline"),
        (SDXL_KEYS, "sdxl", "StableDiffusionXLPipeline"),
    ],
)
def test_inspect_single_file_detects_the_architecture(
    tmp_path: Path, keys: list[str], arch: str, pipeline_class: str
) -> None:
    path = write_safetensors(tmp_path / "model.safetensors", keys)
    info = inspect_model_path(path)
    assert (info.format, info.arch, info.pipeline_class) == ("single_file", arch, pipeline_class)
    assert info.size_bytes == path.stat().st_size


def test_inpainting_checkpoint_is_recognised(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "inpaint.safetensors", SD15_KEYS, in_channels=9)
    assert inspect_model_path(path).pipeline_class == "StableDiffusionInpaintPipeline"


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".pth"])
def test_pickle_formats_are_refused_as_unsafe(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ModelFileError) as excinfo:
        inspect_model_path(path)
    assert excinfo.value.code == "model_format_unsupported"
    assert "arbitrary code" in str(excinfo.value) and ".safetensors" in str(excinfo.value)


def test_other_files_are_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ModelFileError) as excinfo:
        inspect_model_path(path)
    assert excinfo.value.code == "model_format_unsupported"


def test_safetensors_that_is_not_a_full_sd_checkpoint_is_unsupported(tmp_path: Path) -> None:
    lora = write_safetensors(tmp_path / "lora.safetensors", ["lora_unet_down_blocks_0.alpha"])
    with pytest.raises(ModelFileError) as excinfo:
        inspect_model_path(lora)
    assert excinfo.value.code == "model_format_unsupported" and "LoRA" in str(excinfo.value)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"\x01\x02"),  # shorter than the length prefix
        lambda p: p.write_bytes(struct.pack("<Q", 10**9) + b"{}"),  # header longer than the file
        lambda p: p.write_bytes(struct.pack("<Q", 5) + b"{nope"),  # not JSON
        lambda p: p.write_bytes(struct.pack("<Q", 2) + b"[]"),  # not an object
        lambda p: write_safetensors(p, SD15_KEYS, truncate=10),  # tensor data cut off
    ],
    ids=["short", "huge-header", "not-json", "not-object", "truncated"],
)
def test_damaged_safetensors_is_corrupt(tmp_path: Path, damage: Any) -> None:
    path = tmp_path / "model.safetensors"
    damage(path)
    with pytest.raises(ModelFileError) as excinfo:
        inspect_model_path(path)
    assert excinfo.value.code == "model_file_corrupt"


def test_detect_arch_needs_unet_and_vae() -> None:
    assert detect_arch(SD15_KEYS) == "sd15"
    assert detect_arch(SD15_KEYS[2:]) is None
    assert detect_arch(["conditioner.embedders.0.model.x", *SD15_KEYS[:2]]) is None  # SDXL refiner


# --- copy_into --------------------------------------------------------------------------------------------


def test_copy_folder_and_file(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "src" / "my-model")
    single = write_safetensors(tmp_path / "src" / "one.safetensors", SD15_KEYS)
    models = tmp_path / "models"
    copied_folder = copy_into(folder, models / "my-model")
    copied_file = copy_into(single, models / "one" / "one.safetensors")
    assert copied_folder == models / "my-model" and copied_file == models / "one" / "one.safetensors"
    assert inspect_model_path(copied_folder).pipeline_class == "StableDiffusionPipeline"
    assert copied_file.read_bytes() == single.read_bytes()
    assert not [p for p in models.rglob(".*partial*")]


def test_copy_follows_symlinks(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "src")
    blob = tmp_path / "blob"
    blob.write_bytes(b"weights")
    (folder / "unet" / "linked.safetensors").symlink_to(blob)
    copied = copy_into(folder, tmp_path / "models" / "m")
    linked = copied / "unet" / "linked.safetensors"
    assert not linked.is_symlink() and linked.read_bytes() == b"weights"


def test_copy_refuses_to_overwrite(tmp_path: Path) -> None:
    single = write_safetensors(tmp_path / "one.safetensors", SD15_KEYS)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "taken.safetensors").write_text("x")
    with pytest.raises(ModelFileError) as excinfo:
        copy_into(single, tmp_path / "models" / "taken.safetensors")
    assert excinfo.value.code == "model_already_exists"
    with pytest.raises(ModelFileError) as missing:
        copy_into(tmp_path / "nothing", tmp_path / "models" / "x")
    assert missing.value.code == "model_path_not_found"


def test_failed_copy_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_folder(tmp_path / "src")

    def no_space(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    # The copy itself succeeded; the final rename fails: the partial copy must go.
    monkeypatch.setattr(model_files.os, "replace", no_space)
    models = tmp_path / "models"
    with pytest.raises(OSError, match="No space"):
        copy_into(folder, models / "m")
    assert list(models.iterdir()) == []


# --- hub: file selection ----------------------------------------------------------------------------------


def test_select_hub_files_prefers_fp16_safetensors_and_skips_pickles() -> None:
    listing = [
        "README.md",
        "model_index.json",
        "v1-5-pruned-emaonly.safetensors",
        "v1-5-pruned.ckpt",
        "feature_extractor/preprocessor_config.json",
        "safety_checker/config.json",
        "safety_checker/model.safetensors",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "text_encoder/pytorch_model.bin",
        "tokenizer/merges.txt",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.non_ema.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_flax_model.msgpack",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
        "text_encoder_2/config.json",
        "text_encoder_2/model.fp16-00001-of-00002.safetensors",
        "text_encoder_2/model.fp16-00002-of-00002.safetensors",
        "text_encoder_2/model.safetensors.index.fp16.json",
        "text_encoder_2/model-00001-of-00002.safetensors",
        "text_encoder_2/model.safetensors.index.json",
    ]
    assert select_hub_files(listing) == [
        "feature_extractor/preprocessor_config.json",
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "text_encoder_2/config.json",
        "text_encoder_2/model.fp16-00001-of-00002.safetensors",
        "text_encoder_2/model.fp16-00002-of-00002.safetensors",
        "text_encoder_2/model.safetensors.index.fp16.json",
        "tokenizer/merges.txt",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",  # no safetensors for this component: .bin is the only choice
    ]


# --- hub: pulls against local fake hubs -------------------------------------------------------------------

COMMIT = "c0ffee" + "0" * 34
FAKE_REPO = {
    "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
    "unet/config.json": b'{"cross_attention_dim": 768}',
    "unet/diffusion_pytorch_model.safetensors": b"f" * 4000,
    "unet/diffusion_pytorch_model.fp16.safetensors": b"h" * 2000,
    "unet/diffusion_pytorch_model.bin": b"p" * 4000,
    "safety_checker/model.safetensors": b"s" * 500,
    "v1-5-pruned.ckpt": b"c" * 500,
}


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """Just enough of the hub API for model_info + snapshot_download; unknown repos get the hub's 404."""

    files: dict[str, bytes] = FAKE_REPO
    repo = "studiolo/tiny"

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
        if not (path.startswith(f"/api/models/{self.repo}") or path.startswith(f"/{self.repo}/")):
            self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, body)
        elif "/tree/" in path:
            tree = [
                {"type": "file", "path": f, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
                for f, c in self.files.items()
            ]
            self._send(200, json.dumps(tree).encode(), {}, body)
        elif path.startswith("/api/models/"):
            siblings = [{"rfilename": f, "size": len(c)} for f, c in self.files.items()]
            self._send(200, json.dumps({"id": self.repo, "sha": COMMIT, "siblings": siblings}).encode(), {}, body)
        else:
            name = path.split("/resolve/", 1)[1].split("/", 1)[1]
            data = self.files[name]
            headers = {"ETag": f'"{hashlib.sha1(data).hexdigest()}"', "X-Repo-Commit": COMMIT}
            self._send(200, data, headers, body)

    def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(data)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_hub() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_pull_downloads_the_diffusers_files_with_progress(fake_hub: str, tmp_path: Path) -> None:
    progress: list[tuple[int, int]] = []
    folder = pull_from_hub(
        "studiolo/tiny", tmp_path / "studiolo--tiny", lambda d, t: progress.append((d, t)), 5, endpoint=fake_hub
    )
    assert folder == tmp_path / "studiolo--tiny"
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    # fp16 weights, renamed to the plain name so the folder loads without a variant argument.
    assert files == ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"]
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == b"h" * 2000
    total = sum(len(FAKE_REPO[f]) for f in ("model_index.json", "unet/config.json")) + 2000
    assert progress[-1] == (total, total)
    assert inspect_model_path(folder).arch == "sd15"
    assert [p.name for p in tmp_path.iterdir()] == ["studiolo--tiny"]  # no partial download left


def test_pull_into_an_existing_folder_is_refused(fake_hub: str, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(ModelFileError) as excinfo:
        pull_from_hub("studiolo/tiny", tmp_path / "taken", None, 5, endpoint=fake_hub)
    assert excinfo.value.code == "model_already_exists"


def test_unknown_repo_is_not_found(fake_hub: str, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as excinfo:
        pull_from_hub("nobody/nothing", tmp_path / "x", None, 5, endpoint=fake_hub)
    assert excinfo.value.code == "model_not_found_on_hub"
    assert not (tmp_path / "x").exists()


def test_repo_without_model_index_is_not_a_diffusers_model(
    fake_hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_FakeHub, "files", {"sd_xl_base_1.0.safetensors": b"x" * 10})
    with pytest.raises(ModelFileError) as excinfo:
        pull_from_hub("studiolo/tiny", tmp_path / "x", None, 5, endpoint=fake_hub)
    assert excinfo.value.code == "model_format_unsupported" and IMPORT_ADVICE in str(excinfo.value)


def _assert_fast_unreachable(tmp_path: Path, started: float, excinfo: pytest.ExceptionInfo[ModelFileError]) -> None:
    assert excinfo.value.code == "hub_unreachable"
    assert IMPORT_ADVICE in str(excinfo.value)
    assert time.monotonic() - started < 5
    assert list(tmp_path.iterdir()) == []


def test_offline_mode_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ModelFileError) as excinfo:
        pull_from_hub("studiolo/tiny", tmp_path / "x", None, 1)
    _assert_fast_unreachable(tmp_path, started, excinfo)


def test_connection_refused_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ModelFileError) as excinfo:
        pull_from_hub("studiolo/tiny", tmp_path / "x", None, 1, endpoint=f"http://127.0.0.1:{port}")
    _assert_fast_unreachable(tmp_path, started, excinfo)


def test_silent_network_times_out_fast(tmp_path: Path) -> None:
    with socket.socket() as black_hole:  # accepts connections, never answers
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(8)
        started = time.monotonic()
        with pytest.raises(ModelFileError) as excinfo:
            pull_from_hub(
                "studiolo/tiny", tmp_path / "x", None, 1, endpoint=f"http://127.0.0.1:{black_hole.getsockname()[1]}"
            )
    _assert_fast_unreachable(tmp_path, started, excinfo)


def test_unresolvable_host_fails_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ModelFileError) as excinfo:
        # .invalid never resolves (RFC 2606), whatever network this runs on.
        pull_from_hub("studiolo/tiny", tmp_path / "x", None, 2, endpoint="http://hub.studiolo.invalid")
    _assert_fast_unreachable(tmp_path, started, excinfo)


def test_error_codes_of_the_module_are_stable() -> None:
    # The catalog maps these codes to API errors; renaming one is a breaking change.
    source = Path(model_files.__file__).read_text(encoding="utf-8")
    for code in (
        "model_path_not_found",
        "model_format_unsupported",
        "model_file_corrupt",
        "model_already_exists",
        "hub_unreachable",
        "model_not_found_on_hub",
    ):
        assert f'"{code}"' in source
