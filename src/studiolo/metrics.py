"""Prometheus metrics of one process: ``GET /metrics`` on an API process, STUDIOLO_WORKER_METRICS_PORT on a
``studiolo worker``.

Every process serves its own registry and is scraped on its own (docs/deployment.md, "Operations"); there is
no prometheus multiprocess mode. Counters and histograms count what *this* process did (sum them across
targets in queries); the queue and worker gauges are read from the shared database at scrape time, so every
process reports the same cluster-wide value (use ``max``, not ``sum``).

A registry per app rather than prometheus_client's global one: tests build many apps in one process, and the
same metric name registered twice in one registry is an error. No label carries a user id or a raw URL:
``/metrics`` needs no sign-in, and a label per URL would grow without bound.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable, Iterator
from datetime import timedelta
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from studiolo import __version__
from studiolo.db.base import utcnow
from studiolo.db.session import Database
from studiolo.domain.generation.models import Job, WorkerRecord
from studiolo.errors import StudioloError

if TYPE_CHECKING:
    from studiolo.services import Services

log = logging.getLogger(__name__)

# Most API answers take milliseconds; uploads and cold pages take seconds.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A job takes from a fraction of a second (a cached turbo model) to the job timeout (30 min by default).
JOB_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")
_QUEUE_STATUSES = ("queued", "running")  # finished jobs grow without bound: not a gauge, see jobs_finished


def count_live_workers(db: Database, lease_seconds: float) -> int:
    """Workers in any process that reported in within the lease time."""
    horizon = utcnow() - timedelta(seconds=lease_seconds)
    with db.session() as session:
        return int(session.scalar(select(func.count()).where(WorkerRecord.last_seen_at >= horizon)) or 0)


class _Redispatching(Protocol):
    redispatched: int


class WorkerMetrics:
    """What the job side of a process records: job outcomes (the JobRunner, where a job ends) and, in a
    Celery worker, the sweeper's re-dispatches."""

    def __init__(self) -> None:
        # Not registered anywhere yet: each registry serving this process registers them (``ProcessMetrics.bind``).
        self.duration = Histogram(
            "studiolo_job_duration_seconds",
            "Run time of the attempt that ended a job, from its claim to its final state.",
            ["model", "outcome"],
            buckets=JOB_BUCKETS,
            registry=None,
        )
        self.finished = Counter(
            "studiolo_jobs_finished",
            "Jobs run by this process that reached a final state.",
            ["model", "status", "error_code"],
            registry=None,
        )
        self.retries = Counter(
            "studiolo_job_retries",
            "Failed job attempts put back in the queue for another try.",
            ["model", "error_code"],
            registry=None,
        )
        self.claims = Histogram(
            "studiolo_worker_claimed_jobs",
            "Jobs taken per claim (0: the claim found none); more than 1 for batches of quick jobs.",
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=None,
        )
        self.sweeper: _Redispatching | None = None  # set by a Celery worker that runs one

    def job_ended(self, model: str, status: str, error_code: str | None, seconds: float) -> None:
        self.duration.labels(model, status).observe(seconds)
        self.finished.labels(model, status, error_code or "").inc()

    def job_retried(self, model: str, error_code: str) -> None:
        self.retries.labels(model, error_code).inc()

    def claimed(self, jobs: int) -> None:
        self.claims.observe(jobs)

    def collectors(self) -> tuple[Collector, ...]:
        return (self.duration, self.finished, self.retries, self.claims)


class StateCollector(Collector):
    """Values read when Prometheus scrapes, not kept up to date on every change: the queue (one GROUP BY over
    the active jobs, which the status index serves), live workers, and the dispatch counters."""

    def __init__(self, services: Services):
        self.services = services
        self._models_seen: set[str] = set()  # report 0, not silence, for a model whose queue emptied

    def collect(self) -> Iterator[Metric]:
        services = self.services
        build = GaugeMetricFamily("studiolo_build", "Always 1; the version in a label.", labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        yield from self._from_database()
        dispatch: Any = services.dispatch
        if dispatch.name == "celery":
            yield CounterMetricFamily(
                "studiolo_dispatch_published", "Job tokens this process published to the broker.", dispatch.published
            )
            yield CounterMetricFamily(
                "studiolo_dispatch_publish_failures",
                "Job tokens this process could not publish (the sweeper re-dispatches them).",
                dispatch.failed,
            )
        sweeper = services.runner.metrics.sweeper
        if sweeper is not None:
            yield CounterMetricFamily(
                "studiolo_sweeper_redispatched", "Job tokens the sweeper re-published.", sweeper.redispatched
            )
        if services.event_relay is not None:
            yield CounterMetricFamily(
                "studiolo_events_dropped",
                "Job events not published to Redis (clients fall back to re-reading the job).",
                services.event_relay.dropped,
            )

    def _from_database(self) -> Iterable[Metric]:
        services = self.services
        try:
            with services.db.session() as session:
                rows = session.execute(
                    select(Job.model_id, Job.status, func.count(), func.min(Job.created_at))
                    .where(Job.status.in_(_QUEUE_STATUSES))
                    .group_by(Job.model_id, Job.status)
                ).all()
            alive = count_live_workers(services.db, services.settings.lease_seconds)
        except Exception:  # a scrape must still answer (build info, counters) while the database is away
            log.warning("metrics: reading the queue failed", exc_info=True)
            return [GaugeMetricFamily("studiolo_database_up", "1 when the scrape could read the database.", 0)]
        depth = GaugeMetricFamily(
            "studiolo_queue_jobs", "Jobs queued or running, per model (whole install).", labels=["model", "status"]
        )
        oldest = GaugeMetricFamily(
            "studiolo_queue_oldest_seconds", "Age of the oldest queued job, per model.", labels=["model"]
        )
        now = utcnow()
        counts = {(model, status): (int(n), created) for model, status, n, created in rows}
        self._models_seen.update(model for model, _ in counts)
        for model in sorted(self._models_seen):
            for status in _QUEUE_STATUSES:
                n, created = counts.get((model, status), (0, None))
                depth.add_metric([model, status], n)
                if status == "queued":
                    oldest.add_metric([model], (now - created).total_seconds() if created is not None else 0.0)
        workers = GaugeMetricFamily("studiolo_workers_alive", "Workers that reported in within the lease time.", alive)
        return [
            GaugeMetricFamily("studiolo_database_up", "1 when the scrape could read the database.", 1),
            depth,
            oldest,
            workers,
        ]


class ProcessMetrics:
    """The registry one process serves: HTTP metrics (filled by ``HttpMetrics``) plus, once bound to the
    services, job metrics and the state read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_duration = Histogram(
            "studiolo_http_request_duration_seconds",
            "Time to the response's first byte, by route template and status class.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.http_rate_limited = Counter(
            "studiolo_http_rate_limited",
            "Requests refused with 429 (rate limits, lockouts).",
            ["route"],
            registry=self.registry,
        )
        self._bound: list[Collector] = []

    def bind(self, services: Services) -> None:
        """Serve ``services``' job metrics and state (again: a second lifespan re-binds, never registers twice)."""
        for collector in self._bound:
            self.registry.unregister(collector)
        moderator = services.generation.moderator
        self._bound = [
            *services.runner.metrics.collectors(),
            *(moderator.collectors() if moderator is not None else ()),
            StateCollector(services),
        ]
        for collector in self._bound:
            self.registry.register(collector)


def serve_worker_metrics(host: str, port: int) -> tuple[ProcessMetrics, WSGIServer]:
    """Expose a worker process's metrics on ``host:port`` (``studiolo worker`` has no HTTP server of its own).

    Called before the worker's start-up work, with the services bound afterwards (``ProcessMetrics.bind``), so a
    port that is taken fails at once with a clear message instead of a traceback after start-up
    (tests/integration/test_ops.py)."""
    metrics = ProcessMetrics()
    try:
        server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise StudioloError(
            f"Cannot serve worker metrics on {host}:{port}: {exc.strerror}. Set STUDIOLO_WORKER_METRICS_PORT to a "
            "free port (each worker process on a machine needs its own), or to 0 for no metrics endpoint.",
            code="port_in_use" if exc.errno == errno.EADDRINUSE else "listen_failed",
        ) from exc
    return metrics, server


def route_template(scope: Scope) -> str:
    """The template of the route that served the request (``/api/v1/jobs/{job_id}``), or ``unmatched``."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    # Recent FastAPI serves an included router's routes without copying them, so ``route.path`` lacks the
    # include prefix; it keeps the full template in its effective route context. Older versions copy each
    # route with the prefix applied, and ``route.path`` is already complete. A FastAPI that drops both would
    # give unprefixed templates: still bounded (tests/integration/test_ops.py checks the full template).
    context = scope.get("fastapi", {}).get("effective_route_context")
    template = getattr(context, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) and template else "unmatched"


class HttpMetrics:
    """Pure-ASGI middleware (BaseHTTPMiddleware costs a task and a stream per request): request latency by
    method, route template and status class.

    The route label is the matched route's template (``/api/v1/jobs/{job_id}``), read from ``scope["route"]``
    which the router sets; a request no route matched is ``unmatched``. Latency is measured to the response
    start, so an event stream that stays open for minutes still counts as the quick answer it was.
    """

    def __init__(self, app: ASGIApp, metrics: ProcessMetrics):
        self.app = app
        self.metrics = metrics
        # Our own cache of labelled children: ``Histogram.labels`` validates and locks on every call.
        self._children: dict[tuple[str, str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        observed = False

        async def send_timed(message: Message) -> None:
            nonlocal observed
            if message["type"] == "http.response.start" and not observed:
                observed = True
                self._observe(scope, message["status"], perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        except Exception:
            if not observed:  # the server turns it into a 500 outside this middleware
                self._observe(scope, 500, perf_counter() - start)
            raise

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = route_template(scope)
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        key = (method, route, _STATUS_CLASSES[status // 100] if 0 <= status < 600 else "5xx")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.metrics.http_duration.labels(*key)
        child.observe(seconds)
        if status == 429:
            self.metrics.http_rate_limited.labels(route).inc()
