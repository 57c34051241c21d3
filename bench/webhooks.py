"""Webhook delivery latency: from a job's end (its terminal event in the worker) to the signed ``job.succeeded``
arriving at a receiver on localhost, through the real path (the outbox sweep, the claim, the POST), with the
deliverer that ``start_workers`` starts, as in ``studiolo serve`` and ``studiolo worker``.

    python -m bench.webhooks [--jobs 50] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.services import build_services
from studiolo.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.webhook_receiver import Receiver  # the receiver lives with the tests it serves


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="a few jobs, to check the script runs")
    args = parser.parse_args()
    jobs = 5 if args.smoke else args.jobs
    receiver = Receiver()
    receiver.start()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            env="test",
            data_dir=Path(tmp) / "data",
            inline_workers=0,
            enable_echo_engine=True,
            default_model="echo",
            webhooks_allow_private=True,
        )
        svc = build_services(settings)
        ended: dict[str, float] = {}

        def on_end(job_id: str, event: dict[str, Any]) -> None:
            ended[job_id] = time.monotonic()

        svc.events.subscribe_all(on_end, types=("succeeded",))
        svc.start_workers(1)
        receiver.secrets.append(svc.webhooks.account_secret(LOCAL_USER_ID).secret)
        latencies: list[float] = []
        try:
            for i in range(jobs):
                params = GenerationParams(
                    prompt="bench",
                    size="64x64",
                    steps=1,
                    webhook=receiver.url + "/bench",
                    webhook_events_filter=["completed"],
                )
                accepted, _ = svc.generation.submit(LOCAL_USER_ID, params)
                got = receiver.wait(i + 1, timeout=30)
                if len(got) < i + 1:
                    raise SystemExit(f"job {i + 1}: no webhook within 30 s")
                delivery = got[i]
                assert delivery.payload is not None and delivery.by_hand, "a delivery failed verification"
                assert delivery.payload["data"]["id"] == accepted.id
                latencies.append((receiver.arrival_times[i] - ended[accepted.id]) * 1000)
        finally:
            svc.close(timeout=10)
            receiver.stop()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print(
        f"webhook latency after job end, {jobs} echo jobs: p50 {statistics.median(latencies):.1f} ms  p99 {p99:.1f} ms"
    )
    print(f"all {jobs} deliveries verified (standardwebhooks and the spec verifier)")


if __name__ == "__main__":
    main()
