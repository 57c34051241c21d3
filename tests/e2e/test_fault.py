"""The scale-out fault test: the production shape on localhost, broken on purpose while it works.

PostgreSQL (a fresh database), a private Redis (broker, job events, shared counters), an S3 server (moto,
real HTTP), 2 API processes and 3 Celery worker processes. 300 jobs (the no-op echo engine and a tiny real
diffusers pipeline, mixed) are submitted by 10 concurrent clients, each following its jobs' event streams.
Meanwhile one worker is SIGKILLed mid-job, Redis is restarted (every queued broker message is lost with it)
and one API process is restarted. Afterwards: every accepted job succeeded exactly once, every image has
exactly one row and its files in the bucket, the bucket holds nothing else, and every client saw a terminal
event or could fetch the final status.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from studiolo.domain.gallery.models import Image
from studiolo.domain.generation.models import Job
from tests.conftest import PgDatabases
from tests.e2e.conftest import Launcher, Proc, Server, free_port, run_cli, studiolo_env
from tests.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, MotoS3Server, new_bucket_name, remove_bucket

pytestmark = pytest.mark.slow

PG_SERVER = os.environ.get("STUDIOLO_TEST_DATABASE_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
JOBS, CLIENTS, TINY_EVERY = 300, 10, 10  # every 10th job runs the tiny diffusers pipeline
TERMINAL = {"succeeded", "failed", "canceled"}


class RedisServer:
    """A private redis-server on a free port, so the test can restart it without disturbing anyone."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                import redis

                redis.Redis.from_url(self.url).ping()
                return
            except Exception:  # noqa: BLE001 - not accepting connections yet
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def infra(tmp_path: Path) -> Iterator[dict[str, Any]]:
    pg = PgDatabases(PG_SERVER)
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    s3 = MotoS3Server()
    s3.start()
    bucket = new_bucket_name()
    s3.client().create_bucket(Bucket=bucket)
    db_url = pg.fresh()
    try:
        yield {"db_url": db_url, "redis": redis_server, "s3": s3, "bucket": bucket}
    finally:
        redis_server.stop()
        remove_bucket(s3.client(), bucket)
        s3.stop()
        pg.close()


def environment(tmp_path: Path, infra: dict[str, Any]) -> dict[str, str]:
    return studiolo_env(
        tmp_path / "data",
        database_url=infra["db_url"],
        dispatch="celery",
        redis_url=infra["redis"].url,
        storage="s3",
        s3_bucket=infra["bucket"],
        s3_endpoint_url=infra["s3"].endpoint_url,
        s3_access_key_id=ACCESS_KEY_ID,
        s3_secret_access_key=SECRET_ACCESS_KEY,
        s3_region=REGION,
        s3_addressing_style="path",
        secret_key="fault-test-secret-shared-by-every-process",
        enable_echo_engine=True,
        default_model="echo",
        echo_step_delay=0.02,
        lease_seconds=2.0,
        heartbeat_seconds=0.3,
        retry_backoff_seconds=0.1,
        sweep_seconds=0.5,
        sweep_grace_seconds=1.0,
        rate_limits_enabled=False,  # 300 submissions from one address in seconds: a limit would refuse them
        shutdown_grace_seconds=1,
    )


class Client(threading.Thread):
    """Submits its share of the jobs, then follows each job's event stream to its end; when a stream breaks
    (its API process restarts), it fetches the final status instead, from either API process."""

    def __init__(self, index: int, servers: list[Server], token: str, jobs: list[dict[str, Any]]):
        super().__init__(name=f"client-{index}", daemon=True)
        self.index = index
        self.servers = servers
        self.headers = {"Authorization": f"Bearer {token}"}
        self.jobs = jobs
        self.accepted: list[str] = []
        self.outcome: dict[str, tuple[str, str]] = {}  # job id -> (how: "sse" | "fetched", status)
        self.error: BaseException | None = None

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Try the client's own API process first, then the other one, until one answers (restarts happen)."""
        deadline = time.monotonic() + 60
        order = [self.servers[self.index % 2], self.servers[(self.index + 1) % 2]]
        while True:
            for server in order:
                try:
                    return httpx.request(method, f"{server.url}{path}", headers=self.headers, timeout=10, **kwargs)
                except httpx.TransportError:
                    continue
            assert time.monotonic() < deadline, f"no API process answered {method} {path}"
            time.sleep(0.2)

    def _follow(self, job_id: str) -> None:
        server = self.servers[self.index % 2]
        try:
            with httpx.stream(
                "GET", f"{server.url}/api/v1/jobs/{job_id}/events", headers=self.headers, timeout=30
            ) as stream:
                event = ""
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                        if event in TERMINAL:
                            self.outcome[job_id] = ("sse", event)
                            return
        except httpx.TransportError:
            pass
        deadline = time.monotonic() + 120
        while True:
            status = self._request("GET", f"/api/v1/jobs/{job_id}").json()["status"]
            if status in TERMINAL:
                self.outcome[job_id] = ("fetched", status)
                return
            assert time.monotonic() < deadline, f"job {job_id} still {status}"
            time.sleep(0.3)

    def run(self) -> None:
        try:
            for body in self.jobs:
                r = self._request("POST", "/api/v1/generations", json=body)
                assert r.status_code == 202, r.text
                self.accepted.append(r.json()["id"])
            for job_id in self.accepted:
                self._follow(job_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.error = exc


def stuck_report(engine: Any, clients: list[Client], workers: list[Proc]) -> str:
    """What a failure needs to be understood: the jobs not yet finished (status, attempts, lease, error), where each
    client is, and the end of each worker's log."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                Job.id, Job.status, Job.model_id, Job.attempts, Job.lease_owner, Job.lease_expires_at, Job.error_code
            )
            .where(Job.status.in_(("queued", "running")))
            .limit(20)
        ).all()
    lines = [f"unfinished jobs (first 20): {len(rows)}", *(str(tuple(r)) for r in rows)]
    lines += [f"{c.name}: {len(c.accepted)} accepted, {len(c.outcome)} seen" for c in clients]
    lines += [f"--- worker {w.pid} ---\n{w.output()[-3000:]}" for w in workers]
    return "\n".join(lines)


def running_job_of(engine: Any, pid: int) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(select(Job.id).where(Job.status == "running", Job.lease_owner.contains(f":{pid}:")).limit(1))


def test_nothing_is_lost_when_a_worker_dies_redis_restarts_and_an_api_process_restarts(
    tmp_path: Path, launcher: Launcher, infra: dict[str, Any]
) -> None:
    from tests.tiny_pipeline import make_tiny_sd_pipeline

    env = environment(tmp_path, infra)
    tiny = make_tiny_sd_pipeline(tmp_path / "tiny-model")
    imported = run_cli("models", "import", str(tiny), "--id", "tiny", env=env, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    # (launcher.server creates the administrator with the CLI on first start and signs its client in)

    workers: list[Proc] = [launcher.start(["worker"], env, tmp_path) for _ in range(3)]
    ports = [free_port(), free_port()]
    servers = [launcher.server(env, tmp_path, "--workers", "0", port=port) for port in ports]
    token = servers[0].client.headers["Authorization"].split(" ", 1)[1]

    rng = random.Random(7)
    bodies = [
        {"prompt": f"job {i}", "size": "64x64", "steps": 2, "model": "tiny", "seed": i}
        if i % TINY_EVERY == 0
        else {"prompt": f"job {i}", "size": "64x64", "steps": rng.randint(3, 8), "n": rng.randint(1, 2), "seed": i}
        for i in range(JOBS)
    ]
    clients = [Client(k, servers, token, bodies[k::CLIENTS]) for k in range(CLIENTS)]
    for c in clients:
        c.start()

    engine = create_engine(infra["db_url"], poolclass=NullPool)
    try:
        # 1. SIGKILL a worker while it is running a job.
        victim = workers[0]
        deadline = time.monotonic() + 60
        while (killed_job := running_job_of(engine, victim.pid)) is None:
            assert time.monotonic() < deadline, "the first worker never ran a job:\n" + victim.output()
            time.sleep(0.02)
        os.kill(victim.pid, signal.SIGKILL)
        victim.popen.wait(10)

        # 2. Restart Redis: every message waiting in the broker is gone; the sweeper must notice.
        time.sleep(1.0)
        infra["redis"].stop()
        time.sleep(1.0)
        infra["redis"].start()

        # 3. Restart one API process (its event streams break; its clients fall back to the other one).
        time.sleep(1.0)
        # uvicorn re-raises SIGTERM after its graceful shutdown, so a clean stop exits "killed by SIGTERM".
        assert servers[1].stop() in (0, -signal.SIGTERM), servers[1].output()
        servers[1] = launcher.server(env, tmp_path, "--workers", "0", port=ports[1])

        # One deadline for all clients: their jobs finish together, a slow (shared, noisy) machine stretches them all,
        # and a job that is truly lost never finishes however long this waits (then the report says which).
        finish_by = time.monotonic() + 600
        for c in clients:
            c.join(max(0.0, finish_by - time.monotonic()))
            assert not c.is_alive(), f"{c.name} did not finish\n" + stuck_report(engine, clients, workers)
            assert c.error is None, f"{c.name}: {c.error!r}"

        accepted = [job_id for c in clients for job_id in c.accepted]
        assert len(accepted) == len(set(accepted)) == JOBS
        seen = {job_id: outcome for c in clients for job_id, outcome in c.outcome.items()}
        assert set(seen) == set(accepted)  # every client saw its jobs end (by SSE or by fetching)
        assert {status for _, status in seen.values()} == {"succeeded"}
        streamed = sum(1 for how, _ in seen.values() if how == "sse")

        with engine.connect() as conn:
            jobs = conn.execute(select(Job.id, Job.status, Job.seeds, Job.attempts)).all()
            images = conn.execute(
                select(Image.job_id, Image.batch_index, Image.original_key, Image.thumbnail_keys)
            ).all()
            duplicate_rows = conn.scalar(
                select(func.count()).select_from(
                    select(Image.job_id, Image.batch_index)
                    .group_by(Image.job_id, Image.batch_index)
                    .having(func.count() > 1)
                    .subquery()
                )
            )
        assert len(jobs) == JOBS and {j.status for j in jobs} == {"succeeded"}
        by_job: dict[str, int] = {}
        for img in images:
            by_job[img.job_id] = by_job.get(img.job_id, 0) + 1
        assert all(by_job.get(j.id, 0) == len(j.seeds) for j in jobs), "a job has missing or extra images"
        assert duplicate_rows == 0
        retried = {j.id: j.attempts for j in jobs if j.attempts > 1}
        assert killed_job in retried  # the killed worker's job ran again elsewhere, and succeeded once

        # Files: each image's original and thumbnails exist; nothing else is in the bucket.
        client = infra["s3"].client()
        stored = {
            item["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=infra["bucket"])
            for item in page.get("Contents", ())
        }
        referenced = {img.original_key for img in images} | {
            key for img in images for key in dict(img.thumbnail_keys).values()
        }
        assert referenced <= stored, f"missing files: {sorted(referenced - stored)[:5]}"
        orphans = {key for key in stored - referenced if not key.startswith(".")}
        assert orphans == set(), f"orphan files: {sorted(orphans)[:5]}"
        print(f"fault test: {JOBS} jobs, {len(retried)} retried, {streamed} ended on the event stream")
    finally:
        engine.dispose()
