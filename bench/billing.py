"""What billing costs the queue (issue 15), with billing ``off`` and ``quotas`` side by side in the same run:

- submit latency (p50/p95) of ``services.generation.submit``, one client, by 10 users in turn on a plan with monthly
  and daily quotas and credits (so the reservation runs in full: the account lock, the plan, the quota sums, the
  usage row and the ledger rows). The quota sums read every usage record of the user's month, which a quota plan
  keeps to a few hundred: ``--submits 1000`` makes 100 a user. Target: at most 1 ms added at p50;
- accepted jobs/s with 20 concurrent clients (20 users, one thread each). Target: at least 90% of ``off``;
- claims/s of queued jobs, without a running limit (max_running 0, billing off) and with one that never binds
  (the per-owner running count is made for each claim): the cost of the claim-time limit. On PostgreSQL both
  ``claim`` (one job per claim) and ``claim_batch`` (16).

Each mode has its own fresh database (SQLite in a temporary directory, and PostgreSQL from STUDIOLO_BENCH_PG when
``--pg``, made as bench/queue.py makes its own). The rounds of each mode alternate, so drift on a shared machine
falls on both.

    python -m bench.billing [--submits 1000] [--clients 20] [--per-client 50] [--claims 2000] [--pg]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import update

from bench._server import percentile
from bench.queue import fresh_database
from studiolo.db import migrate
from studiolo.db.base import utcnow
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_ID, User
from studiolo.domain.billing.plans import PlanSpec
from studiolo.domain.generation.models import Job
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.services import Services, build_services
from studiolo.settings import Settings

PARAMS = GenerationParams(prompt="a lighthouse at dusk", size="64x64", steps=1)
# Limits that every submit meets and none reaches: the reservation does all its work.
PLAN = PlanSpec(
    slug="bench", name="Bench", monthly_images=10**9, daily_images=10**9, monthly_credits=10**9, max_steps=150
)


@contextlib.contextmanager
def studio(billing: str, db: str) -> Iterator[Services]:
    """Services with ``billing`` on a fresh database (``db``: "sqlite" or "pg"), no workers."""
    with (
        tempfile.TemporaryDirectory(prefix="studiolo-bench-billing-") as tmp,
        fresh_database() if db == "pg" else contextlib.nullcontext("") as url,
    ):
        data = Path(tmp) / "data"
        data.mkdir(mode=0o700)
        if not url:
            migrate.upgrade(f"sqlite:///{data / 'studiolo.db'}")
            (data / "studiolo.db").chmod(0o600)
        settings = Settings(
            env="test",
            data_dir=data,
            database_url=url,
            billing=billing,
            enable_echo_engine=True,
            default_model="echo",
            inline_workers=0,
            rate_limits_enabled=False,
            log_level="warning",
        )
        svc = build_services(settings, upgrade_db=False)
        try:
            svc.billing.create_plan(PLAN, actor_id=LOCAL_USER_ID, origin=Origin())
            yield svc
        finally:
            svc.close(timeout=10)


def add_users(svc: Services, count: int) -> list[str]:
    """Plain users on the bench plan (not administrators: those are never refused, and skip the checks)."""
    ids = []
    with svc.db.session() as session:
        for _ in range(count):
            user = User(email=f"{uuid.uuid4().hex[:12]}@example.com", role="user", status="active", display_name="b")
            user.email_verified_at = utcnow()
            session.add(user)
            session.flush()
            ids.append(user.id)
    for user_id in ids:
        svc.billing.assign_plan(user_id, PLAN.slug, actor_id=LOCAL_USER_ID, origin=Origin())
    return ids


def submit_latencies(svc: Services, users: list[str], count: int) -> list[float]:
    out = []
    for i in range(count):
        user_id = users[i % len(users)]
        t = time.perf_counter()
        svc.generation.submit(user_id, PARAMS)
        out.append((time.perf_counter() - t) * 1000)
    return out


def accepted_rate(svc: Services, users: list[str], per_client: int) -> float:
    start = threading.Barrier(len(users) + 1)

    def client(user_id: str) -> None:
        start.wait()
        for _ in range(per_client):
            svc.generation.submit(user_id, PARAMS)

    threads = [threading.Thread(target=client, args=(u,)) for u in users]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return len(users) * per_client / (time.perf_counter() - t0)


def claim_rate(svc: Services, users: list[str], jobs: int, max_running: int, batch: int) -> float:
    """Queue ``jobs`` over ``users``, give them ``max_running``, and time claiming them all."""
    for i in range(jobs):
        svc.generation.submit(users[i % len(users)], PARAMS)
    with svc.db.session() as session:
        session.execute(update(Job).where(Job.status == "queued").values(max_running=max_running))
    t0 = time.perf_counter()
    claimed = 0
    while got := svc.queue.claim_batch("bench", batch):
        claimed += len(got)
    elapsed = time.perf_counter() - t0
    assert claimed == jobs, (claimed, jobs)
    with svc.db.session() as session:  # done: the next measurement counts no running jobs of this one
        session.execute(update(Job).where(Job.status == "running").values(status="succeeded"))
    return jobs / elapsed


def run(db: str, args: argparse.Namespace) -> None:
    print(f"\n== {db} ==")
    with studio("off", db) as off, studio("quotas", db) as quotas:
        # -- one client --
        user = {"off": add_users(off, 10), "quotas": add_users(quotas, 10)}
        svcs = {"off": off, "quotas": quotas}
        for mode, svc in svcs.items():
            submit_latencies(svc, user[mode], 30)  # warm up: statement caches, connections
        lat: dict[str, list[float]] = {"off": [], "quotas": []}
        rounds = 5
        for _ in range(rounds):
            for mode, svc in svcs.items():
                lat[mode] += submit_latencies(svc, user[mode], max(args.submits // rounds, 1))
        p50 = {m: statistics.median(v) for m, v in lat.items()}
        for mode in ("off", "quotas"):
            print(
                f"submit latency, billing {mode:<6}  p50 {p50[mode]:6.2f} ms  p95 {percentile(lat[mode], 0.95):6.2f} ms"
                f"  ({len(lat[mode])} submits)"
            )
        print(f"submit p50 added by billing: {p50['quotas'] - p50['off']:+.2f} ms (target <= 1 ms)")
        # -- 20 clients --
        clients = {"off": add_users(off, args.clients), "quotas": add_users(quotas, args.clients)}
        rate: dict[str, float] = {"off": 0.0, "quotas": 0.0}
        for _ in range(2):
            for mode, svc in svcs.items():
                rate[mode] = max(rate[mode], accepted_rate(svc, clients[mode], args.per_client))
        for mode in ("off", "quotas"):
            print(f"accepted, {args.clients} clients, billing {mode:<6}  {rate[mode]:8.0f} jobs/s")
        print(f"accepted jobs/s quotas / off = {rate['quotas'] / rate['off']:.2f} (target >= 0.90)")
    # -- claims (billing off: only the queue), on an empty queue of their own --
    with studio("off", db) as svc:
        users = add_users(svc, 20)
        batches = [1, 16] if db == "pg" else [1]
        for batch in batches:
            label = "claim" if batch == 1 else f"claim_batch({batch})"
            unlimited = claim_rate(svc, users, args.claims, 0, batch)
            limited = claim_rate(svc, users, args.claims, 10**6, batch)
            print(
                f"{label:<16} {args.claims} jobs of 20 users: max_running 0 {unlimited:8.0f} claims/s, "
                f"limited {limited:8.0f} claims/s, limited / 0 = {limited / unlimited:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submits", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=50)
    parser.add_argument("--claims", type=int, default=2000)
    parser.add_argument("--pg", action="store_true", help="PostgreSQL too (STUDIOLO_BENCH_PG)")
    args = parser.parse_args()
    run("sqlite", args)
    if args.pg:
        run("pg", args)


if __name__ == "__main__":
    main()
