"""Operations: Prometheus /metrics, JSON logs carrying request and job ids, /ready for every dependency."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from studiolo.app import create_app
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.logs import JsonFormatter, configure_logging
from studiolo.metrics import serve_worker_metrics
from studiolo.ops import run_checks
from studiolo.services import Services, build_services
from studiolo.settings import Settings
from tests.helpers import auth_headers, drain

LOCAL_REDIS = "redis://localhost:6379/0"
LOCAL_RABBITMQ = "amqp://guest:guest@localhost:5672//"
CLOSED_REDIS = "redis://127.0.0.1:1/0"  # port 1: nothing listens, the connection is refused at once


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` in a text exposition, keyed by their sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def scrape(client: TestClient) -> str:
    """GET /metrics the way Prometheus does: no credentials."""
    response = client.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def generate(client: TestClient) -> str:
    response = client.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "steps": 2})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


# --- metrics ----------------------------------------------------------------------------------------------


def test_http_latency_is_labelled_by_route_template_never_the_raw_url(client: TestClient) -> None:
    for n in range(3):
        assert client.get(f"/api/v1/jobs/no-such-job-{n}").status_code == 404
    assert client.get("/health").status_code == 200
    assert client.get("/no/such/page/abc123").status_code == 404

    text = scrape(client)
    counts = samples(text, "studiolo_http_request_duration_seconds_count")
    assert counts[(("method", "GET"), ("route", "/api/v1/jobs/{job_id}"), ("status", "4xx"))] == 3
    assert counts[(("method", "GET"), ("route", "/health"), ("status", "2xx"))] == 1
    assert counts[(("method", "GET"), ("route", "unmatched"), ("status", "4xx"))] == 1
    assert "no-such-job" not in text and "abc123" not in text


def test_job_metrics_after_a_job_runs(client: TestClient, services: Services) -> None:
    generate(client)
    assert drain(services) == 1

    text = scrape(client)
    finished = samples(text, "studiolo_jobs_finished_total")
    assert finished == {(("error_code", ""), ("model", "echo"), ("status", "succeeded")): 1}
    durations = samples(text, "studiolo_job_duration_seconds_count")
    assert durations == {(("model", "echo"), ("outcome", "succeeded")): 1}
    # Two claims: the one that took the job and the one that found the queue empty.
    assert samples(text, "studiolo_worker_claimed_jobs_count") == {(): 2}
    assert samples(text, "studiolo_worker_claimed_jobs_sum") == {(): 1}


def test_failed_and_canceled_jobs_are_counted_with_their_code(client: TestClient, services: Services) -> None:
    canceled = generate(client)
    client.post(f"/api/v1/jobs/{canceled}/cancel")  # a queued job is canceled at once, without a worker
    job_id = generate(client)
    with services.db.session() as session:
        from studiolo.domain.generation.models import Job

        session.get_one(Job, job_id).model_id = "gone/model"  # the model disappeared after submission
    drain(services)

    finished = samples(scrape(client), "studiolo_jobs_finished_total")
    assert finished == {(("error_code", "model_unavailable"), ("model", "gone/model"), ("status", "failed")): 1}


def test_queue_depth_per_model_is_read_at_scrape_time(client: TestClient, services: Services) -> None:
    generate(client)
    generate(client)
    depth = samples(scrape(client), "studiolo_queue_jobs")
    assert depth[(("model", "echo"), ("status", "queued"))] == 2
    assert depth[(("model", "echo"), ("status", "running"))] == 0
    assert samples(scrape(client), "studiolo_workers_alive") == {(): 0}

    drain(services)
    depth = samples(scrape(client), "studiolo_queue_jobs")
    assert depth[(("model", "echo"), ("status", "queued"))] == 0  # zero, not a series that vanished
    assert samples(scrape(client), "studiolo_queue_oldest_seconds") == {(("model", "echo"),): 0}

    services.start_workers(1, claim_loops=False)
    assert samples(scrape(client), "studiolo_workers_alive") == {(): 1}


def test_metrics_need_no_sign_in_and_name_no_user(client: TestClient, services: Services) -> None:
    generate(client)
    drain(services)
    anonymous = TestClient(client.app)
    assert anonymous.get("/api/v1/jobs").status_code == 401
    response = anonymous.get("/metrics")
    assert response.status_code == 200
    assert LOCAL_USER_ID not in response.text
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_rate_limit_refusals_are_counted(settings_factory: Any) -> None:
    services = build_services(
        settings_factory(rate_limits_enabled=True, rate_limit_generate="1/minute"), upgrade_db=False
    )
    try:
        with TestClient(create_app(services=services, start_workers=False)) as api:
            api.headers.update(auth_headers(services))
            generate(api)
            refused = api.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "steps": 2})
            assert refused.status_code == 429
            assert samples(scrape(api), "studiolo_http_rate_limited_total") == {(("route", "/api/v1/generations"),): 1}
    finally:
        services.close(timeout=10)


def test_each_app_has_its_own_registry(services: Services) -> None:
    """Many apps in one process (tests, several TestClients) must not collide in a global registry."""
    first = TestClient(create_app(services=services, start_workers=False))
    second = TestClient(create_app(services=services, start_workers=False))
    first.get("/health")
    assert samples(scrape(second), "studiolo_http_request_duration_seconds_count") == {}


def test_a_worker_process_serves_its_metrics_on_its_own_port(client: TestClient, services: Services) -> None:
    generate(client)
    drain(services)
    generate(client)  # waiting
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics, server = serve_worker_metrics("127.0.0.1", port)
    metrics.bind(services)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        server.shutdown()
        server.server_close()
    assert samples(text, "studiolo_jobs_finished_total") == {
        (("error_code", ""), ("model", "echo"), ("status", "succeeded")): 1
    }
    assert samples(text, "studiolo_queue_jobs")[(("model", "echo"), ("status", "queued"))] == 1


# --- logs -------------------------------------------------------------------------------------------------


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Everything logged during the test, as the JSON formatter writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_in_a_request_carry_its_request_id(client: TestClient, json_lines: io.StringIO) -> None:
    def noisy() -> dict[str, str]:  # a sync handler: runs in the thread pool, which must copy the context
        logging.getLogger("studiolo.test").info("inside %s", "handler", extra={"answer": 42})
        return {}

    client.app.add_api_route("/_noisy", noisy)  # type: ignore[attr-defined]
    client.get("/_noisy", headers={"X-Request-ID": "req-123"})

    [line] = [entry for entry in parsed(json_lines) if entry["logger"] == "studiolo.test"]
    assert line["request_id"] == "req-123"
    assert line["message"] == "inside handler" and line["answer"] == 42 and line["level"] == "INFO"
    assert line["ts"].endswith("+00:00")


def test_log_lines_of_a_running_job_carry_job_and_worker_ids(
    client: TestClient, services: Services, json_lines: io.StringIO
) -> None:
    def crash(*_: Any, **__: Any) -> Any:
        raise RuntimeError("engine exploded")

    services.engines["echo"].generate = crash  # type: ignore[method-assign]
    job_id = generate(client)
    drain(services, worker_id="w-1")

    crashes = [entry for entry in parsed(json_lines) if entry["message"] == "job crashed"]
    assert crashes, json_lines.getvalue()
    assert all(entry["job_id"] == job_id and entry["worker_id"] == "w-1" for entry in crashes)
    assert "RuntimeError: engine exploded" in crashes[0]["exc"]
    assert "request_id" not in crashes[0]  # the worker runs outside any request


def test_configure_logging_routes_uvicorn_access_lines_as_json(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        configure_logging(settings.model_copy(update={"log_format": "json"}))
        configure_logging(settings.model_copy(update={"log_format": "json"}))  # again: replaced, not doubled
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/health", "1.1", 200
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    [line] = [json.loads(x) for x in capsys.readouterr().err.splitlines() if "uvicorn.access" in x]
    assert line["method"] == "GET" and line["path"] == "/health" and line["status"] == 200
    assert line["message"] == '127.0.0.1:5000 - "GET /health HTTP/1.1" 200'


def test_serve_writes_json_access_lines_with_the_request_id(tmp_path: Path, migrated_db_template: Path) -> None:
    """The real `studiolo serve`: uvicorn's own access log reaches our JSON handler, with the request id."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_file = tmp_path / "serve.log"
    env = os.environ | {
        "STUDIOLO_DATA_DIR": str(tmp_path / "data"),
        "STUDIOLO_LOG_FORMAT": "json",
        "STUDIOLO_ENABLE_ECHO_ENGINE": "1",
        "STUDIOLO_DEFAULT_MODEL": "echo",
        "STUDIOLO_INLINE_WORKERS": "0",
    }
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "studiolo", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_file.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", headers={"X-Request-ID": "probe-7"}).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    lines = [json.loads(x) for x in log_file.read_text().splitlines() if x.startswith("{")]
    access = [x for x in lines if x["logger"] == "uvicorn.access" and x.get("request_id") == "probe-7"]
    assert access and access[0]["path"] == "/health" and access[0]["status"] == 200, lines
    assert any(x["logger"] == "uvicorn.error" for x in lines)  # "Application startup complete" and the like


# --- readiness --------------------------------------------------------------------------------------------


@pytest.fixture
def ready_client(settings_factory: Any) -> Iterator[Any]:
    """Build services for the given settings, with one live worker, and GET /ready."""
    built: list[Services] = []

    def get_ready(**overrides: Any) -> httpx.Response:
        services = build_services(settings_factory(**overrides), upgrade_db=False)
        built.append(services)
        services.start_workers(1, claim_loops=False)  # liveness rows only: readiness is about dependencies here
        return TestClient(create_app(services=services, start_workers=False)).get("/ready")

    yield get_ready
    for services in built:
        services.close(timeout=10)


def test_ready_with_only_the_embedded_dependencies(ready_client: Any) -> None:
    response = ready_client()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready" and "failing" not in body
    assert set(body["checks"]) == {"database", "storage", "workers"}
    backend = "postgresql" if os.environ.get("STUDIOLO_TEST_DATABASE_URL") else "sqlite"
    assert body["checks"]["database"] == {"ok": True, "backend": backend}
    assert body["checks"]["storage"] == {"ok": True, "backend": "local"}
    assert body["checks"]["workers"] == {"ok": True, "alive": 1}


def test_ready_reports_an_unreachable_redis_and_broker_by_name(ready_client: Any) -> None:
    # The broker defaults to STUDIOLO_REDIS_URL: both are down.
    response = ready_client(redis_url=CLOSED_REDIS, dispatch="celery")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready" and body["failing"] == ["broker", "redis"]
    assert body["checks"]["redis"] == {"ok": False, "error": "ConnectionError"}
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["database"]["ok"] and body["checks"]["workers"]["ok"]
    assert "127.0.0.1:1" not in response.text  # errors are reported by type, never with their URL


def test_ready_reports_an_unreachable_rabbitmq(ready_client: Any) -> None:
    response = ready_client(redis_url=LOCAL_REDIS, dispatch="celery", broker_url="amqp://guest:guest@127.0.0.1:1//")
    assert response.status_code == 503
    assert response.json()["failing"] == ["broker"]
    assert "guest" not in response.text


@pytest.mark.parametrize("broker", [LOCAL_REDIS, LOCAL_RABBITMQ])
def test_ready_with_real_redis_and_broker(ready_client: Any, broker: str) -> None:
    response = ready_client(redis_url=LOCAL_REDIS, dispatch="celery", broker_url=broker)
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["redis"] == {"ok": True}
    assert checks["broker"] == {"ok": True, "transport": broker.split(":")[0]}


def test_a_hung_check_is_reported_as_a_timeout_without_holding_the_others() -> None:
    release = threading.Event()
    try:
        results = run_checks({"hung": lambda: {"waited": release.wait(30)}, "fine": dict}, timeout=0.2)
    finally:
        release.set()
    assert results == {"hung": {"ok": False, "error": "timeout"}, "fine": {"ok": True}}


def test_a_worker_metrics_port_in_use_is_a_clear_error_before_start_up(tmp_path: Path) -> None:
    """`studiolo worker` with a taken STUDIOLO_WORKER_METRICS_PORT says so and exits 1, before it builds anything
    (it used to start up, then die with a traceback from the metrics server)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "STUDIOLO_DATA_DIR": str(tmp_path / "data"),
            "STUDIOLO_WORKER_METRICS_PORT": str(port),
            "STUDIOLO_HOST": "127.0.0.1",
        }
        result = subprocess.run(
            [sys.executable, "-m", "studiolo", "worker"], env=env, capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "port_in_use" in result.stderr and "STUDIOLO_WORKER_METRICS_PORT" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "data" / "studiolo.db").exists()  # nothing was started
