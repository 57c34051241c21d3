"""Scale-out speed on PostgreSQL + Redis with Celery workers and the no-op `echo` engine.

Prints:
- jobs completed per second end to end (HTTP submit -> broker token -> worker claim -> image stored) with 1, 2
  and 4 `studiolo worker` processes (target >= 1,000 jobs/s with 4 workers on the 2-core machine);
- POST /generations latency while the workers drain (target p99 <= 50 ms);
- GET /jobs/{id} with 10 concurrent clients spread over 2 API processes (the single-process figure of
  bench/api.py missed p99 <= 20 ms);
- GET /images page of 50 with 1,000,000 rows on PostgreSQL (target p99 <= 20 ms): first page, deep cursor,
  style filter, and full-text searches for words from frequent (4% of the rows) to rare (a handful).

    python -m bench.queue [--jobs 2000] [--images 1000000] [--workers 1,2,4]

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
from urllib.parse import urlencode

import httpx
import redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from bench import _loadgen
from bench._server import percentile, sign_in, studiolo_server
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


def drain_rate(base: str, headers: dict[str, str], engine: Engine, total: int) -> tuple[float, float, list[float]]:
    """Submit ``total`` jobs from 20 clients while the workers run; (completed jobs/s, submit/s, POST latencies)."""
    before = succeeded(engine)
    started = time.perf_counter()
    reqs = (("POST", "/api/v1/generations", BODY) for _ in range(total))
    elapsed, latencies, responses = asyncio.run(_loadgen.run(base, reqs, 20, headers))
    if any(status != 202 for status, _ in responses):
        raise RuntimeError(f"a submission failed: {next(r for r in responses if r[0] != 202)}")
    deadline = time.monotonic() + 600
    while succeeded(engine) - before < total:
        if time.monotonic() > deadline:
            raise RuntimeError("jobs did not finish in 10 minutes")
        time.sleep(0.05)
    done = time.perf_counter() - started
    return total / done, total / elapsed, latencies


def report(name: str, values: list[float], target: str) -> None:
    ms = [v * 1000 for v in values]
    line = f"  {name:<52} p50 {percentile(ms, 0.5):7.2f} ms  p99 {percentile(ms, 0.99):7.2f} ms  (target {target})"
    print(line + (f"  [{len(ms)} requests]" if len(ms) < 200 else ""))


def queue_throughput(args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as db_url:
        data = Path(tmp)
        env = env_for(data, db_url)
        engine = create_engine(db_url, poolclass=NullPool)
        with studiolo_server(data, **env) as (base, _):
            headers = sign_in(base, data, **env)
            for count in counts:
                redis.Redis.from_url(REDIS).flushdb()
                workers = start_workers(data, env, count)
                try:
                    time.sleep(6)  # worker processes import, connect, declare their queues
                    drain_rate(base, headers, engine, min(200, args.jobs))  # warm-up
                    rate, submit_rate, latencies = drain_rate(base, headers, engine, args.jobs)
                    print(
                        f"{count} worker process(es): {rate:7.0f} jobs/s completed end to end "
                        f"({args.jobs} jobs; submitted at {submit_rate:.0f}/s by 20 clients)"
                    )
                    report("POST /generations while the workers drain", latencies, "p99 <= 50 ms")
                finally:
                    for w in workers:
                        w.terminate()
                    for w in workers:
                        w.wait(30)
            with engine.connect() as conn:
                ids = list(conn.scalars(select(Job.id).limit(500)))
            paths = [f"/api/v1/jobs/{random.choice(ids)}" for _ in range(3000)]
            one = asyncio.run(_loadgen.run(base, (("GET", p, None) for p in paths), 10, headers))[1]
        # Two API processes, 10 clients split between them.
        with studiolo_server(data, **env) as (base_a, _), studiolo_server(data, **env) as (base_b, _):
            headers = sign_in(base_a, data, **env)

            async def both() -> list[float]:
                half = paths[: len(paths) // 2], paths[len(paths) // 2 :]
                runs = await asyncio.gather(
                    _loadgen.run(base_a, (("GET", p, None) for p in half[0]), 5, headers),
                    _loadgen.run(base_b, (("GET", p, None) for p in half[1]), 5, headers),
                )
                return runs[0][1] + runs[1][1]

            two = asyncio.run(both())
        report("GET /jobs/{id}, 10 clients, 1 API process", one, "p99 <= 20 ms")
        report("GET /jobs/{id}, 10 clients, 2 API processes", two, "p99 <= 20 ms")
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
                    cursor = c.get("/api/v1/images", params=params).json()["next_cursor"]
                    cursors.append(cursor)
                probe = c.get("/api/v1/images", params={"limit": 50, "q": "lighthouse neon"}).json()
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
    ap.add_argument("--skip-gallery", action="store_true")
    ap.add_argument("--skip-queue", action="store_true")
    args = ap.parse_args()
    if not args.skip_queue:
        queue_throughput(args)
    if not args.skip_gallery:
        gallery(args)


if __name__ == "__main__":
    main()
