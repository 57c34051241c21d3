"""Health and readiness probes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from studiolo import __version__
from studiolo.db.base import utcnow
from studiolo.deps import ServicesDep
from studiolo.domain.generation.models import WorkerRecord

router = APIRouter(tags=["operations"])


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process answers. Cheap, touches nothing."""
    return {"status": "ok", "version": __version__}


@router.get("/ready")
def ready(services: ServicesDep) -> JSONResponse:
    """Readiness: the database and storage work and at least one worker is alive to run jobs."""
    checks: dict[str, Any] = {}
    ok = True
    try:
        services.db.ping()
        checks["database"] = {"ok": True, "backend": "sqlite" if services.db.is_sqlite else "postgresql"}
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by type
        ok = False
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    try:
        services.store.check()
        checks["storage"] = {"ok": True, "backend": services.store.name}
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by type
        ok = False
        checks["storage"] = {"ok": False, "error": type(exc).__name__}
    if checks["database"]["ok"]:
        horizon = utcnow() - timedelta(seconds=services.settings.lease_seconds)
        with services.db.session() as session:
            alive = session.scalar(select(func.count()).where(WorkerRecord.last_seen_at >= horizon)) or 0
        checks["workers"] = {"ok": alive > 0, "alive": int(alive)}
        ok = ok and alive > 0
    body = {"status": "ready" if ok else "not_ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ok else 503)
