"""Accounts speed: the cost of a password hash, sign-in rate, whether the server stays responsive while it
hashes, and what the auth check adds to an ordinary authenticated request.

Prints:
- argon2id hash / verify time with the default settings (target >= 50 ms per hash);
- sign-ins per second with 8 concurrent clients, and GET /health latency measured at the same time vs idle
  (hashing runs in worker threads and releases the GIL, so other requests must still be answered);
- password reset requests for a known and an unknown address, alternated: median times of the request and of one
  sent right after it, and how often the known one was slower in a pair (50% = no tell; issue 13, item 7);
- GET /jobs/{id} with 50 concurrent clients, signed in (Bearer access token; and with an API key) vs the
  same server in STUDIOLO_AUTH_MODE=none (no auth check), runs alternated on the same data directory
  (target: the auth check adds <= 2 ms at p50).

    python -m bench.auth [--logins 200] [--resets 500] [--gets 5000] [--rounds 2] [--hashes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench import _loadgen
from bench._server import ADMIN_EMAIL, ADMIN_PASSWORD, ok, percentile, sign_in, studiolo_server
from studiolo.domain.accounts.passwords import PasswordHashing
from studiolo.settings import Settings

ENV = {
    "enable_echo_engine": "true",
    "default_model": "echo",
    "env": "test",
    "inline_workers": "1",
    "rate_limits_enabled": "false",  # measuring the server, not the limiter (which would refuse this load)
    "lockout_failures": "1000",
}


def hash_cost(count: int) -> None:
    hashing = PasswordHashing(Settings())
    s = Settings()
    hashed = hashing.hash("a benchmark password")
    hashes, verifies = [], []
    for _ in range(count):
        t = time.perf_counter()
        hashing.hash("a benchmark password")
        hashes.append(time.perf_counter() - t)
        t = time.perf_counter()
        hashing.verify(hashed, "a benchmark password")
        verifies.append(time.perf_counter() - t)
    hash_ms, verify_ms = statistics.median(hashes) * 1000, statistics.median(verifies) * 1000
    print(
        f"argon2id t={s.argon2_time_cost} m={s.argon2_memory_kib} KiB p={s.argon2_parallelism}: "
        f"hash median {hash_ms:.0f} ms, verify median {verify_ms:.0f} ms (target >= 50 ms)"
    )


def probe(base: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=base, timeout=30) as c:
        while not stop.is_set():
            t = time.perf_counter()
            c.get("/health")
            out.append(time.perf_counter() - t)
            time.sleep(0.01)


def login_rate(base: str, total: int, concurrency: int) -> None:
    idle: list[float] = []
    stop = threading.Event()
    t = threading.Thread(target=probe, args=(base, stop, idle))
    t.start()
    time.sleep(2)
    stop.set()
    t.join()

    busy: list[float] = []
    stop = threading.Event()
    t = threading.Thread(target=probe, args=(base, stop, busy))
    t.start()
    body = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    reqs = (("POST", "/api/v1/auth/login", body) for _ in range(total))
    elapsed, _, responses = asyncio.run(_loadgen.run(base, reqs, concurrency))
    stop.set()
    t.join()
    bad = [r for r in responses if r[0] != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} sign-ins failed, e.g. {bad[0]}")
    print(f"sign-ins: {total / elapsed:.1f}/s with {concurrency} clients ({total} in {elapsed:.1f} s)")
    for name, values in (("idle", idle), ("during sign-ins", busy)):
        ms = [v * 1000 for v in values]
        print(f"  GET /health {name:<16} p50 {percentile(ms, 0.5):6.1f} ms  p99 {percentile(ms, 0.99):6.1f} ms")


def reset_timing(base: str, pairs: int) -> None:
    """Known vs unknown address on POST /auth/password-reset, one request at a time, alternated, 20 ms apart: the
    request's own time, and the time of a request sent right after it (which background work could slow)."""
    own: dict[str, list[float]] = {"known": [], "unknown": []}
    next_one: dict[str, list[float]] = {"known": [], "unknown": []}
    with httpx.Client(base_url=base, timeout=30) as c:

        def reset(email: str) -> float:
            t = time.perf_counter()
            r = c.post("/api/v1/auth/password-reset", json={"email": email})
            elapsed = time.perf_counter() - t
            if r.status_code != 202:
                raise RuntimeError(f"reset request failed: {r.status_code} {r.text}")
            return elapsed * 1000

        for i in range(pairs + 50):
            for name, email in (("known", ADMIN_EMAIL), ("unknown", f"nobody{i}@example.com")):
                first = reset(email)
                then = reset(f"reference{i}@example.com")  # at once, while the first one's work may run
                if i >= 50:  # the first pairs warm up
                    own[name].append(first)
                    next_one[name].append(then)
                time.sleep(0.02)
    for label, times in (("the request itself", own), ("the request right after it", next_one)):
        slower = sum(k > u for k, u in zip(times["known"], times["unknown"], strict=True)) / pairs
        print(
            f"password reset, {pairs} pairs, {label}: known {statistics.median(times['known']):.2f} ms, "
            f"unknown {statistics.median(times['unknown']):.2f} ms median; known slower in {slower:.0%} of pairs "
            "(50% = no tell)"
        )


def gets(base: str, paths: list[str], headers: dict[str, str] | None) -> list[float]:
    _, latencies, responses = asyncio.run(_loadgen.run(base, (("GET", p, None) for p in paths), 50, headers))
    if any(status != 200 for status, _ in responses):
        raise RuntimeError(f"a GET failed: {next(r for r in responses if r[0] != 200)}")
    return [v * 1000 for v in latencies]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--logins", type=int, default=200)
    ap.add_argument("--resets", type=int, default=500, help="pairs of reset requests (0: skip)")
    ap.add_argument("--gets", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--hashes", type=int, default=10, help="argon2 hashes (and verifies) timed")
    args = ap.parse_args()
    hash_cost(args.hashes)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        with studiolo_server(data, **ENV) as (base, _):
            headers = sign_in(base, data, **ENV)  # default argon2 parameters: this is the real cost
            login_rate(base, args.logins, 8)
            with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
                ids = [
                    ok(c.post("/api/v1/generations", json={"prompt": "x", "size": "64x64", "steps": 1}))["id"]
                    for _ in range(50)
                ]
                key = ok(c.post("/api/v1/api-keys", json={"name": "bench", "scopes": ["read"]}))["key"]
        paths = [f"/api/v1/jobs/{ids[i % len(ids)]}" for i in range(args.gets)]
        if args.resets:
            with studiolo_server(data, **ENV) as (base, _):  # the console mailer: codes printed on its stderr
                reset_timing(base, args.resets)

        results: dict[str, list[float]] = {"none": [], "bearer": [], "api key": []}
        for _ in range(args.rounds):
            with studiolo_server(data, **ENV, auth_mode="none") as (base, _):
                gets(base, paths[:500], None)  # warm-up
                results["none"] += gets(base, paths, None)
            with studiolo_server(data, **ENV) as (base, _):
                headers = sign_in(base, data, **ENV)
                gets(base, paths[:500], headers)
                results["bearer"] += gets(base, paths, headers)
                results["api key"] += gets(base, paths, {"Authorization": f"Bearer {key}"})
        print(f"GET /jobs/{{id}}, 50 concurrent clients, {args.rounds} alternated rounds of {args.gets}:")
        base_p50 = percentile(results["none"], 0.5)
        for name, ms in results.items():
            p50 = percentile(ms, 0.5)
            print(
                f"  {name:<8} p50 {p50:6.2f} ms  p99 {percentile(ms, 0.99):6.2f} ms  "
                f"(p50 {p50 - base_p50:+.2f} ms vs no auth; target <= +2 ms)"
            )


if __name__ == "__main__":
    main()
