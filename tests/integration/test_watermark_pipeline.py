"""A generated image, end to end: the worker's output guard marks the stored original with this install's payload
(the one services.py derives from the secret key), the visible mark beside it does not disturb it, and `studiolo
watermark check` finds it in the file the API serves, after JPEG too. On PostgreSQL too when the suite runs there."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from studiolo.app import create_app
from studiolo.cli_watermark import check_file
from studiolo.services import build_services
from tests.helpers import auth_headers, drain


def test_stored_originals_carry_this_installs_mark(settings_factory: Any, tmp_path: Path) -> None:
    settings = settings_factory(watermark_visible="always", secret_key="pipeline-test-key-" + "k" * 32)
    services = build_services(settings, upgrade_db=False)
    try:
        with TestClient(create_app(services=services, start_workers=False)) as client:
            client.headers.update(auth_headers(services))
            r = client.post(
                "/api/v1/generations", json={"prompt": "a lighthouse at dusk", "size": "512x512", "steps": 2}
            )
            assert r.status_code == 202, r.text
            drain(services)
            job = client.get(r.json()["urls"]["get"]).json()
            assert job["status"] == "succeeded", job
            image_id = job["outputs"][0]["image_id"]
            view = client.get(f"/api/v1/images/{image_id}").json()
            original = client.get(f"/api/v1/images/{image_id}/file").content
    finally:
        services.close(timeout=10)
    safety = view["metadata"]["safety"]
    assert safety["invisible_watermark"] is True and safety["visible_watermark"] is True

    png = tmp_path / "original.png"
    png.write_bytes(original)
    report = check_file(png, settings)
    assert report["found"] and report["this_install"], report

    buffer = io.BytesIO()
    Image.open(io.BytesIO(original)).convert("RGB").resize((256, 256)).save(buffer, "JPEG", quality=80)
    shared = tmp_path / "shared.jpg"
    shared.write_bytes(buffer.getvalue())
    assert check_file(shared, settings)["this_install"]

    # Another install (another secret key) finds the mark but not as its own.
    other = check_file(png, settings.model_copy(update={"secret_key": "someone-else-" + "x" * 32}))
    assert other["found"] and not other["this_install"]
