"""`studiolo serve` with the demo model, as a fresh install runs it (issue 13): the model's own defaults (8 steps,
CFG 4) and its thread policy in the API process, where in-process workers run the jobs."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import Launcher, studiolo_env
from tests.e2e.test_server import submit, wait_job


def test_serve_runs_demo_jobs_with_its_defaults_on_one_thread_without_spinning(
    launcher: Launcher, tmp_path: Path
) -> None:
    env = studiolo_env(tmp_path / "data", default_model="stabilityai/sd-turbo", log_level="info")
    env.pop("OMP_WAIT_POLICY", None)  # the server must choose it itself, before its workers load torch
    server = launcher.server(env, tmp_path)

    job = wait_job(server, submit(server, prompt="a lighthouse by the sea at dusk")["id"])
    assert job["status"] == "succeeded", job
    assert job["model"] == "studiolo-demo"
    assert (job["params"]["steps"], job["params"]["guidance"]) == (8, 4.0)
    # One line says which threads the demo model runs on; its OpenMP threads sleep instead of spinning.
    (line,) = [line for line in server.output().splitlines() if "torch thread(s) per job" in line]
    assert "1 torch thread(s) per job" in line and "OMP_WAIT_POLICY=PASSIVE" in line, line
    server.stop()
