"""``studiolo backup`` while a server and its worker run, ``studiolo restore`` into a fresh data directory, and a
server on the restored data serving the same gallery to the same account."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Launcher, Server, echo_env, flat, free_port, run_cli

pytestmark = pytest.mark.slow


def all_images(client: httpx.Client) -> dict[str, dict[str, Any]]:
    images: dict[str, dict[str, Any]] = {}
    cursor = ""
    while True:
        page = client.get("/api/v1/images", params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
        images.update({i["id"]: i for i in page["items"]})
        if not page["next_cursor"]:
            return images
        cursor = page["next_cursor"]


def wait_jobs(client: httpx.Client, job_ids: list[str], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    for job_id in job_ids:
        while client.get(f"/api/v1/jobs/{job_id}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline, f"job {job_id} not done after {timeout} s"
            time.sleep(0.1)


def submit(client: httpx.Client, prompt: str, n: int = 1) -> str:
    r = client.post("/api/v1/generations", json={"prompt": prompt, "size": "64x64", "steps": 3, "n": n})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


def test_backup_while_serving_then_restore_serves_the_same_gallery(launcher: Launcher, tmp_path: Path) -> None:
    env = echo_env(tmp_path / "data", echo_step_delay=0.01)
    server = launcher.server(env, tmp_path)  # one in-process worker; signed in as the administrator
    wait_jobs(server.client, [submit(server.client, f"a lighthouse, take {i}", n=2) for i in range(3)])
    r = server.client.post("/api/v1/collections", json={"name": "Favourites"})
    assert r.status_code == 201, r.text
    before = all_images(server.client)
    assert len(before) == 6
    originals = {image_id: server.client.get(f"/api/v1/images/{image_id}/file").content for image_id in before}

    # The server keeps working during the backup: new pictures arrive and some are deleted.
    stop = threading.Event()
    churn: list[str] = []

    def keep_busy() -> None:
        with httpx.Client(base_url=server.url, headers=dict(server.client.headers), timeout=30) as client:
            while not stop.is_set():
                wait_jobs(client, [submit(client, "made during the backup")])
                made = [i for i in all_images(client) if i not in before]
                churn.extend(i for i in made if i not in churn)
                if len(made) > 2:
                    assert client.delete(f"/api/v1/images/{made[-1]}").status_code == 204

    busy = threading.Thread(target=keep_busy, daemon=True)
    busy.start()
    time.sleep(1.0)
    backups = tmp_path / "backups"
    backups.mkdir()
    made = run_cli("backup", str(backups), env=env, cwd=tmp_path)  # a folder: the archive gets a dated name
    stop.set()
    busy.join(60)
    assert made.returncode == 0, made.stdout + made.stderr
    [archive] = backups.glob("studiolo-backup-*.tar")
    assert f"to {archive}" in flat(made.stderr) and stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert churn, "nothing was made while the backup ran"
    print(f"{len(churn)} pictures made (some deleted) while the backup ran")
    token = server.client.headers["Authorization"]
    assert server.stop() in (0, -15), server.output()

    # A fresh data directory: restored once; a second restore over it is refused.
    restored_env = echo_env(tmp_path / "restored")
    checked = run_cli("restore", "--check", str(archive), env=restored_env, cwd=tmp_path)
    assert checked.returncode == 0 and "is a complete backup" in flat(checked.stderr), checked.stderr
    restored = run_cli("restore", str(archive), env=restored_env, cwd=tmp_path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    again = run_cli("restore", str(archive), env=restored_env, cwd=tmp_path)
    assert again.returncode == 1 and "error data_dir_not_empty:" in flat(again.stderr), again.stderr

    port = free_port()
    popen, log = launcher._popen(["serve", "--host", "127.0.0.1", "--port", str(port)], restored_env, tmp_path)
    second = Server(["serve"], popen, log, port=port)
    launcher.procs.append(second)
    second.wait_healthy()
    # The same account signs in with the same password; a token signed before the backup is still valid (the
    # secret key came along).
    login = second.client.post("/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert login.status_code == 200, login.text
    assert second.client.get("/api/v1/auth/me", headers={"Authorization": token}).json()["email"] == ADMIN_EMAIL
    second.client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

    after = all_images(second.client)
    assert set(before) <= set(after)  # every picture made before the backup
    assert set(after) - set(before) <= set(churn)  # and some made during it, nothing else
    for image_id in after:
        file = second.client.get(f"/api/v1/images/{image_id}/file")
        assert file.status_code == 200, (image_id, file.text)
        if image_id in originals:
            assert file.content == originals[image_id]
        assert second.client.get(f"/api/v1/images/{image_id}/file", params={"size": 300}).status_code == 200
    collections = second.client.get("/api/v1/collections").json()
    assert [c["name"] for c in collections["items"]] == ["Favourites"], collections
    assert second.stop() in (0, -15), second.output()
