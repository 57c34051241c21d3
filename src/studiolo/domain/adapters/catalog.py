"""The adapter catalog (issue 19): which LoRAs, embeddings, ControlNets, IP-Adapters and ControlNet preprocessors
are installed, and what a generation request's adapters resolve to.

Rows live in the ``adapters`` table (domain/adapters/models.py); files under ``<models_dir>/adapters/``. Reading the
tensors to tell a file's kind and family is engines/adapter_files.py (no torch). ``plan`` is what submitting a job
calls: it checks every adapter the request names against the chosen model (a family mismatch is 409
``adapter_incompatible`` before anything is queued) and returns what the job's params keep; ``refs`` turns those back
into the engine's AdapterRefs when the job runs.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from studiolo.db.session import Database
from studiolo.domain.adapters.models import InstalledAdapter
from studiolo.domain.adapters.prompt import embedding_words, lora_tags
from studiolo.domain.generation.catalog import _MODEL_ID, BUILTIN_MODEL_IDS
from studiolo.domain.generation.models import InstalledModel
from studiolo.engines.base import CONTROL_TYPES, AdapterKind, AdapterRef, Capabilities, ModelRef
from studiolo.engines.preprocess import BUILTIN_TYPES, MODEL_TYPES
from studiolo.errors import Conflict, InvalidInput, NotFound, StudioloError
from studiolo.settings import Settings

FAMILY_NAMES = {"sd15": "SD 1.x", "sd21": "SD 2.x", "sdxl": "SDXL"}
KIND_NAMES = {
    "lora": "LoRA",
    "embedding": "embedding",
    "controlnet": "ControlNet",
    "ip_adapter": "IP-Adapter",
    "preprocessor": "ControlNet preprocessor",
}
# A model's text-encoder context width per family: what an adapter of unknown family is matched by.
_FAMILY_CONTEXT_DIM = {"sd15": 768, "sd21": 1024, "sdxl": 2048}


@dataclass(frozen=True)
class AdapterInfo:
    id: str
    kind: str
    family: str | None
    source: str
    path: str
    format: str | None
    size_bytes: int
    sha256: str | None
    meta: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    def ref(self) -> AdapterRef:
        return AdapterRef(
            id=self.id,
            kind=self.kind,  # type: ignore[arg-type]
            path=Path(self.path),
            family=self.family,
            format=self.format,
            sha256=self.sha256,
            meta=dict(self.meta),
        )

    @property
    def context_dim(self) -> int | None:
        value = self.meta.get("context_dim")
        return value if isinstance(value, int) else None


def family_label(family: str | None) -> str:
    return FAMILY_NAMES.get(family or "", family or "an unknown base")


def model_context_dim(model: ModelRef) -> int | None:
    """The cross-attention width of ``model``'s UNet: from its family, or its diffusers folder's unet config."""
    if model.arch in _FAMILY_CONTEXT_DIM:
        return _FAMILY_CONTEXT_DIM[model.arch]
    if model.path is None or not Path(model.path).is_dir():
        return None
    try:
        config = json.loads((Path(model.path) / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    dim = config.get("cross_attention_dim") if isinstance(config, dict) else None
    return dim if isinstance(dim, int) else None


def fits(adapter: AdapterInfo, model: ModelRef, model_dim: int | None) -> bool:
    """True when ``adapter`` was made for ``model``'s base: same family when both are known, else the same context
    width when both are known (a custom base), else it is tried (the engine says if the tensors do not fit)."""
    if adapter.family and model.arch in _FAMILY_CONTEXT_DIM:
        return adapter.family == model.arch
    if adapter.context_dim is not None and model_dim is not None:
        return adapter.context_dim == model_dim
    return True


class AdapterCatalog:
    """Installed adapters: reads from a snapshot of the (small) table, refreshed every ``SNAPSHOT_SECONDS`` or at once
    after a change made through this process (as ModelCatalog does)."""

    SNAPSHOT_SECONDS = 2.0

    def __init__(self, db: Database, settings: Settings):
        self.db = db
        self.settings = settings
        self._lock = threading.Lock()
        self._snapshot: tuple[float, dict[str, AdapterInfo]] | None = None

    # -- reading ----------------------------------------------------------------------------------------------

    def _rows(self) -> dict[str, AdapterInfo]:
        with self._lock:
            if self._snapshot is not None and time.monotonic() - self._snapshot[0] < self.SNAPSHOT_SECONDS:
                return self._snapshot[1]
        with self.db.session() as session:
            rows = {
                r.id: AdapterInfo(
                    r.id,
                    r.kind,
                    r.family,
                    r.source,
                    r.path,
                    r.format,
                    r.size_bytes,
                    r.sha256,
                    dict(r.meta or {}),
                    r.created_at,
                )
                for r in session.scalars(select(InstalledAdapter).order_by(InstalledAdapter.kind, InstalledAdapter.id))
            }
        with self._lock:
            self._snapshot = (time.monotonic(), rows)
        return rows

    def invalidate(self) -> None:
        with self._lock:
            self._snapshot = None

    def adapters(self, kind: str | None = None, *, fresh: bool = False) -> list[AdapterInfo]:
        if fresh:
            self.invalidate()
        return [a for a in self._rows().values() if kind is None or a.kind == kind]

    def get(self, adapter_id: str) -> AdapterInfo | None:
        return self._rows().get(adapter_id)

    def ids(self) -> list[str]:
        return list(self._rows())

    # -- installing and removing (the CLI's `models import` / `models remove`) -----------------------------------

    def _check_new_id(self, adapter_id: str) -> None:
        """An adapter's id follows the model ids' rules and is unique among adapters AND models: it is what
        `<lora:NAME>`, a prompt's embedding word and `studiolo models remove NAME` name."""
        if not _MODEL_ID.match(adapter_id) or ".." in adapter_id:
            raise InvalidInput(
                "Adapter ids use letters, digits, '.', '_', '-' and '/', start with a letter or digit, and are at "
                "most 200 characters; give one with --id.",
                code="invalid_model_id",
                details={"adapter": adapter_id},
            )
        with self.db.session() as session:
            if adapter_id in BUILTIN_MODEL_IDS or session.get(InstalledModel, adapter_id) is not None:
                raise Conflict(
                    f"A model named '{adapter_id}' is already installed; import the adapter under another name (--id).",
                    code="model_exists",
                    details={"adapter": adapter_id},
                )
            if session.get(InstalledAdapter, adapter_id) is not None:
                raise Conflict(
                    f"An adapter named '{adapter_id}' is already installed; remove it first "
                    f"(`studiolo models remove {adapter_id}`) or import this one under another name (--id).",
                    code="model_exists",
                    details={"adapter": adapter_id},
                )

    def _dest(self, adapter_id: str) -> Path:
        return self.settings.models_dir / "adapters" / adapter_id.replace("/", "--")

    def import_path(
        self,
        path: Path,
        *,
        adapter_id: str | None = None,
        kind: str | None = None,
        family: str | None = None,
        control_type: str | None = None,
        image_encoder: Path | None = None,
        copy: bool = True,
    ) -> AdapterInfo:
        """Install the adapter at ``path`` (a .safetensors file or a folder), copied under
        ``<models_dir>/adapters/<id>/`` unless ``copy`` is False. Its kind and family come from its tensors;
        ``kind`` refuses a file of another kind, ``family`` overrides what the tensors say (sd15, sd21, sdxl),
        ``control_type`` a ControlNet's (else guessed from its name: 422 ``control_type_required`` when the name
        does not say), ``image_encoder`` an IP-Adapter's CLIP vision folder (else ``image_encoder/`` beside it)."""
        from studiolo.engines import adapter_files, model_files

        path = Path(path).expanduser().resolve()
        if family is not None and family not in FAMILY_NAMES:
            raise InvalidInput(
                f"Unknown family '{family}': use {', '.join(FAMILY_NAMES)}.",
                code="invalid_family",
                details={"family": family},
            )
        if control_type is not None and control_type not in CONTROL_TYPES:
            raise InvalidInput(
                f"Unknown control type '{control_type}': use one of {', '.join(CONTROL_TYPES)}.",
                code="invalid_control_type",
                details={"control_type": control_type, "accepted": list(CONTROL_TYPES)},
            )
        try:
            found = adapter_files.inspect_adapter_path(path, kind, image_encoder=image_encoder)
        except model_files.ModelFileError as exc:
            raise _file_error(exc) from exc
        meta = dict(found.meta)
        if found.kind == "controlnet":
            meta["control_type"] = control_type or meta.get("control_type")
            if not meta["control_type"]:
                raise InvalidInput(
                    f"{path.name} is a ControlNet, but its name does not say which control maps it takes. Give it "
                    f"with --control-type ({', '.join(CONTROL_TYPES)}).",
                    code="control_type_required",
                    details={"path": str(path), "accepted": list(CONTROL_TYPES)},
                )
        adapter_id = adapter_id or (path.name if path.is_dir() else path.stem)
        self._check_new_id(adapter_id)
        target = path
        if copy:
            dest = self._dest(adapter_id)
            made_dest = not dest.exists()  # a folder left there by hand is not ours to delete on failure
            try:
                if path.is_dir():
                    target = model_files.copy_into(path, dest)
                else:
                    target = model_files.copy_into(path, dest / path.name)
                    if found.kind == "ip_adapter":
                        # The encoder travels with the adapter, so removing a source folder later breaks nothing.
                        encoder = model_files.copy_into(Path(meta["image_encoder"]), dest / "image_encoder")
                        meta["image_encoder"] = str(encoder.resolve())
            except BaseException:
                if made_dest:
                    shutil.rmtree(dest, ignore_errors=True)
                raise
        sha, addnet = adapter_files.file_hashes(found.weight_file) if found.weight_file else (None, None)
        if addnet is not None and found.kind == "lora":
            meta["addnet_hash"] = addnet  # what A1111 writes in "Lora hashes" (infotext.py)
        row = InstalledAdapter(
            id=adapter_id,
            kind=found.kind,
            family=family or found.family,
            source="folder" if path.is_dir() else "single_file",
            path=str(target),
            format=found.format,
            size_bytes=found.size_bytes,
            sha256=sha,
            meta=meta,
        )
        try:
            with self.db.session() as session:
                session.add(row)
        except BaseException:
            if copy:
                shutil.rmtree(self._dest(adapter_id), ignore_errors=True)
            raise
        self.invalidate()
        info = self.get(adapter_id)
        assert info is not None  # just written
        return info

    def remove(self, adapter_id: str) -> AdapterInfo:
        """Uninstall ``adapter_id`` and delete the files Studiolo copied for it (an in-place import keeps its files).
        A queued job that names it fails when it runs (``adapter_unavailable``)."""
        with self.db.session() as session:
            row = session.get(InstalledAdapter, adapter_id)
            if row is None:
                installed = [a.id for a in self.adapters(fresh=True)]
                raise NotFound(
                    f"No adapter named '{adapter_id}' is installed. Installed: {', '.join(installed) or 'none'}.",
                    code="adapter_not_found",
                    details={"adapter": adapter_id, "installed": installed},
                )
            info = AdapterInfo(
                row.id,
                row.kind,
                row.family,
                row.source,
                row.path,
                row.format,
                row.size_bytes,
                row.sha256,
                dict(row.meta or {}),
                row.created_at,
            )
            session.delete(row)
        self.invalidate()
        owned = self._dest(adapter_id).resolve()
        adapters_dir = (self.settings.models_dir / "adapters").resolve()
        path = Path(info.path).resolve()
        # Only what we put under models_dir/adapters is ours to delete; an in-place import points elsewhere.
        if adapters_dir in owned.parents and (path == owned or owned in path.parents):
            shutil.rmtree(owned, ignore_errors=True)
        return info

    # -- a request's adapters ---------------------------------------------------------------------------------

    def _named(self, name: str, kind: AdapterKind, field_name: str) -> AdapterInfo:
        found = self._rows().get(name)
        if found is None or found.kind != kind:
            same_kind = [a.id for a in self._rows().values() if a.kind == kind]
            what = f"is a {KIND_NAMES[found.kind]}, not a {KIND_NAMES[kind]}" if found else "is not installed"
            raise InvalidInput(
                f"{KIND_NAMES[kind]} '{name}' {what}. Installed: {', '.join(same_kind) or 'none'} "
                "(GET /api/v1/adapters; add one with `studiolo models import PATH`).",
                code="unknown_adapter",
                details={"adapter": name, "kind": kind, "installed": same_kind, "field": field_name},
            )
        return found

    @staticmethod
    def _check_fits(adapter: AdapterInfo, model: ModelRef, model_dim: int | None) -> None:
        if not fits(adapter, model, model_dim):
            made_for = family_label(adapter.family) if adapter.family else f"a {adapter.context_dim}-wide text encoder"
            model_is = family_label(model.arch) if model.arch in _FAMILY_CONTEXT_DIM else f"{model_dim}-wide"
            raise Conflict(
                f"{KIND_NAMES[adapter.kind]} '{adapter.id}' was made for {made_for} models; '{model.id}' is "
                f"{model_is}. Choose a model of its family, or an adapter made for this one.",
                code="adapter_incompatible",
                details={
                    "adapter": adapter.id,
                    "kind": adapter.kind,
                    "adapter_family": adapter.family,
                    "model": model.id,
                    "model_family": model.arch,
                },
            )

    def _check_map_maker(self, control_type: str, index: int) -> None:
        """422 preprocessor_unavailable, before anything is queued, for a map Studiolo cannot make from a picture:
        depth without an installed depth model, pose and the others at all (engines/preprocess.py)."""
        if control_type in BUILTIN_TYPES:
            return
        installed = [a for a in self._rows().values() if a.kind == "preprocessor"]
        if control_type in MODEL_TYPES and any(a.meta.get("preprocessor") == control_type for a in installed):
            return
        needs = (
            f"an installed {control_type} preprocessor (`studiolo models import` a depth-estimation model folder)"
            if control_type in MODEL_TYPES
            else "a preprocessor Studiolo does not have"
        )
        raise InvalidInput(
            f"Studiolo cannot make a {control_type} map from a picture here: that needs {needs}. Upload a ready "
            f"{control_type} map with preprocess: false instead.",
            code="preprocessor_unavailable",
            details={"field": f"controls.{index}.preprocess", "type": control_type},
        )

    def _default_for(self, kind: AdapterKind, model: ModelRef, model_dim: int | None, **meta: str) -> AdapterInfo:
        candidates = [
            a
            for a in self._rows().values()
            if a.kind == kind and fits(a, model, model_dim) and all(a.meta.get(k) == v for k, v in meta.items())
        ]
        if not candidates:
            what = f"{KIND_NAMES[kind]}" + (f" for {', '.join(meta.values())}" if meta else "")
            raise InvalidInput(
                f"No {what} fitting '{model.id}' ({family_label(model.arch)}) is installed. Import one with "
                "`studiolo models import PATH`, or name one in the request.",
                code="adapter_not_installed",
                details={"kind": kind, "model": model.id, "family": model.arch, **meta},
            )
        return candidates[0]

    def plan(
        self,
        *,
        prompt: str,
        negative_prompt: str,
        loras: Sequence[Mapping[str, Any]],
        controls: Sequence[Mapping[str, Any]],
        reference: Mapping[str, Any] | None,
        model: ModelRef,
        capabilities: Capabilities,
    ) -> dict[str, Any]:
        """Resolve a request's adapters against ``model``; returns the job params' ``prompt_for_engine`` (the prompt
        without ``<lora:...>`` tags), ``loras``, ``embeddings``, ``controls`` and ``reference`` entries. ``loras``:
        the request's ``loras`` field (``name``/``weight``); tags in the prompt are added after them. ``controls``:
        each unit's fields (``model`` may be None); ``reference``: {"model", "strength"} or None."""
        clean_prompt, tagged = lora_tags(prompt)
        clean_negative, negative_tagged = lora_tags(negative_prompt)
        wanted: list[dict[str, Any]] = [{"name": str(x["name"]), "weight": float(x["weight"])} for x in loras]
        wanted += [{"name": str(x["name"]), "weight": float(str(x["weight"]))} for x in tagged + negative_tagged]
        rows = self._rows()
        # Reading the model's UNet config is file I/O on the submit path: done only when some adapter is to be checked.
        needs_dim = wanted or controls or reference is not None or any(a.kind == "embedding" for a in rows.values())
        model_dim = model_context_dim(model) if needs_dim else None
        need: set[str] = set()
        if wanted:
            need.add("lora")
        if controls:
            need.add("controlnet")
        if reference is not None:
            need.add("ip_adapter")
        missing = sorted(k for k in need if k not in capabilities.adapters)
        if missing:
            raise InvalidInput(
                f"Model '{model.id}' cannot take {', '.join(KIND_NAMES[k] for k in missing)} adapters.",
                code="adapters_unsupported",
                details={"model": model.id, "kinds": missing},
            )
        planned_loras: list[dict[str, Any]] = []
        for i, item in enumerate(wanted):
            lora = self._named(item["name"], "lora", f"loras.{i}.name")
            self._check_fits(lora, model, model_dim)
            # The same LoRA twice (field and tag): the later weight wins, as A1111 does.
            planned_loras = [x for x in planned_loras if x["name"] != lora.id]
            planned_loras.append({"name": lora.id, "weight": item["weight"]})
        # Embeddings are prompt words: those of the model's family that the prompts use (others are left as words,
        # as A1111 does with an embedding of another family).
        embeddings = []
        if "embedding" in capabilities.adapters:
            candidates = [a for a in rows.values() if a.kind == "embedding" and fits(a, model, model_dim)]
            used = embedding_words(f"{clean_prompt}\n{clean_negative}", [a.id for a in candidates])
            embeddings = [a.id for a in candidates if a.id in used]
        planned_controls: list[dict[str, Any]] = []
        for i, unit in enumerate(controls):
            if unit.get("model"):
                net = self._named(str(unit["model"]), "controlnet", f"controls.{i}.model")
                self._check_fits(net, model, model_dim)
            else:
                net = self._default_for("controlnet", model, model_dim, control_type=str(unit["type"]))
            if unit.get("preprocess", True):
                self._check_map_maker(str(unit["type"]), i)
            planned_controls.append({**{k: v for k, v in unit.items() if k != "image"}, "model": net.id})
        planned_reference = None
        if reference is not None:
            if reference.get("model"):
                adapter = self._named(str(reference["model"]), "ip_adapter", "reference_model")
                self._check_fits(adapter, model, model_dim)
            else:
                adapter = self._default_for("ip_adapter", model, model_dim)
            planned_reference = {"model": adapter.id, "strength": float(reference["strength"])}
        return {
            "prompt_for_engine": clean_prompt,
            "negative_for_engine": clean_negative,
            "loras": planned_loras,
            "embeddings": embeddings,
            "controls": planned_controls,
            "reference": planned_reference,
        }

    def refs(self, ids: Sequence[str]) -> list[AdapterRef]:
        """The AdapterRefs of installed adapters, for the engine; an adapter removed since the job was queued is
        ``AdapterGone`` (the job fails with adapter_unavailable)."""
        rows = self._rows()
        missing = [i for i in ids if i not in rows]
        if missing:
            self.invalidate()
            rows = self._rows()
            missing = [i for i in ids if i not in rows]
        if missing:
            raise AdapterGone(missing)
        return [rows[i].ref() for i in ids]


class AdapterGone(Exception):
    def __init__(self, ids: list[str]):
        super().__init__(f"Adapter(s) {', '.join(ids)} were removed before this job ran.")
        self.ids = ids


def _file_error(exc: Exception) -> StudioloError:
    """A ModelFileError as the API's error: 422 with its code (as the model catalog answers)."""
    code = getattr(exc, "code", "model_file_invalid")
    return InvalidInput(str(exc), code=code)
