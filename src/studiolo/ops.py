"""Operations endpoints: liveness, readiness of every configured dependency, Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from studiolo import __version__
from studiolo.deps import ServicesDep
from studiolo.metrics import ProcessMetrics, count_live_workers
from studiolo.services import Services

router = APIRouter(tags=["operations"])

Check = Callable[[], dict[str, Any]]


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process answers. Cheap, touches nothing."""
    return {"status": "ok", "version": __version__}


@router.get("/ready")
def ready(services: ServicesDep) -> JSONResponse:
    """Readiness: every configured dependency answers and at least one worker is alive to run jobs.

    Each check is reported by name (``checks``); 503 lists the failing ones (``failing``)."""
    checks = run_checks(readiness_checks(services), services.settings.ready_timeout_seconds)
    failing = sorted(name for name, result in checks.items() if not result["ok"])
    body: dict[str, Any] = {"status": "not_ready" if failing else "ready", "checks": checks}
    if failing:
        body["failing"] = failing
    return JSONResponse(body, status_code=503 if failing else 200)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text exposition of this process (no sign-in; no label names a user)."""
    process_metrics: ProcessMetrics = request.app.state.metrics
    return Response(generate_latest(process_metrics.registry), media_type=CONTENT_TYPE_LATEST)


def readiness_checks(services: Services) -> dict[str, Check]:
    """The checks that apply to this configuration, by the name they are reported under."""
    settings = services.settings
    timeout = settings.ready_timeout_seconds

    def database() -> dict[str, Any]:
        services.db.ping()
        return {"backend": "sqlite" if services.db.is_sqlite else "postgresql"}

    def storage() -> dict[str, Any]:
        services.store.check()  # S3: head_bucket, plus a write probe every few minutes
        return {"backend": services.store.name}

    def workers() -> dict[str, Any]:
        alive = count_live_workers(services.db, settings.lease_seconds)
        return {"ok": alive > 0, "alive": alive}

    checks: dict[str, Check] = {"database": database, "storage": storage, "workers": workers}
    if settings.redis_url:
        checks["redis"] = lambda: _check_redis(settings.redis_url, timeout)
    if settings.dispatch == "celery":
        checks["broker"] = lambda: _check_broker(services, timeout)
    return checks


def run_checks(checks: dict[str, Check], timeout: float) -> dict[str, dict[str, Any]]:
    """Run ``checks`` at once, each given ``timeout`` seconds: a hung dependency costs the probe one timeout,
    not one per dependency. A check passes unless it raises (reported by exception type, never its message:
    those can hold URLs with passwords), runs out of time, or returns ``ok: False``."""
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="ready")
    futures = {name: pool.submit(check) for name, check in checks.items()}
    wait(futures.values(), timeout=timeout)
    # Never wait for a hung check: its thread ends when the client library's own timeout fires.
    pool.shutdown(wait=False, cancel_futures=True)
    results: dict[str, dict[str, Any]] = {}
    for name, future in futures.items():
        if not future.done():
            results[name] = {"ok": False, "error": "timeout"}
        elif (exc := future.exception()) is not None:
            results[name] = {"ok": False, "error": type(exc).__name__}
        else:
            results[name] = {"ok": True, **future.result()}
    return results


def _check_redis(url: str, timeout: float) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()
    return {}


def _check_broker(services: Services, timeout: float) -> dict[str, Any]:
    """Connect to the Celery broker (Redis or RabbitMQ) with the app's own settings, one quick retry at most."""
    from studiolo.dispatch.celery import CeleryDispatch

    dispatch = services.dispatch
    if not isinstance(dispatch, CeleryDispatch):
        raise TypeError("STUDIOLO_DISPATCH=celery without a CeleryDispatch")
    with dispatch.app.connection_for_write(connect_timeout=timeout) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        conn.default_channel  # noqa: B018 - Redis connects lazily: opening the channel is the real check
    return {"transport": conn.transport_cls}
