"""The AUTOMATIC1111 face's view of a user's work in progress (GET /progress), and the user's chosen checkpoint.

A1111 has one global job; Studiolo has a queue per user, so /progress reports the caller's newest running job (or
newest queued one) and ``job_count`` counts the caller's unfinished jobs: idle is ``progress 0, job_count 0``, what
webuiapi's util_wait_for_ready and SillyTavern poll for. Live previews are kept per job while a txt2img/img2img
call of this face follows it (the engine draws previews only while someone listens), the newest one only.
"""

from __future__ import annotations

import base64
import io
import os
import sys
import threading
from datetime import datetime
from typing import Any

from PIL import Image
from sqlalchemy import select, update

from studiolo.compat.a1111_info import checkpoint_title, model_hash
from studiolo.compat.a1111_models import model_id_of
from studiolo.db.base import utcnow
from studiolo.domain.accounts.models import User
from studiolo.domain.generation.catalog import draws_images
from studiolo.domain.generation.models import Job
from studiolo.errors import NotFound
from studiolo.services import Services

_ACTIVE = ("running", "queued")


class LivePreviews:
    """The newest preview (a ``data:`` URL) of each job followed by this face, dropped when the follow ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_job: dict[str, str] = {}

    def put(self, job_id: str, data_url: str) -> None:
        with self._lock:
            self._by_job[job_id] = data_url

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._by_job.pop(job_id, None)

    def png_base64(self, job_id: str) -> str | None:
        """The job's newest preview as raw base64 PNG (A1111's ``current_image``), or None."""
        with self._lock:
            data_url = self._by_job.get(job_id)
        if data_url is None:
            return None
        raw = base64.b64decode(data_url.partition(",")[2])
        with Image.open(io.BytesIO(raw)) as image:
            out = io.BytesIO()
            image.save(out, format="PNG")
        return base64.b64encode(out.getvalue()).decode("ascii")


def active_jobs(services: Services, owner_id: str) -> list[tuple[str, str]]:
    """The caller's unfinished jobs as (id, status), running ones first, newest first."""
    with services.db.session() as session:
        rows = session.execute(
            select(Job.id, Job.status).where(Job.owner_id == owner_id, Job.status.in_(_ACTIVE)).order_by(Job.id.desc())
        ).all()
    return sorted(((str(i), str(s)) for i, s in rows), key=lambda row: row[1] != "running")


def _timestamp(moment: datetime | None) -> str:
    return (moment or utcnow()).strftime("%Y%m%d%H%M%S")


def progress(services: Services, previews: LivePreviews, owner_id: str, *, skip_image: bool) -> dict[str, Any]:
    """GET /progress in A1111's shape for the caller."""
    jobs = active_jobs(services, owner_id)
    state: dict[str, Any] = {
        "skipped": False,
        "interrupted": False,
        "stopping_generation": False,
        "job": "",
        "job_count": len(jobs),
        "job_timestamp": _timestamp(None),
        "job_no": 0,
        "sampling_step": 0,
        "sampling_steps": 0,
    }
    if not jobs:
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
    view = services.generation.get(owner_id, jobs[0][0])
    done, total = view.progress.steps_done()
    fraction = min(done / total, 0.99) if total and view.status == "running" else 0.0
    # A1111 starts its bar at 0.01 as soon as a job is taken, so a client never reads "idle" while one waits.
    fraction = max(fraction, 0.01)
    eta = 0.0
    if view.started_at is not None and done and total:
        elapsed = (utcnow() - view.started_at).total_seconds()
        eta = max(elapsed / (done / total) - elapsed, 0.0)
    state.update(
        job=f"studiolo-{view.id}",
        job_timestamp=_timestamp(view.started_at or view.created_at),
        sampling_step=view.progress.step,
        sampling_steps=view.progress.total,
        stopping_generation=False,
    )
    text = view.progress.text() if view.status == "running" else f"Queued ({view.queue_position or 1} in line)"
    image = None if skip_image else previews.png_base64(view.id)
    return {"progress": fraction, "eta_relative": eta, "state": state, "current_image": image, "textinfo": text}


def current_model(services: Services, user_id: str) -> str:
    """The user's checkpoint: the one they chose (POST /options) while it is installed, else the install's default."""
    with services.db.session() as session:
        chosen = session.scalar(select(User.default_model).where(User.id == user_id))
    drawing = {m.id for m in services.catalog.models() if draws_images(m.arch)}
    return chosen if chosen in drawing else services.catalog.default_model_id()


def find_model(services: Services, title: str) -> str:
    """The model id a checkpoint title, name or short hash names (any case); NotFound ``model_not_found``."""
    wanted = model_id_of(title).lower()
    drawing = [m.id for m in services.catalog.models() if draws_images(m.arch)]
    for model_id in drawing:
        keys = {model_id.lower(), checkpoint_title(model_id).lower(), model_hash(model_id)[:10], model_hash(model_id)}
        if wanted in keys or title.strip().lower() in keys:
            return model_id
    raise NotFound(
        f"No checkpoint {title!r}. GET /sdapi/v1/sd-models lists them.",
        code="model_not_found",
        details={"field": "sd_model_checkpoint", "value": title, "known": [checkpoint_title(m) for m in drawing]},
    )


def set_current_model(services: Services, user_id: str, title: str) -> None:
    """POST /options ``sd_model_checkpoint``: the caller's own choice; other users keep theirs."""
    model_id = find_model(services, title)
    with services.db.session() as session:
        session.execute(update(User).where(User.id == user_id).values(default_model=model_id))


def memory() -> dict[str, Any]:
    """GET /memory: the host's RAM (from /proc/meminfo where there is one) and the GPU's when torch uses one."""
    ram: dict[str, Any]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.split()[1:2]}
        total, free = fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
        ram = {"free": free, "used": total - free, "total": total}
    except (OSError, KeyError, ValueError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        ram = {"free": None, "used": None, "total": total}
    torch = sys.modules.get("torch")  # never imported here just to answer: it takes seconds
    cuda: dict[str, Any] = {"error": "no CUDA device in use by this process"}
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        free_b, total_b = torch.cuda.mem_get_info()
        cuda = {"system": {"free": free_b, "used": total_b - free_b, "total": total_b}}
    return {"ram": ram, "cuda": cuda}
