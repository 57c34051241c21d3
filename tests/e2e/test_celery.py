"""Celery dispatch for real: `studiolo worker` subprocesses fed through a real broker (Redis, RabbitMQ), jobs
submitted in-process through the same services the API uses, the database as the source of truth."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from amqp.exceptions import ChannelError
from kombu import Connection
from sqlalchemy import func, select

from studiolo.dispatch.celery import CeleryDispatch, queue_name
from studiolo.dispatch.redis_events import RedisEventRelay
from studiolo.domain.accounts.ratelimit import RateLimiter
from studiolo.domain.gallery.models import Image
from studiolo.domain.generation.events import EventBus
from studiolo.domain.generation.models import Job
from studiolo.errors import RateLimited
from studiolo.services import Services, build_services
from studiolo.settings import Settings
from tests.e2e.conftest import Launcher, Proc, echo_env
from tests.helpers import submit, wait_terminal

pytestmark = pytest.mark.slow

REDIS_BASE = os.environ.get("STUDIOLO_TEST_REDIS", "redis://localhost:6379")
RABBIT = os.environ.get("STUDIOLO_TEST_AMQP", "amqp://guest:guest@localhost:5672//")
REDIS_DB = 11  # a database of its own on the shared local Redis, flushed before each test
COMMON: dict[str, Any] = {
    "dispatch": "celery",
    "lease_seconds": 2.0,
    "heartbeat_seconds": 0.3,
    "retry_backoff_seconds": 0.1,
    "sweep_seconds": 0.5,
}


def _purge_rabbit() -> None:
    with Connection(RABBIT) as conn:
        channel = conn.default_channel
        for model in ("echo", "studiolo-demo", ""):
            try:
                channel.queue_purge(queue_name(model))
            except ChannelError:  # not declared yet: nothing to purge (and the channel is closed)
                channel = conn.channel()


@pytest.fixture
def redis_url() -> str:
    url = f"{REDIS_BASE}/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


def make_services(tmp_path: Path, **overrides: Any) -> Services:
    settings = Settings(
        env="test",
        data_dir=tmp_path / "data",
        enable_echo_engine=True,
        default_model="echo",
        inline_workers=0,
        **{**COMMON, **overrides},
    )
    return build_services(settings)


def start_worker(launcher: Launcher, svc: Services, tmp_path: Path, *args: str, **overrides: Any) -> Proc:
    values = {**COMMON, "echo_step_delay": 0.01, **overrides}
    env = echo_env(svc.settings.data_dir, **values)
    return launcher.start(["worker", *args], env, tmp_path)


def image_rows(svc: Services, job_id: str) -> int:
    with svc.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Image).where(Image.job_id == job_id)) or 0)


@pytest.fixture
def closing() -> Iterator[list[Services]]:
    opened: list[Services] = []
    yield opened
    for svc in opened:
        svc.close(timeout=10)


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_jobs_run_exactly_once_through_the_broker(
    broker: str, tmp_path: Path, launcher: Launcher, redis_url: str, closing: list[Services]
) -> None:
    broker_url = redis_url if broker == "redis" else RABBIT
    if broker == "rabbitmq":
        _purge_rabbit()
    svc = make_services(tmp_path, broker_url=broker_url)
    closing.append(svc)
    workers = [start_worker(launcher, svc, tmp_path, broker_url=broker_url) for _ in range(2)]
    ids = [submit(svc, steps=3, n=2) for _ in range(20)]
    views = [wait_terminal(svc, job_id, timeout=120) for job_id in ids]
    assert {v.status for v in views} == {"succeeded"}
    assert all(v.attempts == 1 for v in views)
    assert all(image_rows(svc, job_id) == 2 for job_id in ids)
    assert isinstance(svc.dispatch, CeleryDispatch) and svc.dispatch.failed == 0
    for w in workers:
        assert w.stop() == 0, w.output()


def test_a_job_accepted_while_the_broker_is_down_runs_once_it_is_back(
    tmp_path: Path, launcher: Launcher, redis_url: str, closing: list[Services]
) -> None:
    # The API process cannot reach its broker (closed port): submitting still succeeds at once, the row is
    # committed, and the publish fails in the background. The workers' sweeper finds the job and re-dispatches it.
    api = make_services(tmp_path, broker_url="redis://127.0.0.1:1/0")
    closing.append(api)
    started = time.monotonic()
    ids = [submit(api, steps=2) for _ in range(5)]
    assert time.monotonic() - started < 5.0  # generous: the point is "not blocked on the broker"
    assert isinstance(api.dispatch, CeleryDispatch)
    api.dispatch.flush(timeout=30)
    assert api.dispatch.failed == 5 and api.dispatch.published == 0
    start_worker(launcher, api, tmp_path, broker_url=redis_url)
    assert {wait_terminal(api, job_id, timeout=120).status for job_id in ids} == {"succeeded"}


def test_workers_serve_only_their_model_queues(
    tmp_path: Path, launcher: Launcher, redis_url: str, closing: list[Services]
) -> None:
    svc = make_services(tmp_path, broker_url=redis_url)
    closing.append(svc)
    start_worker(launcher, svc, tmp_path, "--queues", "echo", broker_url=redis_url)
    echo_job = submit(svc, steps=2)
    demo_job = submit(svc, model="studiolo-demo", steps=2)
    assert wait_terminal(svc, echo_job, timeout=120).status == "succeeded"
    time.sleep(2.0)  # several sweeps: the demo job's token waits in its own queue, nobody takes it
    assert svc.generation.get("00000000-0000-7000-8000-000000000001", demo_job).status == "queued"
    assert isinstance(svc.dispatch, CeleryDispatch)
    # One token (two if a sweep ran in the millisecond between the job's commit and its own publish): the
    # sweeper only makes up a shortfall, so four sweeps later there is no pile-up.
    assert 1 <= svc.dispatch.pending("studiolo-demo") <= 2


def test_a_worker_killed_mid_job_loses_nothing(
    tmp_path: Path, launcher: Launcher, redis_url: str, closing: list[Services]
) -> None:
    svc = make_services(tmp_path, broker_url=redis_url)
    closing.append(svc)
    doomed = start_worker(launcher, svc, tmp_path, broker_url=redis_url, echo_step_delay=0.05)
    job_id = submit(svc, steps=100, n=2)
    deadline = time.monotonic() + 60
    while svc.generation.get("00000000-0000-7000-8000-000000000001", job_id).status != "running":
        assert time.monotonic() < deadline, doomed.output()
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.popen.wait(10)
    start_worker(launcher, svc, tmp_path, broker_url=redis_url)
    view = wait_terminal(svc, job_id, timeout=120)
    assert view.status == "succeeded" and view.attempts == 2
    assert image_rows(svc, job_id) == 2
    with svc.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.status != "succeeded")) == 0


def test_job_events_cross_processes_through_redis(redis_url: str) -> None:
    worker_bus, api_bus = EventBus(), EventBus()
    worker_side = RedisEventRelay(redis_url, worker_bus)
    api_side = RedisEventRelay(redis_url, api_bus)
    worker_bus.relay = worker_side.publish
    api_side.start()
    received: list[dict[str, Any]] = []
    api_bus.subscribe("job-1", received.append)
    try:
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:  # the subscription needs a moment to be live
            worker_bus.publish("job-1", {"type": "progress", "step": 1, "total": 3})
            time.sleep(0.1)
        worker_bus.publish("job-1", {"type": "succeeded"})
        while received[-1]["type"] != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received[0] == {"type": "progress", "step": 1, "total": 3}
        assert received[-1] == {"type": "succeeded"}
        worker_bus.publish("job-2", {"type": "succeeded"})  # nobody listens to job-2 here: not delivered
    finally:
        api_side.close()
        worker_side.close()


def test_rate_limits_are_shared_through_redis(redis_url: str) -> None:
    settings = Settings(env="test", redis_url=redis_url, rate_limit_login="3/minute")
    first, second = RateLimiter(settings), RateLimiter(settings)  # two API processes
    first.hit("login", "ip:10.0.0.1")
    second.hit("login", "ip:10.0.0.1")
    first.hit("login", "ip:10.0.0.1")
    with pytest.raises(RateLimited) as refused:
        second.hit("login", "ip:10.0.0.1")
    assert refused.value.retry_after >= 1
    second.hit("login", "ip:10.0.0.2")  # another address has its own budget
