"""API speed on the embedded defaults (SQLite, in-process worker, no-op `echo` engine).

Prints: enqueue rate with 50 concurrent clients; GET /jobs/{id} latency; GET /images (page of 50) latency
with 100k images in the database; time from enqueue to a worker starting the job; idle RSS.
Targets (issue "Generation core"): >= 500 jobs/s, p99 <= 20 ms, p99 <= 20 ms, <= 50 ms, <= 250 MB.

    python -m bench.api [--jobs 3000] [--images 100000] [--concurrency 50] [--gets 2000] [--starts 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench import _loadgen
from bench._server import ok, percentile, rss_mb, sign_in, studiolo_server
from studiolo.db.base import new_id
from studiolo.domain.accounts.models import LOCAL_USER_ID

BODY = {"prompt": "a lighthouse at dusk", "size": "64x64", "steps": 1}


HEADERS: dict[str, str] = {}  # the signed-in administrator's Authorization header, set in main()


def enqueue(base: str, total: int, concurrency: int) -> tuple[float, list[float], list[str]]:
    reqs = (("POST", "/api/v1/generations", BODY) for _ in range(total))
    elapsed, latencies, responses = asyncio.run(_loadgen.run(base, reqs, concurrency, HEADERS))
    bad = [r for r in responses if r[0] != 202]
    if bad:
        raise RuntimeError(f"{len(bad)} submissions failed, e.g. {bad[0]}")
    return total / elapsed, latencies, [json.loads(data)["id"] for _, data in responses]


def get_latency(base: str, paths: list[str], concurrency: int) -> list[float]:
    _, latencies, responses = asyncio.run(_loadgen.run(base, (("GET", p, None) for p in paths), concurrency, HEADERS))
    if any(status != 200 for status, _ in responses):
        raise RuntimeError("a GET failed")
    return latencies


def fill_images(db_path: Path, count: int) -> None:
    """Insert ``count`` image rows straight into SQLite (the FTS triggers index them as usual)."""
    con = sqlite3.connect(db_path)
    words = ["lighthouse", "fox", "harbour", "castle", "forest", "neon", "city", "river", "mountain", "dusk"]
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        prompt = " ".join(random.sample(words, 4))
        created = (now - timedelta(seconds=count - i)).isoformat(sep=" ")
        rows.append(
            (
                new_id(),
                LOCAL_USER_ID,
                None,
                0,
                "txt2img",
                prompt,
                "",
                "ghibli" if i % 3 else "anime",
                "echo",
                i,
                1,
                0.0,
                "euler",
                64,
                64,
                f"images/xx/{i}.png",
                json.dumps({"150": f"t/{i}"}),
                1000,
                "{}",
                "[]",
                prompt,
                i % 7 == 0,
                False,
                created,
            )
        )
    con.executemany(
        "INSERT INTO images (id, owner_id, job_id, batch_index, kind, prompt, negative_prompt, style, model_id, seed,"
        " steps, guidance, sampler, width, height, original_key, thumbnail_keys, size_bytes, metadata, tags,"
        " search_text, starred, public, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    con.commit()
    con.close()


def report(name: str, values: list[float], target: str) -> None:
    ms = [v * 1000 for v in values]
    print(
        f"{name:<44} p50 {percentile(ms, 0.5):7.2f} ms  p99 {percentile(ms, 0.99):7.2f} ms  "
        f"(n={len(ms)}, target {target})"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--gets", type=int, default=2000, help="GET /jobs/{id} requests per figure (GET /images: 15%%)")
    ap.add_argument("--starts", type=int, default=50, help="jobs timed one at a time from enqueue to start")
    args = ap.parse_args()
    pages = max(1, args.gets * 3 // 20)  # 300 GET /images per figure with the default --gets

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        # Rate limits off: 50 clients from one address would be throttled, which is the point in production.
        env = {
            "enable_echo_engine": "true",
            "default_model": "echo",
            "env": "test",
            "inline_workers": "1",
            "rate_limits_enabled": "false",
        }
        with studiolo_server(data, **env) as (base, proc):
            HEADERS.update(sign_in(base, data, **env))
            time.sleep(2)
            print(f"idle RSS, no model loaded: {rss_mb(proc.pid):.0f} MB (target <= 250 MB)")

            # Enqueue → start latency, on an idle worker, one job at a time.
            waits = []
            with httpx.Client(base_url=base, timeout=30, headers=HEADERS) as c:
                for _ in range(args.starts):
                    job = ok(c.post("/api/v1/generations", json=BODY))
                    while (view := ok(c.get(job["urls"]["get"])))["status"] not in ("succeeded", "failed"):
                        time.sleep(0.01)
                    start = datetime.fromisoformat(view["started_at"])
                    created = datetime.fromisoformat(view["created_at"])
                    waits.append((start - created).total_seconds())
            report("enqueue -> worker start (idle worker)", waits, "<= 50 ms")

            rate, lat, ids = enqueue(base, args.jobs, args.concurrency)
            print(f"enqueue rate, {args.concurrency} clients, worker running: {rate:8.0f} jobs/s (target >= 500)")
            report("POST /generations latency under that load", lat, "-")

            paths = [f"/api/v1/jobs/{random.choice(ids)}" for _ in range(args.gets)]
            # First while the worker is still draining the backlog those clients just queued, then idle.
            report("GET /jobs/{id}, 10 clients, worker busy", get_latency(base, paths, 10), "p99 <= 20 ms")
            with httpx.Client(base_url=base, timeout=30, headers=HEADERS) as c:
                while ok(c.get("/api/v1/jobs", params={"status": "queued", "limit": 1}))["items"]:
                    time.sleep(0.2)
            report(
                "GET /jobs/{id}, 1 client, idle", get_latency(base, paths[: max(1, args.gets // 4)], 1), "p99 <= 20 ms"
            )
            report("GET /jobs/{id}, 10 clients, idle", get_latency(base, paths, 10), "p99 <= 20 ms")

        fill_images(data / "studiolo.db", args.images)
        with studiolo_server(data, **env) as (base, proc):
            HEADERS.update(sign_in(base, data, **env))
            with httpx.Client(base_url=base, headers=HEADERS) as c:
                cursors: list[str] = []
                cursor = None
                for _ in range(40):  # walk real cursors deep into the gallery
                    r = ok(c.get("/api/v1/images", params={"limit": 50, **({"cursor": cursor} if cursor else {})}))
                    if r["next_cursor"] is None:  # fewer than 40 pages (a small --images)
                        break
                    cursor = r["next_cursor"]
                    cursors.append(cursor)
            first = ["/api/v1/images?limit=50"] * pages
            if not cursors:
                raise RuntimeError("--images must fill more than one page of 50")
            deep = [f"/api/v1/images?limit=50&cursor={random.choice(cursors)}" for _ in range(pages)]
            styled = ["/api/v1/images?limit=50&style=anime"] * max(1, pages * 2 // 3)
            search = ["/api/v1/images?limit=50&q=lighthouse%20fox"] * max(1, pages * 2 // 3)
            label = f"GET /images page of 50 ({args.images:,} rows)"
            report(f"{label}, first page", get_latency(base, first, 1), "p99 <= 20 ms")
            report(f"{label}, deep cursor", get_latency(base, deep, 1), "p99 <= 20 ms")
            report(f"{label}, style filter", get_latency(base, styled, 1), "-")
            report(f"{label}, full-text q", get_latency(base, search, 1), "-")


if __name__ == "__main__":
    main()
