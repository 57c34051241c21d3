"""The demo model: how long a job takes by step count and thread policy, idle and beside a CPU load; and what
fewer steps (or another sampler) cost in quality on the 40 held-out prompts.

Speed (the default): rounds of one child process per (load, policy), so each starts torch with its own OpenMP
settings; a child times ``DemoEngine.generate`` for one 512x512 picture (a job's "generate" phase) per step count
after a warm-up job, and the table shows the median over the rounds. The policies take turns within a round, so
the other work on a shared machine falls on all of them alike. Policies: ``old`` (before issue 13: torch's default
thread count, OpenMP's default wait policy, which spins), ``passive`` (the same count, OMP_WAIT_POLICY=PASSIVE)
and ``new`` (what Studiolo's processes do now: STUDIOLO_DEMO_THREADS=1, PASSIVE). The ``busy`` load is one
spinning Python process per CPU, at normal priority, while that load's children run.

Quality (``--quality``): the 40 prompts of ``training/demo_model/evaluate.py`` (seed = index, CFG as given) with
Euler at 4/6/8/12/25/100 steps and, per network evaluation (NFE), Heun and midpoint steps. Per setting: PSNR and
mean absolute difference (0-255) against the 25-step picture (the old default) and the 100-step one (close to
the flow's exact end point); a prompt-following score (how many pictures are nearer to renders of their own
scene than to those of the 39 others, on 8x8 colour means and spreads; the procedural world's own renders score
the ceiling); and detail (mean absolute Laplacian). Contact sheets of 4/8/12/25 Euler steps go to ``--out``.

    python -m bench.demo [--steps 4 8 12 25] [--rounds 3] [--loads idle busy] [--policies old passive new]
    python -m bench.demo --quality [--guidance 7] [--prompts 40] [--out /tmp/studiolo-demo-bench]
    python -m bench.demo --smoke     # the smallest settings of both parts (tests/e2e/test_bench.py)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from studiolo.engines.base import GenerationRequest, ModelRef
from studiolo.engines.demo.engine import DEFAULT_GUIDANCE, DEMO_MODEL_ID, QUALITY_STEPS, DemoEngine

MODEL = ModelRef(id=DEMO_MODEL_ID, engine="demo", source="builtin")
PROMPT = "a lighthouse by the sea at dusk, pixel art"
# (STUDIOLO_DEMO_THREADS, OMP_WAIT_POLICY or None for OpenMP's default)
POLICIES: dict[str, tuple[int, str | None]] = {"old": (0, None), "passive": (0, "PASSIVE"), "new": (1, "PASSIVE")}
SPIN = "while True:\n    pass\n"


# -- speed ------------------------------------------------------------------------------------------------------


def child(threads: int, steps: list[int], guidance: float, budget: float) -> None:
    """In the child process: time one 512x512 job per step count; print one JSON line.

    Step counts that would start after ``budget`` seconds are skipped (null): under load the old policy can
    take minutes per job.
    """
    engine = DemoEngine(threads=threads)

    def job(n_steps: int) -> float:
        request = GenerationRequest(model=MODEL, prompt=PROMPT, seeds=[n_steps], steps=n_steps, guidance=guidance)
        start = time.perf_counter()
        engine.generate(request, lambda step, total, **_: None, lambda: False)
        return time.perf_counter() - start

    started = time.perf_counter()
    job(2)  # loads the weights, warms up the allocator and OpenMP
    import torch

    seconds = {n: job(n) if time.perf_counter() - started < budget else None for n in steps}
    print(json.dumps({"threads": threads if threads > 0 else torch.get_num_threads(), "seconds": seconds}))


@contextmanager
def cpu_load(kind: str) -> Iterator[None]:
    """``busy``: one spinning process per CPU while the block runs; ``idle``: nothing."""
    hogs = (
        [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(os.cpu_count() or 1)] if kind == "busy" else []
    )
    try:
        time.sleep(0.2 if hogs else 0)  # let them get going
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def run_child(policy: str, steps: list[int], guidance: float, budget: float) -> dict[str, Any]:
    threads, wait_policy = POLICIES[policy]
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if wait_policy is not None:
        env["OMP_WAIT_POLICY"] = wait_policy
    args = ["--child", str(threads), "--steps", *map(str, steps), "--guidance", str(guidance), "--budget", str(budget)]
    out = subprocess.run(
        [sys.executable, "-m", "bench.demo", *args], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def speed(steps: list[int], rounds: int, loads: list[str], policies: list[str], guidance: float, budget: float) -> None:
    print(
        f"demo model, one 512x512 job per step count, CFG {guidance}; median of {rounds} rounds, each a fresh "
        f"process per load and policy (policies in turn); {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f} at start"
    )
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(load, policy): [] for load in loads for policy in policies}
    for r in range(rounds):
        for load in loads:
            with cpu_load(load):
                for policy in policies[r % len(policies) :] + policies[: r % len(policies)]:
                    runs[load, policy].append(run_child(policy, steps, guidance, budget))

    def cell(load: str, policy: str, n: int) -> float | None:
        values = [run["seconds"][str(n)] for run in runs[load, policy] if run["seconds"][str(n)] is not None]
        return statistics.median(values) if values else None

    threads = {policy: runs[loads[0], policy][0]["threads"] for policy in policies}
    head = "".join(f"{f'{load} {policy}':>15s}" for load in loads for policy in policies)
    print(f"{'steps':>5s}{head}   (seconds; torch threads: {', '.join(f'{k}={v}' for k, v in threads.items())})")
    for n in steps:
        values = [cell(load, policy, n) for load in loads for policy in policies]
        print(f"{n:5d}" + "".join(f"{v:15.2f}" if v is not None else f"{'>' + str(budget):>15s}" for v in values))

    def ratios(label: str, pairs: list[tuple[tuple[str, str], tuple[str, str]]]) -> None:
        parts = []
        for n, (a, b) in zip(steps, pairs, strict=True):
            x, y = cell(*a, n), cell(*b, n)
            parts.append(f"{x / y:.1f}x" if x is not None and y is not None else "n/a")
        print(f"{label} = {', '.join(parts)} at {', '.join(map(str, steps))} steps")

    for load in loads:
        for policy in policies:
            if "new" in policies and policy != "new":
                ratios(f"{load}: {policy} / new", [((load, policy), (load, "new"))] * len(steps))
    if "idle" in loads and "busy" in loads:
        for policy in policies:
            ratios(f"{policy}: busy / idle", [(("busy", policy), ("idle", policy))] * len(steps))
    standard = QUALITY_STEPS["standard"]
    if {25, standard} <= set(steps) and {"old", "new"} <= set(policies):
        for load in loads:
            before, now = cell(load, "old", 25), cell(load, "new", standard)
            if before is not None and now is not None:
                print(
                    f"{load}: a default job took {before:.2f} s (25 steps, old policy), now {now:.2f} s "
                    f"({standard} steps, new policy): {before / now:.1f}x faster"
                )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


# -- quality ----------------------------------------------------------------------------------------------------


def _velocity(model: Any, text: Any, ids: Any, guidance: float) -> Callable[[Any, float], Any]:
    import torch

    def velocity(x: Any, t: float) -> Any:
        v = model(torch.cat([x, x]), torch.full((2,), t), ids, text)
        return v[1:] + guidance * (v[:1] - v[1:])

    return velocity


def _two_stage(velocity: Callable[[Any, float], Any], noise: Any, steps: int, kind: str) -> Any:
    """Heun (Euler at the last step, which ends at t=0) or midpoint steps from t=1 to 0."""
    import torch

    x = noise
    times = torch.linspace(1.0, 0.0, steps + 1).tolist()
    for t, t_next in itertools.pairwise(times):
        h = t_next - t
        d1 = velocity(x, t)
        if kind == "heun":
            x_end = x + h * d1
            x = x_end if t_next == 0.0 else x + h * (d1 + velocity(x_end, t_next)) / 2
        else:
            x = x + h * velocity(x + h / 2 * d1, t + h / 2)
    return x.clamp(-1.0, 1.0)


def quality(guidance: float, out: Path, prompts_count: int, euler: list[int], two_stage: list[int]) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from training.demo_model.captions import evaluation_prompts
    from training.demo_model.evaluate import contact_sheet, load
    from training.demo_model.world import render

    from studiolo.engines.demo.model import euler_sample

    torch.set_num_threads(1)
    model = load(None)
    tokenizer = model.config.tokenizer()
    uncond = torch.tensor([tokenizer.encode("")])
    chosen = evaluation_prompts()[:prompts_count]
    settings: dict[str, tuple[int, Callable[[Any, Any, Any, Any], Any]]] = {}
    for n in euler:
        settings[f"euler {n}"] = (
            n,
            lambda noise, ids, text, v, n=n: euler_sample(model, noise, ids, uncond, n, guidance),
        )
    for n in two_stage:
        settings[f"heun {n}"] = (2 * n - 1, lambda noise, ids, text, v, n=n: _two_stage(v, noise, n, "heun"))
        settings[f"midpoint {n}"] = (2 * n, lambda noise, ids, text, v, n=n: _two_stage(v, noise, n, "midpoint"))
    images: dict[str, list[Any]] = {name: [] for name in settings}
    started = time.perf_counter()
    for index, (_scene, prompt) in enumerate(chosen):
        ids = torch.tensor([tokenizer.encode(prompt, drop_unknown=True)])
        with torch.inference_mode():
            text = model.encode_text(torch.cat([ids, uncond]))
            v = _velocity(model, text, torch.cat([ids, uncond]), guidance)
            noise = torch.randn((1, 3, 64, 64), generator=torch.Generator().manual_seed(index))
            for name, (_nfe, sample) in settings.items():
                x = sample(noise, ids, text, v)
                images[name].append(((x[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8))
    print(f"{len(chosen)} prompts, CFG {guidance}, {time.perf_counter() - started:.0f} s on 1 thread")

    def features(pictures: Any) -> Any:
        x = np.asarray(pictures, dtype=np.float32).reshape(len(pictures), 8, 8, 8, 8, 3)
        return np.concatenate([x.mean(axis=(2, 4)).reshape(len(x), -1), x.std(axis=(2, 4)).reshape(len(x), -1)], 1)

    scenes = [scene for scene, _ in chosen]
    centroids = np.stack([features(np.stack([render(s, 10_000 + k) for k in range(48)])).mean(0) for s in scenes])

    def following(pictures: Any) -> int:
        distance = ((features(pictures)[:, None] - centroids[None]) ** 2).sum(-1)
        return int((distance.argmin(1) == np.arange(len(pictures))).sum())

    def psnr(a: Any, b: Any) -> float:
        mse = ((np.asarray(a, np.float32) - np.asarray(b, np.float32)) ** 2).mean(axis=(1, 2, 3))
        return float((10 * np.log10(255**2 / np.maximum(mse, 1e-6))).mean())

    def mad(a: Any, b: Any) -> float:
        return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())

    def detail(a: Any) -> float:
        x = np.asarray(a, np.float32)
        lap = 4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
        return float(np.abs(lap).mean())

    ceiling = following(np.stack([render(s, 99) for s in scenes]))
    # Compared with the old default (25 steps; the second-longest Euler walk) and the longest walk.
    ref_name, exact_name = f"euler {euler[-2]}", f"euler {euler[-1]}"
    ref, exact = images[ref_name], images[exact_name]
    print(f"prompt following: the world's own renders score {ceiling}/{len(chosen)}")
    print(
        f"{'setting':12s} {'NFE':>4s} {'PSNR/' + ref_name:>15s} {'MAD':>6s} {'PSNR/' + exact_name:>16s} "
        f"{'MAD':>6s} {'follows':>8s} {'detail':>7s}"
    )
    for name, (nfe, _s) in sorted(settings.items(), key=lambda item: (item[1][0], item[0])):
        pics = images[name]
        print(
            f"{name:12s} {nfe:4d} {psnr(pics, ref):15.2f} {mad(pics, ref):6.2f} {psnr(pics, exact):16.2f} "
            f"{mad(pics, exact):6.2f} {following(pics):5d}/{len(chosen):<2d} {detail(pics):7.1f}"
        )
    out.mkdir(parents=True, exist_ok=True)
    labels = [prompt for _, prompt in chosen]
    for n in euler:
        if n <= 25:
            path = out / f"demo-euler-{n:03d}.png"
            contact_sheet([Image.fromarray(a) for a in images[f"euler {n}"]], labels).save(path)
            print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 12, 25])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per child before it skips the rest")
    parser.add_argument("--loads", nargs="+", choices=["idle", "busy"], default=["idle", "busy"])
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help="CFG (default: the model's own)")
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--prompts", type=int, default=40, help="--quality: how many of the 40 prompts")
    parser.add_argument("--out", type=Path, default=Path("/tmp/studiolo-demo-bench"))
    parser.add_argument("--smoke", action="store_true", help="the smallest settings of both parts")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.steps, args.guidance, args.budget)
    elif args.smoke:
        speed([1], 1, ["idle", "busy"], ["old", "new"], args.guidance, args.budget)
        quality(args.guidance, args.out, 2, [1, 2, 3], [1])
    elif args.quality:
        quality(args.guidance, args.out, args.prompts, [4, 6, 8, 12, 25, 100], [2, 3, 4, 5, 6, 7, 13])
    else:
        speed(args.steps, args.rounds, args.loads, args.policies, args.guidance, args.budget)


if __name__ == "__main__":
    main()
