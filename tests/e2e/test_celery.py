"""Celery dispatch for real: `studiolo worker` subprocesses fed through a real broker (Redis, RabbitMQ), jobs
submitted in-process through the same services the API uses, the database as the source of truth."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from amqp.exceptions import ChannelError
from kombu import Connection
from sqlalchemy import func, select

from studiolo.dispatch.celery import CeleryDispatch, queue_name
from studiolo.dispatch.redis_events import CHANNEL, RedisEventRelay
from studiolo.dispatch.sweeper import Sweeper
from studiolo.domain.accounts.ratelimit import RateLimiter
from studiolo.domain.gallery.models import Image
from studiolo.domain.generation.events import EventBus
from studiolo.domain.generation.models import Job
from studiolo.errors import RateLimited
from studiolo.services import Services
from studiolo.settings import Settings
from tests.e2e.conftest import Launcher, Proc, echo_env, echo_services
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
    "sweep_grace_seconds": 1.0,
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
    return echo_services(tmp_path / "data", **{**COMMON, **overrides})


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


@contextmanager
def relayed(
    redis_url: str, job_id: str, first: dict[str, Any]
) -> Iterator[tuple[EventBus, RedisEventRelay, list[dict[str, Any]]]]:
    """A worker's bus relaying to an API process's bus that listens to ``job_id``, once the subscription is live
    (``first`` is published until it arrives; it is the first of the received events). Yields (worker bus, worker
    relay, events received)."""
    worker_bus, api_bus = EventBus(), EventBus()
    worker_side, api_side = RedisEventRelay(redis_url, worker_bus), RedisEventRelay(redis_url, api_bus)
    worker_bus.relay = worker_side.publish
    api_side.start()
    received: list[dict[str, Any]] = []
    api_bus.subscribe(job_id, received.append)
    try:
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:  # the subscription needs a moment to be live
            worker_bus.publish(job_id, first)
            time.sleep(0.1)
        yield worker_bus, worker_side, received
    finally:
        api_side.close()
        worker_side.close()


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_job_events_cross_processes_through_redis(redis_url: str) -> None:
    with relayed(redis_url, "job-1", {"type": "progress", "step": 1, "total": 3}) as (worker_bus, _, received):
        worker_bus.publish("job-1", {"type": "succeeded"})
        wait_for(lambda: received[-1]["type"] == "succeeded")
        assert received[0] == {"type": "progress", "step": 1, "total": 3}
        assert received[-1] == {"type": "succeeded"}
        worker_bus.publish("job-2", {"type": "succeeded"})  # nobody listens to job-2 here: not delivered


def test_a_burst_of_events_arrives_complete_and_in_order(redis_url: str) -> None:
    # Published from one background thread, packed into few messages: the caller never waits for Redis, nothing is
    # reordered, and every API process receives a message per batch of events, not one per event.
    raw = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    raw.subscribe(CHANNEL)
    with relayed(redis_url, "job-b", {"type": "started"}) as (worker_bus, worker_side, received):
        while raw.get_message(timeout=0.1) is not None:  # the messages sent while the subscription came up
            pass
        received.clear()
        for step in range(1, 2001):
            worker_bus.publish("job-b", {"type": "progress", "step": step, "total": 2000})
        assert worker_side.flush(10)
        wait_for(lambda: len(received) >= 2000)
        assert [e["step"] for e in received] == list(range(1, 2001))
        assert worker_side.dropped == 0
        messages = 0
        while raw.get_message(timeout=0.5) is not None:
            messages += 1
        assert 1 <= messages <= 400, messages  # ~10 when idle; the bound leaves room for a loaded machine
    raw.close()


def test_relayed_messages_are_bounded_in_size_and_old_or_foreign_ones_do_not_stop_the_listener(
    redis_url: str,
) -> None:
    big = "x" * 150_000  # a few of these would make one message too large: each goes in its own
    with relayed(redis_url, "job-s", {"type": "started"}) as (worker_bus, worker_side, received):
        received.clear()
        raw = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        raw.subscribe(CHANNEL)
        wait_for(lambda: raw.get_message(timeout=0.1) is None)

        def got() -> list[dict[str, Any]]:  # a late copy of the subscription probe ("started") may still arrive
            return [e for e in received if e["type"] != "started"]

        for n in range(3):
            worker_bus.publish("job-s", {"type": "preview", "n": n, "image": big})
        assert worker_side.flush(10)
        wait_for(lambda: len(got()) >= 3)
        assert [e["n"] for e in got()] == [0, 1, 2]
        sizes = []
        while (message := raw.get_message(timeout=0.5)) is not None:
            sizes.append(len(message["data"]))
        assert len(sizes) == 3 and max(sizes) < 200_000, sizes
        raw.close()

        # Earlier releases sent one event per message; something else on the channel is skipped, not fatal.
        publisher = redis.Redis.from_url(redis_url)
        publisher.publish(CHANNEL, json.dumps({"o": "old-worker", "j": "job-s", "e": {"type": "progress", "step": 1}}))
        publisher.publish(CHANNEL, b"not json at all")
        publisher.publish(CHANNEL, json.dumps({"o": "other", "b": "not a list of events"}))
        worker_bus.publish("job-s", {"type": "succeeded"})
        wait_for(lambda: got()[-1]["type"] == "succeeded")
        assert [e["type"] for e in got()[3:]] == ["progress", "succeeded"]
        publisher.close()


def test_events_for_an_unreachable_redis_are_dropped_without_blocking() -> None:
    relay = RedisEventRelay("redis://127.0.0.1:1/0", EventBus())
    try:
        started = time.monotonic()
        for step in range(100):
            relay.publish("job-x", {"type": "progress", "step": step})
        assert time.monotonic() - started < 1.0  # the caller only appends to the outbox
        assert relay.flush(10)
        assert relay.dropped == 100
    finally:
        relay.close()


def test_the_sweeper_resends_only_tokens_missing_for_longer_than_the_grace(
    tmp_path: Path, redis_url: str, closing: list[Services]
) -> None:
    # No worker runs: the job's own token waits in the broker. Take it out, as a broker restart would.
    svc = make_services(tmp_path, broker_url=redis_url)
    closing.append(svc)
    assert isinstance(svc.dispatch, CeleryDispatch)
    job_id = submit(svc, steps=1)
    assert svc.dispatch.flush(10) and svc.dispatch.pending("echo") == 1
    redis.Redis.from_url(redis_url).delete(queue_name("echo"))
    sweeper = Sweeper(svc.db, svc.dispatch, grace_seconds=30)
    assert sweeper.sweep() == 0  # ready for less than the grace: its token may still be on its way
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.run_after = job.run_after - timedelta(seconds=60)
    assert sweeper.sweep() == 1
    assert svc.dispatch.pending("echo") == 1
    assert sweeper.sweep() == 0  # the shortfall is made up once, not per sweep


def test_a_burst_of_jobs_waits_behind_one_token_per_model(
    tmp_path: Path, redis_url: str, closing: list[Services]
) -> None:
    # No worker runs. With the token gate, the first job's token stands for all: the worker that takes it clears
    # the flag, claims a batch and passes a token on while more wait (celery_worker.run_next).
    svc = make_services(tmp_path, broker_url=redis_url)
    closing.append(svc)
    assert isinstance(svc.dispatch, CeleryDispatch) and svc.dispatch.gate is not None
    for _ in range(30):
        submit(svc, steps=1)
    assert svc.dispatch.flush(10)
    assert svc.dispatch.pending("echo") == 1
    svc.dispatch.token_taken("echo")  # as a worker does before it claims
    submit(svc, steps=1)
    assert svc.dispatch.flush(10)
    assert svc.dispatch.pending("echo") == 2  # the flag was clear: this job sent a token of its own


def test_the_token_gate_lives_in_redis_only(tmp_path: Path, redis_url: str) -> None:
    def dispatch_for(**overrides: Any) -> CeleryDispatch:
        return CeleryDispatch(Settings(env="test", data_dir=tmp_path, dispatch="celery", **overrides))

    rabbit_alone = dispatch_for(broker_url=RABBIT)
    rabbit_with_redis = dispatch_for(broker_url=RABBIT, redis_url=redis_url)
    on_redis = dispatch_for(broker_url=redis_url)
    try:
        assert rabbit_alone.gate is None  # one token per job, as before
        assert rabbit_with_redis.gate is not None and on_redis.gate is not None
    finally:
        for d in (rabbit_alone, rabbit_with_redis, on_redis):
            d.close()


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
