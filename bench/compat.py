"""What the compatible faces (issue 18) add over the native API, on the same echo job, in the same run.

Each round runs the same 64x64 echo job three ways against one real `studiolo serve` (SQLite, one in-process worker,
the no-op echo engine, NSFW check and watermarks at their defaults), in turn so that machine noise hits all three:

- native: POST /api/v1/generations, follow GET /jobs/{id}/events to the end, GET the image file (what a client
  needs for the same result);
- OpenAI: POST /v1/images/generations with response_format b64_json (one blocking call);
- A1111: POST /sdapi/v1/txt2img (one blocking call).

Prints each path's p50/p95 and the p50 each face adds over native (target <= 5 ms). Webhook delivery latency is
bench/webhooks.py's.

    python -m bench.compat [--rounds 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from bench._server import ok, percentile, sign_in, studiolo_server

PROMPT = "a lighthouse at dusk"


def native(c: httpx.Client) -> None:
    job = ok(c.post("/api/v1/generations", json={"prompt": PROMPT, "size": "64x64", "steps": 1}))
    with c.stream("GET", f"/api/v1/jobs/{job['id']}/events") as events:
        for line in events.iter_lines():
            if line.startswith("event: ") and line[7:] in ("succeeded", "failed", "canceled"):
                break
    view = ok(c.get(f"/api/v1/jobs/{job['id']}"))
    if view["status"] != "succeeded":
        raise RuntimeError(f"native job ended {view['status']}: {view['error']}")
    c.get(f"/api/v1/images/{view['outputs'][0]['image_id']}/file").raise_for_status()


def openai(c: httpx.Client) -> None:
    body = {"prompt": PROMPT, "size": "64x64", "response_format": "b64_json", "steps": 1}
    if not ok(c.post("/v1/images/generations", json=body))["data"][0]["b64_json"]:
        raise RuntimeError("no image")


def a1111(c: httpx.Client) -> None:
    body = {"prompt": PROMPT, "width": 64, "height": 64, "steps": 1}
    if not ok(c.post("/sdapi/v1/txt2img", json=body))["images"]:
        raise RuntimeError("no image")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=60, help="jobs per path (after 3 warm-up rounds)")
    args = ap.parse_args()
    paths = {"native": native, "openai": openai, "a1111": a1111}
    timings: dict[str, list[float]] = {name: [] for name in paths}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        env = {
            "enable_echo_engine": "true",
            "default_model": "echo",
            "env": "test",
            "inline_workers": "1",
            "rate_limits_enabled": "false",
        }
        with studiolo_server(data, **env) as (base, _proc):
            session = sign_in(base, data, **env)
            key = ok(httpx.post(f"{base}/api/v1/api-keys", json={"name": "bench"}, headers=session))["key"]
            with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {key}"}) as c:
                for round_no in range(3 + args.rounds):
                    for name, run in paths.items():
                        started = time.perf_counter()
                        run(c)
                        if round_no >= 3:
                            timings[name].append((time.perf_counter() - started) * 1000)
    print(f"echo job 64x64, {args.rounds} rounds per path, one `studiolo serve` (SQLite, 1 worker)")
    base_p50 = percentile(timings["native"], 0.5)
    for name, values in timings.items():
        p50, p95 = percentile(values, 0.5), percentile(values, 0.95)
        added = "" if name == "native" else f"   added p50 {p50 - base_p50:+.1f} ms (target <= 5 ms)"
        print(f"{name:<7} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms{added}")


if __name__ == "__main__":
    main()
