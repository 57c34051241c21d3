"""The model catalog: which models are installed, where their files are, and which one is the default.

Rows live in the ``models`` table so the server, workers and the CLI agree; files live under
``settings.models_dir``. File inspection, copying and hub downloads are in ``engines/model_files.py``.
"""

from __future__ import annotations

import difflib
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update

from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.adapters.models import InstalledAdapter
from studiolo.domain.generation.models import InstalledModel, Job
from studiolo.engines.accel.cache import AccelCache
from studiolo.engines.base import Capabilities, Engine, ModelRef
from studiolo.engines.demo.engine import DEMO_MODEL_ID, DemoEngine
from studiolo.engines.esrgan_files import ESRGAN_ARCHS, ESRGAN_ENGINE
from studiolo.engines.model_files import MOTION_ARCHS, UPSCALER_FACTORS
from studiolo.engines.upscale import LANCZOS_UPSCALER_ID, LANCZOS_UPSCALER_NAME, UPSCALE_FACTORS
from studiolo.errors import Conflict, InvalidInput, ModelUnavailable, NotFound, ServiceUnavailable, StudioloError
from studiolo.settings import Settings

ECHO_MODEL_ID = "echo"
# Names of the models built into Studiolo: never a row, never removable, never importable under these names.
BUILTIN_MODEL_IDS = frozenset({ECHO_MODEL_ID, DEMO_MODEL_ID, LANCZOS_UPSCALER_ID})
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class ModelInfo:
    id: str
    engine: str
    source: str
    arch: str | None
    size_bytes: int
    is_default: bool
    loaded: bool
    path: str | None
    # True for Studiolo's built-in demo model (issue 6), so the CLI, API and UI can label its pictures.
    demo: bool = False
    # A hosted provider's model (source "remote"; engine = the provider): its name there.
    remote_model: str | None = None


def how_to_install(model_id: str) -> str:
    """How to get ``model_id``: pull it from the hub (ids shaped ``owner/name``) or import local files."""
    importing = (
        "import one you have with `studiolo models import PATH` (a diffusers folder or a single .safetensors "
        "checkpoint)"
    )
    if "/" not in model_id:
        # Hub ids are owner/name: advising `models pull studiolo-dmeo` would only fail again (issue 13).
        return (
            f"To add a model, {importing}, or download one from the Hugging Face hub by its owner/name id: "
            "`studiolo models pull OWNER/NAME`."
        )
    return (
        f"Download it with `studiolo models pull {model_id}` (needs network access to the Hugging Face hub), "
        f"or {importing}."
    )


def close_model_ids(model_id: str, known: list[str]) -> list[str]:
    """The ids in ``known`` that ``model_id`` is most likely a typo of (case-insensitive), best first."""
    by_lower = {k.lower(): k for k in known}
    return [by_lower[m] for m in difflib.get_close_matches(model_id.lower(), list(by_lower), n=3, cutoff=0.6)]


def unknown_model(model_id: str, known: list[str]) -> tuple[str, dict[str, object]]:
    """The message and details of an error about a model that is not installed, shared by the CLI and the API.

    A likely typo gets "did you mean", and no advice to pull the misspelt name unless it is a hub id (owner/name,
    which may well be a different model); the installed models are listed either way
    (tests/unit/test_demo_catalog.py::test_a_typo_suggests_the_installed_model).
    """
    close = close_model_ids(model_id, known)
    parts = [f"Model '{model_id}' is not installed."]
    if close:
        parts.append("Did you mean " + " or ".join(f"'{c}'" for c in close) + "?")
    parts.append(f"Installed models: {', '.join(known)}." if known else "No model is installed.")
    if not close or "/" in model_id:
        parts.append(how_to_install(model_id))
    return " ".join(parts), {"model": model_id, "installed": known, "suggestions": close}


def _model_file_error(exc: Exception) -> StudioloError:
    code = getattr(exc, "code", "model_file_invalid")
    if code == "hub_unreachable":
        return ServiceUnavailable(str(exc), code=code)
    if code == "model_not_found_on_hub":
        return NotFound(str(exc), code=code)
    return InvalidInput(str(exc), code=code)


def draws_images(arch: str | None) -> bool:
    """False for the models that draw nothing: upscalers (they enlarge an image) and image-to-video models (they
    animate one, engines/image_to_video.py). Those are never the default model nor a generator's model."""
    return arch not in UPSCALER_FACTORS and arch not in MOTION_ARCHS


def _refuse_upscaler_default(model_id: str, arch: str | None) -> None:
    """An upscaler or image-to-video model draws nothing, so it cannot be the model a request without one uses
    (409)."""
    if arch in MOTION_ARCHS:
        raise Conflict(
            f"'{model_id}' is an image-to-video model: it animates the scenes of films (their motion) and draws no "
            "image, so it cannot be the default model.",
            code="model_is_motion",
            details={"model": model_id},
        )
    if arch in UPSCALER_FACTORS:
        raise Conflict(
            f"'{model_id}' is an upscaler: it enlarges images (POST /api/v1/images/{{id}}/upscale, `studiolo "
            "upscale`) and draws none, so it cannot be the default model.",
            code="model_is_upscaler",
            details={"model": model_id},
        )


@dataclass(frozen=True)
class UpscalerInfo:
    """An upscaler a request may name: the built-in Lanczos one, or an installed upscaler model."""

    id: str
    name: str
    factors: tuple[int, ...]
    # An upscaler model's (model_files.UPSCALE_PIPELINES, esrgan_files.ESRGAN_ARCHS); None: built in.
    arch: str | None = None


@dataclass(frozen=True)
class _Row:
    id: str
    engine: str
    source: str
    path: str
    arch: str | None
    size_bytes: int
    is_default: bool
    remote_model: str | None = None
    remote_options: dict[str, object] | None = None


class ModelCatalog:
    """Installed models. Reads come from a snapshot of the (tiny) models table, refreshed every
    ``SNAPSHOT_SECONDS`` or at once after a change made through this process: submitting a job must not
    cost a database round trip just to learn the default model. A model imported by another process
    (the CLI) is seen within that interval."""

    SNAPSHOT_SECONDS = 2.0

    def __init__(self, db: Database, settings: Settings, engines: dict[str, Engine]):
        self.db = db
        self.settings = settings
        self.engines = engines
        self._lock = threading.Lock()
        self._snapshot: tuple[float, dict[str, _Row]] | None = None

    def _rows(self) -> dict[str, _Row]:
        with self._lock:
            if self._snapshot is not None and time.monotonic() - self._snapshot[0] < self.SNAPSHOT_SECONDS:
                return self._snapshot[1]
        with self.db.session() as session:
            rows = {
                r.id: _Row(
                    r.id,
                    r.engine,
                    r.source,
                    r.path,
                    r.arch,
                    r.size_bytes,
                    r.is_default,
                    r.remote_model,
                    r.remote_options,
                )
                for r in session.scalars(select(InstalledModel).order_by(InstalledModel.id))
            }
        with self._lock:
            self._snapshot = (time.monotonic(), rows)
        return rows

    def _invalidate(self) -> None:
        with self._lock:
            self._snapshot = None

    def _builtin(self) -> dict[str, ModelRef]:
        refs: dict[str, ModelRef] = {}
        if self.settings.enable_echo_engine and "echo" in self.engines:
            refs[ECHO_MODEL_ID] = ModelRef(id=ECHO_MODEL_ID, engine="echo", source="builtin")
        # The demo model ships inside the package (issue 6); offered only while its weights file is there.
        demo = self.engines.get("demo")
        if isinstance(demo, DemoEngine) and demo.available():
            refs[DEMO_MODEL_ID] = ModelRef(id=DEMO_MODEL_ID, engine="demo", source="builtin")
        return refs

    def default_model_id(self) -> str:
        # Upscaler and image-to-video models draw nothing: never the default, and installing one keeps the demo
        # model the fallback.
        rows = {k: r for k, r in self._rows().items() if draws_images(r.arch)}
        chosen = next((r.id for r in rows.values() if r.is_default), None)
        if chosen:
            return chosen
        configured = self.settings.default_model
        builtin = self._builtin()
        # A fresh install (no model installed, the configured default missing) generates with the demo model
        # instead of refusing; an installed default or any installed model wins over it
        # (tests/unit/test_demo_catalog.py).
        # A hosted provider's model (issue 18) does not count: it costs money per image, so requests that name no
        # model go there only once it is made the default (`models default`); until then the demo stays the fallback.
        local = [r for r in rows.values() if r.source != "remote"]
        if not local and configured not in builtin and DEMO_MODEL_ID in builtin:
            return DEMO_MODEL_ID
        return configured

    def models(self, *, fresh: bool = False) -> list[ModelInfo]:
        """Installed and built-in models; ``fresh`` re-reads the table instead of using the snapshot."""
        if fresh:
            self._invalidate()
        default = self.default_model_id()
        infos = [
            ModelInfo(
                r.id,
                r.engine,
                r.source,
                r.arch,
                r.size_bytes,
                r.id == default,
                self._is_loaded(r.engine, r.id),
                r.path or None,
                remote_model=r.remote_model,
            )
            for r in self._rows().values()
        ]
        for ref in self._builtin().values():
            infos.append(
                ModelInfo(
                    ref.id,
                    ref.engine,
                    ref.source,
                    None,
                    self._builtin_size(ref.engine),
                    ref.id == default,
                    self._is_loaded(ref.engine, ref.id),
                    None,
                    demo=ref.id == DEMO_MODEL_ID,
                )
            )
        return infos

    def capabilities(self, info: ModelInfo) -> Capabilities:
        """What ``info``'s model can do, as its engine says (an engine this process lacks: the contract's defaults)."""
        engine = self.engines.get(info.engine)
        if engine is None:
            return Capabilities()
        path = Path(info.path) if info.path else None
        ref = ModelRef(
            id=info.id,
            engine=info.engine,
            source=info.source,  # type: ignore[arg-type]
            path=path,
            arch=info.arch,
            remote_model=info.remote_model,
        )
        return engine.capabilities(ref)

    def _builtin_size(self, engine: str) -> int:
        # The demo's weights are real files (about 16 MB), not 0 bytes (issue 13); echo has no files.
        demo = self.engines.get(engine)
        return demo.size_bytes() if isinstance(demo, DemoEngine) else 0

    def builtin_upscaler_ids(self) -> list[str]:
        """Upscalers built into Studiolo (no files): every worker can run their jobs (served.py)."""
        return [LANCZOS_UPSCALER_ID] if LANCZOS_UPSCALER_ID in self.engines else []

    def upscalers(self) -> list[UpscalerInfo]:
        """The upscalers an upscale request may name: the built-in Lanczos one first, then installed models."""
        items = [UpscalerInfo(i, LANCZOS_UPSCALER_NAME, UPSCALE_FACTORS) for i in self.builtin_upscaler_ids()]
        for row in self._rows().values():
            if row.arch in UPSCALER_FACTORS and row.engine in self.engines:
                items.append(UpscalerInfo(row.id, row.id, UPSCALER_FACTORS[row.arch], row.arch))
        return items

    def ids(self) -> list[str]:
        """The ids of every model a request may name: installed ones, then the built-in ones."""
        return [*self._rows(), *self._builtin()]

    def _not_installed(self, model_id: str, error: type[StudioloError], code: str | None = None) -> StudioloError:
        message, details = unknown_model(model_id, self.ids())
        return error(message, code=code, details=details)

    def _is_loaded(self, engine: str, model_id: str) -> bool:
        eng = self.engines.get(engine)
        return bool(eng and eng.is_loaded(model_id))

    def resolve(self, model_id: str | None) -> ModelRef:
        """The ModelRef for ``model_id`` (or the default); ModelUnavailable with install advice if absent."""
        model_id = model_id or self.default_model_id()
        if model_id in self.builtin_upscaler_ids():  # no row, not listed with the models (see upscalers)
            return ModelRef(id=model_id, engine=LANCZOS_UPSCALER_ID, source="builtin")
        builtin = self._builtin().get(model_id)
        if builtin:
            return builtin
        row = self._rows().get(model_id)
        if row is None or row.engine not in self.engines:
            raise self._not_installed(model_id, ModelUnavailable)
        if row.source == "remote":  # a hosted provider's model: no files (engines/remote)
            return ModelRef(
                id=row.id,
                engine=row.engine,
                source="remote",
                remote_model=row.remote_model,
                options=dict(row.remote_options or {}),
            )
        path = Path(row.path)
        if not path.exists():
            raise ModelUnavailable(
                f"The files of model '{model_id}' are missing from {path}. Remove it with "
                f"`studiolo models remove {model_id}` and import or pull it again.",
                # The path tells a worker that the model is installed but not on this machine (worker.py).
                details={"model": model_id, "path": str(path)},
            )
        return ModelRef(id=row.id, engine=row.engine, source=row.source, path=path, arch=row.arch)  # type: ignore[arg-type]

    def _check_new_id(self, model_id: str) -> None:
        if not _MODEL_ID.match(model_id) or ".." in model_id:
            raise InvalidInput(
                "Model ids use letters, digits, '.', '_', '-' and '/', start with a letter or digit, "
                "and are at most 200 characters.",
                code="invalid_model_id",
                details={"model": model_id},
            )
        if model_id in BUILTIN_MODEL_IDS:
            raise Conflict(
                f"'{model_id}' is the name of a model built into Studiolo; import yours under another name (`--id`).",
                code="model_exists",
                details={"model": model_id},
            )
        with self.db.session() as session:
            if session.get(InstalledModel, model_id) is not None:
                raise Conflict(f"A model named '{model_id}' is already installed.", code="model_exists")
            # Adapters share the models' names (a `models remove NAME` must know which one it removes).
            if session.get(InstalledAdapter, model_id) is not None:
                raise Conflict(f"An adapter named '{model_id}' is already installed.", code="model_exists")

    def _dest(self, model_id: str) -> Path:
        return self.settings.models_dir / model_id.replace("/", "--")

    def _register(
        self, model_id: str, source: str, path: Path, arch: str | None, size: int, default: bool
    ) -> ModelInfo:
        # ESRGAN-family upscaler files run on their own engine (engines/esrgan.py); everything else is diffusers'.
        engine = ESRGAN_ENGINE if arch in ESRGAN_ARCHS else "diffusers"
        with self.db.session() as session:
            session.add(
                InstalledModel(id=model_id, engine=engine, source=source, path=str(path), arch=arch, size_bytes=size)
            )
        self._invalidate()
        if default:
            self.set_default(model_id)
        return next(m for m in self.models() if m.id == model_id)

    def import_path(
        self,
        path: Path,
        *,
        model_id: str | None = None,
        arch: str | None = None,
        copy: bool = True,
        default: bool = False,
    ) -> ModelInfo:
        """Register a local diffusers folder or ``.safetensors`` checkpoint (copied into the data dir by default)."""
        from studiolo.engines import model_files

        path = path.expanduser().resolve()
        try:
            info = model_files.inspect_model_path(path)
        except model_files.ModelFileError as exc:
            raise _model_file_error(exc) from exc
        model_id = model_id or (path.stem if info.format == "single_file" else path.name)
        self._check_new_id(model_id)
        if default:
            _refuse_upscaler_default(model_id, info.arch)
        target = path
        if copy:
            dest = self._dest(model_id)
            if info.format == "single_file":
                dest = dest / path.name
            target = model_files.copy_into(path, dest)
        source = "single_file" if info.format == "single_file" else "folder"
        # An ESRGAN file's label comes from its tensors (a checkpoint's --arch hint means nothing to it).
        arch = info.arch if info.arch in ESRGAN_ARCHS else arch or info.arch
        return self._register(model_id, source, target, arch, info.size_bytes, default)

    def pull(self, repo_id: str, *, progress: ProgressFn | None = None, default: bool = False) -> ModelInfo:
        """Download a diffusers model from the Hugging Face hub into the models directory."""
        from studiolo.engines import model_files

        self._check_new_id(repo_id)
        dest = self._dest(repo_id)
        try:
            folder = model_files.pull_from_hub(repo_id, dest, progress, self.settings.hub_timeout_seconds)
            info = model_files.inspect_model_path(folder)
        except model_files.ModelFileError as exc:
            raise _model_file_error(exc) from exc
        return self._register(repo_id, "hub", folder, info.arch, info.size_bytes, default)

    def _refuse_builtin(self, model_id: str, what: str) -> None:
        if model_id in BUILTIN_MODEL_IDS:
            role = (
                " It is used when a request names it, and as the default only while no other model is installed."
                if model_id == DEMO_MODEL_ID
                else ""
            )
            raise Conflict(
                f"'{model_id}' is built into Studiolo and {what}.{role}",
                code="model_builtin",
                details={"model": model_id},
            )

    def remove(self, model_id: str, *, delete_files: bool = True) -> None:
        """Uninstall ``model_id`` (its queued jobs fail) and delete the files Studiolo copied for it."""
        self._refuse_builtin(model_id, "cannot be removed")
        with self.db.session() as session:
            row = session.get(InstalledModel, model_id)
            if row is None:
                raise self._not_installed(model_id, NotFound, "model_not_found")
            path = Path(row.path) if row.path else None  # a remote model has no files
            session.delete(row)
            # Its queued jobs can never run now: fail them, as a worker would, instead of leaving them to wait
            # for workers, which take only the jobs of installed models (served.py).
            session.execute(
                update(Job)
                .where(Job.status == "queued", Job.model_id == model_id)
                .values(
                    status="failed",
                    error_code="model_unavailable",
                    error_message=f"Model '{model_id}' was removed before this job ran.",
                    finished_at=utcnow(),
                )
            )
        self._invalidate()
        if path is not None:  # its converted copies for the accelerated CPU path (engines/accel) go with it
            AccelCache(self.settings.accel_cache_dir).forget_model(path)
        # Only files we put under models_dir are ours to delete; an in-place import points elsewhere.
        models_dir = self.settings.models_dir.resolve()
        if delete_files and path is not None and path.exists() and models_dir in path.resolve().parents:
            owned = self._dest(model_id)
            shutil.rmtree(owned if owned.exists() else path, ignore_errors=True)

    def add_remote(
        self,
        model_id: str,
        *,
        provider: str,
        remote_model: str,
        options: dict[str, object] | None = None,
        default: bool = False,
    ) -> ModelInfo:
        """Register a hosted provider's model (engines/remote): jobs naming ``model_id`` run at ``provider`` as
        ``remote_model``. The provider must be one this process offers (its engine is configured)."""
        self._check_new_id(model_id)
        if provider not in self.engines or not getattr(self.engines[provider], "remote", False):
            offered = sorted(k for k, e in self.engines.items() if getattr(e, "remote", False))
            raise InvalidInput(
                f"'{provider}' is not a hosted provider this install offers"
                + (f"; offered: {', '.join(offered)}." if offered else "."),
                code="unknown_provider",
                details={"provider": provider, "offered": offered},
            )
        with self.db.session() as session:
            session.add(
                InstalledModel(
                    id=model_id,
                    engine=provider,
                    source="remote",
                    path="",
                    arch=None,
                    size_bytes=0,
                    remote_model=remote_model,
                    remote_options=options or {},
                )
            )
        self._invalidate()
        if default:
            self.set_default(model_id)
        return next(m for m in self.models() if m.id == model_id)

    def set_default(self, model_id: str) -> None:
        """Make the installed model ``model_id`` the one used when a request names none."""
        self._refuse_builtin(model_id, "cannot be made the default: `models default` takes an installed model")
        with self.db.session() as session:
            row = session.get(InstalledModel, model_id)
            if row is None:
                raise self._not_installed(model_id, NotFound, "model_not_found")
            _refuse_upscaler_default(model_id, row.arch)
            session.execute(update(InstalledModel).values(is_default=InstalledModel.id == model_id))
        self._invalidate()
