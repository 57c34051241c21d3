"""Scale-out speed on PostgreSQL + Redis with Celery workers and the no-op `echo` engine.

Prints:
- jobs accepted per second with no worker running (single submits and batches, what a queue library's publish rate
  counts);
- jobs completed per second end to end (HTTP submit -> broker token -> worker claim -> image stored) with 1, 2
  and 4 `studiolo worker` processes behind ``--api`` API processes (default 2) (target >= 1,000 jobs/s with 4
  workers on the 2-core machine), and the CPU each job cost in each process (API, workers, PostgreSQL, Redis,
  this load generator): on 2 cores, 1,000 jobs/s means 2 ms of CPU per job for all of them together; then the
  same with the jobs sent in batches of ``--batch`` (default 50) through POST /generations/batch;
- POST /generations latency while the workers drain (target p99 <= 50 ms), twice: 20 clients each sending as
  soon as answered (the server saturated: latency is then the queue of waiting clients, 20 / rate), and a steady
  arrival rate of half the drain rate (an open loop, as users arrive, with no coordinated omission);
- GET /jobs/{id} with 10 concurrent clients spread over the API processes (the single-process figure of
  bench/api.py missed p99 <= 20 ms);
- GET /images page of 50 with 1,000,000 rows on PostgreSQL (target p99 <= 20 ms): first page, deep cursor,
  style filter, and full-text searches for words from frequent (4% of the rows) to rare (a handful).

    python -m bench.queue [--jobs 2000] [--images 1000000] [--workers 1,2,4] [--batch 50]
                          [--gets 3000] [--paced-seconds 10] [--settle 6]

Needs PostgreSQL (STUDIOLO_BENCH_PG, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres) and Redis
(STUDIOLO_BENCH_REDIS, default redis://127.0.0.1:6379/13, flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psutil
import redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from bench import _loadgen
from bench._server import ok, percentile, sign_in, studiolo_server
from studiolo.db import migrate
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.models import Job

PG = os.environ.get("STUDIOLO_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("STUDIOLO_BENCH_REDIS", "redis://127.0.0.1:6379/13")
BODY = {"prompt": "a lighthouse at dusk", "size": "64x64", "steps": 1}


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    admin = create_engine(PG, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"studiolo_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def env_for(data: Path, db_url: str) -> dict[str, str]:
    return {
        "database_url": db_url,
        "dispatch": "celery",
        "redis_url": REDIS,
        "enable_echo_engine": "true",
        "default_model": "echo",
        "env": "test",
        "inline_workers": "0",
        "rate_limits_enabled": "false",
        "log_level": "warning",
        "secret_key": "bench-secret-shared-by-the-api-processes",
    }


def start_workers(data: Path, env: dict[str, str], count: int) -> list[subprocess.Popen[bytes]]:
    full = {
        **os.environ,
        "STUDIOLO_DATA_DIR": str(data),
        **{f"STUDIOLO_{k.upper()}": v for k, v in env.items()},
    }
    return [
        subprocess.Popen(
            [sys.executable, "-m", "studiolo", "worker"], env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(count)
    ]


def succeeded(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).where(Job.status == "succeeded")) or 0)


def cpu_seconds(groups: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each group of processes; PostgreSQL's and Redis's processes are
    looked up again each time (a pool opening a connection starts a backend)."""
    groups = {**groups, **_service_processes()}
    used: dict[str, float] = {}
    for name, procs in groups.items():
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        used[name] = total
    return used


def _service_processes() -> dict[str, list[psutil.Process]]:
    by_name: dict[str, list[psutil.Process]] = {"postgres": [], "redis": []}
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        if name.startswith("postgres"):
            by_name["postgres"].append(proc)
        elif name.startswith("redis-server"):
            by_name["redis"].append(proc)
    return by_name


def process_groups(
    apis: list[subprocess.Popen[bytes]], workers: list[subprocess.Popen[bytes]]
) -> dict[str, list[psutil.Process]]:
    """Where a job's CPU goes: the API processes, the workers, PostgreSQL, Redis, this load generator."""
    return {
        "api": [psutil.Process(api.pid) for api in apis],
        "workers": [psutil.Process(w.pid) for w in workers],
        "load generator": [psutil.Process()],
    }


def cpu_report(before: dict[str, float], after: dict[str, float], jobs: int) -> None:
    # A backend that ended in between took its CPU with it: PostgreSQL's share is a floor.
    parts = {k: max(after[k] - before[k], 0.0) * 1000 / jobs for k in before}
    line = ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
    print(f"  CPU per job: {sum(parts.values()):.2f} ms ({line})")


def wait_succeeded(engine: Engine, target: int) -> None:
    deadline = time.monotonic() + 600
    while succeeded(engine) < target:
        if time.monotonic() > deadline:
            raise RuntimeError("jobs did not finish in 10 minutes")
        time.sleep(0.05)


def submissions(total: int, batch: int) -> Iterator[tuple[str, str, Any]]:
    """``total`` jobs as single submits (``batch`` 1) or as ``POST /generations/batch`` requests of ``batch`` jobs."""
    if batch == 1:
        return (("POST", "/api/v1/generations", BODY) for _ in range(total))
    full, rest = divmod(total, batch)
    sizes = [batch] * full + ([rest] if rest else [])
    return (("POST", "/api/v1/generations/batch", {"generations": [BODY] * size}) for size in sizes)


def submit_all(
    bases: list[str], headers: dict[str, str], total: int, batch: int, clients: int
) -> tuple[float, list[float]]:
    """Submit ``total`` jobs from ``clients`` connections (spread over the API processes), each sending as soon as
    answered; (elapsed seconds, request latencies)."""
    elapsed, latencies, responses = asyncio.run(_loadgen.run(bases, submissions(total, batch), clients, headers))
    if any(status != 202 for status, _ in responses):
        raise RuntimeError(f"a submission failed: {next(r for r in responses if r[0] != 202)}")
    return elapsed, latencies


def drain_rate(
    bases: list[str], headers: dict[str, str], engine: Engine, total: int, batch: int = 1, clients: int = 20
) -> tuple[float, float, list[float]]:
    """Submit ``total`` jobs (see ``submit_all``) while the workers run; (completed jobs/s, submitted jobs/s, request
    latencies)."""
    before = succeeded(engine)
    started = time.perf_counter()
    elapsed, latencies = submit_all(bases, headers, total, batch, clients)
    wait_succeeded(engine, before + total)
    done = time.perf_counter() - started
    return total / done, total / elapsed, latencies


def enqueue_only(
    bases: list[str],
    apis: list[subprocess.Popen[bytes]],
    headers: dict[str, str],
    engine: Engine,
    args: argparse.Namespace,
) -> None:
    """Jobs accepted per second with no worker running (what a queue library's publish rate measures), single and
    batched; the queued jobs are deleted afterwards so they do not count in the drains."""
    submit_all(bases, headers, min(200, args.jobs), 1, 20)  # warm-up
    for batch, clients in ((1, 20), (args.batch, 4)):
        groups = process_groups(apis, [])
        before = cpu_seconds(groups)
        elapsed, latencies = submit_all(bases, headers, args.jobs, batch, clients)
        after = cpu_seconds(groups)
        what = "single submits, 20 clients" if batch == 1 else f"batches of {batch}, 4 clients"
        print(f"enqueue only, no worker ({what}): {args.jobs / elapsed:7.0f} jobs/s accepted")
        report("request latency", latencies, "-")
        cpu_report(before, after, args.jobs)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs WHERE status = 'queued'"))


def paced_submits(
    bases: list[str], headers: dict[str, str], engine: Engine, rate: float, seconds: float
) -> list[float]:
    """POST latencies at a steady ``rate`` for ``seconds`` (an open loop, as users arrive) while the workers keep
    up."""
    before = succeeded(engine)
    latencies, responses = asyncio.run(
        _loadgen.run_paced(bases, ("POST", "/api/v1/generations", BODY), rate, seconds, headers)
    )
    if any(status != 202 for status, _ in responses):
        raise RuntimeError(f"a submission failed: {next(r for r in responses if r[0] != 202)}")
    wait_succeeded(engine, before + len(responses))
    return latencies


def report(name: str, values: list[float], target: str) -> None:
    ms = [v * 1000 for v in values]
    line = f"  {name:<52} p50 {percentile(ms, 0.5):7.2f} ms  p99 {percentile(ms, 0.99):7.2f} ms  (target {target})"
    print(line + (f"  [{len(ms)} requests]" if len(ms) < 200 else ""))


def queue_throughput(args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as db_url, contextlib.ExitStack() as stack:
        data = Path(tmp)
        env = env_for(data, db_url)
        engine = create_engine(db_url, poolclass=NullPool)
        servers = [stack.enter_context(studiolo_server(data, **env)) for _ in range(args.api)]
        bases = [base for base, _ in servers]
        headers = sign_in(bases[0], data, **env)
        apis = [api for _, api in servers]
        print(f"{args.api} API process(es), PostgreSQL + Redis, the echo engine (64x64 images, 1 step):")
        redis.Redis.from_url(REDIS).flushdb()
        enqueue_only(bases, apis, headers, engine, args)
        for count in counts:
            redis.Redis.from_url(REDIS).flushdb()
            workers = start_workers(data, env, count)
            try:
                time.sleep(args.settle)  # worker processes import, connect, declare their queues
                drain_rate(bases, headers, engine, min(200, args.jobs))  # warm-up
                groups = process_groups(apis, workers)
                before = cpu_seconds(groups)
                rate, submit_rate, latencies = drain_rate(bases, headers, engine, args.jobs)
                after = cpu_seconds(groups)
                print(
                    f"{count} worker process(es): {rate:7.0f} jobs/s completed end to end "
                    f"({args.jobs} jobs; submitted at {submit_rate:.0f}/s by 20 clients)"
                )
                report("POST /generations, 20 clients as fast as answered", latencies, "p99 <= 50 ms")
                cpu_report(before, after, args.jobs)
                paced = round(rate * 0.5)
                report(
                    f"POST /generations at a steady {paced}/s (half of that)",
                    paced_submits(bases, headers, engine, paced, args.paced_seconds),
                    "p99 <= 50 ms",
                )
                if args.batch > 1:
                    before = cpu_seconds(groups)
                    batch_rate, batch_submit, batch_latencies = drain_rate(
                        bases, headers, engine, args.jobs, batch=args.batch, clients=4
                    )
                    after = cpu_seconds(groups)
                    print(
                        f"  in batches of {args.batch}: {batch_rate:7.0f} jobs/s completed end to end "
                        f"({batch_rate / rate:.2f}x single submits; submitted at {batch_submit:.0f}/s by 4 clients)"
                    )
                    report(f"POST /generations/batch ({args.batch} jobs), 4 clients", batch_latencies, "-")
                    cpu_report(before, after, args.jobs)
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(30)
        with engine.connect() as conn:
            ids = list(conn.scalars(select(Job.id).limit(500)))
        paths = [f"/api/v1/jobs/{random.choice(ids)}" for _ in range(args.gets)]
        elapsed, gets, _ = asyncio.run(_loadgen.run(bases, (("GET", p, None) for p in paths), 10, headers))
        report(f"GET /jobs/{{id}}, 10 clients, {args.api} API process(es)", gets, "p99 <= 20 ms")
        paced = round(len(paths) / elapsed * 0.5)
        steady = asyncio.run(_loadgen.run_paced(bases, ("GET", paths[0], None), paced, args.paced_seconds, headers))[0]
        report(f"GET /jobs/{{id}} at a steady {paced}/s (half of that)", steady, "p99 <= 20 ms")
        engine.dispose()


# Searches and the share of the 1,000,000 rows they match. Every prompt holds one word of each of
# (lighthouse fox harbour castle forest), (neon city river mountain dusk) and k00..k46 (i % 47, so independent of the
# first two), then "number <i>": a number prefix matches a handful of rows.
SEARCHES = [
    ("lighthouse neon", "frequent: 4%, 40,000 rows", "p99 <= 20 ms"),
    ("k07", "frequent: 2.1%", "p99 <= 20 ms"),
    ("k07 lighthouse", "middling: 0.43%", "-"),
    ("k07 lighthouse neon", "middling: 0.085%, 850 rows", "-"),
    ("12345", "rare: 11 rows", "stays fast"),
    ("lighthouse 12345", "rare and a frequent word: 3 rows", "stays fast"),
    ("zebra", "no match", "stays fast"),
]


def fill_images(db_url: str, count: int) -> None:
    """``count`` image rows for the local owner, generated inside PostgreSQL (the search trigger runs as usual)."""
    engine = create_engine(db_url, poolclass=NullPool)
    styles = ["anime", "photo", "ghibli", "cyberpunk", "none"]
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO images (id, owner_id, job_id, batch_index, kind, prompt, negative_prompt, style, model_id,
                    seed, steps, guidance, sampler, width, height, size_bytes, original_key, thumbnail_keys, tags,
                    search_text, starred, public, metadata, created_at)
                SELECT
                    lpad(to_hex(i), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(i), 12, '0'),
                    :owner, NULL, 0, 'txt2img', p, '', (CAST(:styles AS text[]))[1 + i % 5], 'echo', i, 1, 0,
                    'euler', 64, 64, 1000,
                    'images/' || i || '.png', '{}'::json, '[]'::json, p, i % 7 = 0, false, '{}'::json,
                    now() - (CAST(:count AS integer) - i) * interval '1 second'
                FROM (
                    SELECT i, (ARRAY['lighthouse','fox','harbour','castle','forest'])[1 + i % 5] || ' ' ||
                        (ARRAY['neon','city','river','mountain','dusk'])[1 + (i / 5) % 5] ||
                        ' k' || lpad(CAST(i % 47 AS text), 2, '0') || ' number ' || i AS p
                    FROM generate_series(1, CAST(:count AS integer)) AS i
                ) AS rows
                """
            ),
            {"owner": LOCAL_USER_ID, "styles": styles, "count": count},
        )
        conn.execute(text("ANALYZE images"))
    engine.dispose()


def gallery(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as db_url:
        data = Path(tmp)
        env = env_for(data, db_url) | {"dispatch": "inline"}
        started = time.perf_counter()
        fill_images(db_url, args.images)
        print(f"GET /images on PostgreSQL with {args.images:,} rows (filled in {time.perf_counter() - started:.0f} s):")
        with studiolo_server(data, **env) as (base, _):
            headers = sign_in(base, data, **env)
            with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
                cursors, cursor = [], None
                for _ in range(40):
                    params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
                    cursor = ok(c.get("/api/v1/images", params=params))["next_cursor"]
                    cursors.append(cursor)
                probe = ok(c.get("/api/v1/images", params={"limit": 50, "q": "lighthouse neon"}))
                # 4% of the rows match: a second page exists from 1,250 rows on (the smoke run uses 2,000).
                assert probe["items"] and probe["next_cursor"], json.dumps(probe)[:300]

            def lat(paths: list[str]) -> list[float]:
                return asyncio.run(_loadgen.run(base, (("GET", p, None) for p in paths), 1, headers))[1]

            lat(["/api/v1/images?limit=50"] * 50)  # warm-up
            report("first page", lat(["/api/v1/images?limit=50"] * 300), "p99 <= 20 ms")
            deep = [f"/api/v1/images?limit=50&cursor={random.choice(cursors)}" for _ in range(300)]
            report("deep cursor", lat(deep), "p99 <= 20 ms")
            report("style filter", lat(["/api/v1/images?limit=50&style=anime"] * 300), "-")
            for words, what, target in SEARCHES:
                path = "/api/v1/images?" + urlencode({"limit": 50, "q": words})
                lat([path] * 3)  # warm-up: the first scan of a page sets its hint bits
                report(f"q={words!r} ({what})", timed(base, headers, path), target)
            path = "/api/v1/images?" + urlencode({"limit": 50, "q": "lighthouse neon", "cursor": probe["next_cursor"]})
            report("q='lighthouse neon', second page", timed(base, headers, path), "p99 <= 20 ms")


def timed(base: str, headers: dict[str, str], path: str, count: int = 200, seconds: float = 20.0) -> list[float]:
    """Latencies of ``count`` GETs of ``path`` one after another, or of those sent within ``seconds`` (a slow plan
    takes seconds a request)."""
    deadline = time.monotonic() + seconds
    reqs = (("GET", path, None) for _ in range(count) if time.monotonic() < deadline)
    _, latencies, responses = asyncio.run(_loadgen.run(base, reqs, 1, headers))
    assert all(status == 200 for status, _ in responses), responses[:1]
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--api", type=int, default=2, help="API processes (clients are spread over them)")
    ap.add_argument("--batch", type=int, default=50, help="jobs per POST /generations/batch (1: single submits only)")
    ap.add_argument("--gets", type=int, default=3000, help="GET /jobs/{id} requests at 10 clients")
    ap.add_argument("--paced-seconds", type=float, default=10.0, help="length of each steady-rate run")
    ap.add_argument("--settle", type=float, default=6.0, help="seconds for new worker processes to start")
    ap.add_argument("--skip-gallery", action="store_true")
    ap.add_argument("--skip-queue", action="store_true")
    args = ap.parse_args()
    if not args.skip_queue:
        queue_throughput(args)
    if not args.skip_gallery:
        gallery(args)


if __name__ == "__main__":
    main()
