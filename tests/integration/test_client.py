"""The Python client (studiolo.client) and `studiolo generate --server` against the real app served by uvicorn with
one in-process worker (echo engine, accounts on, an API key), plus tiny local servers for what the app will not do
on demand (a 429 with Retry-After, an event stream that drops)."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from typer.testing import CliRunner

from studiolo.app import create_app
from studiolo.cli import app as cli_app
from studiolo.client import (
    AsyncStudiolo,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    SSEDecoder,
    Studiolo,
    StudioloConnectionError,
)
from studiolo.domain.accounts.audit import Origin
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.accounts.schemas import ApiKeyCreate
from studiolo.services import Services, build_services
from tests.conftest import PgDatabases, make_settings
from tests.helpers import png_bytes
from tests.threaded_server import ThreadedServer

SMALL: dict[str, Any] = {"size": "64x64", "steps": 2}
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Live:
    url: str
    key: str
    services: Services


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, migrated_db_template: Path, pg_databases: PgDatabases | None
) -> Iterator[Live]:
    data = tmp_path_factory.mktemp("client") / "data"
    data.mkdir()
    db_url = pg_databases.fresh() if pg_databases is not None else ""
    if not db_url:
        shutil.copy(migrated_db_template, data / "studiolo.db")
    # A step takes 20 ms: a 2-step job is quick, a 60-step one holds the single worker while a test looks on.
    settings = make_settings(
        data, database_url=db_url, inline_workers=1, echo_step_delay=0.02, worker_poll_seconds=0.05
    )
    services = build_services(settings, upgrade_db=False)
    server = ThreadedServer(create_app(services=services, start_workers=False), "studiolo app")
    url = server.start()
    services.start_workers(1)  # the server runs without its lifespan, which would start them
    key = services.keys.create(LOCAL_USER_ID, ApiKeyCreate(name="client tests"), Origin("127.0.0.1", "tests")).key
    yield Live(url, key, services)
    server.stop()
    services.close(timeout=10)
    if pg_databases is not None:
        pg_databases.drop(db_url)


@pytest.fixture(scope="module")
def client(live: Live) -> Iterator[Studiolo]:
    with Studiolo(live.url, live.key) as c:
        yield c


def occupy_worker(client: Studiolo) -> str:
    """A long job on the single worker: the next job waits in the queue behind it."""
    blocker = client.generate("a long one", size="64x64", steps=60).id
    deadline = time.monotonic() + 10
    while client.get_job(blocker).status == "queued" and time.monotonic() < deadline:
        time.sleep(0.02)
    return blocker


# --- the real app ------------------------------------------------------------------------------------------------


def test_generate_and_wait_returns_downloadable_pngs(client: Studiolo) -> None:
    seen: list[str] = []
    job = client.generate_and_wait("a lighthouse at dusk", n=2, seed=7, on_event=lambda e: seen.append(e.type), **SMALL)
    assert job.status == "succeeded" and job.seeds == [7, 8]
    assert [o.seed for o in job.outputs] == [7, 8]
    assert seen[-1] == "succeeded"
    for output in job.outputs:
        data = client.download(output.image_id)
        assert data.startswith(PNG)
        assert Image.open(io.BytesIO(data)).size == (64, 64)
    assert client.download(job.outputs[0].image_id, size="150")[8:12] == b"WEBP"
    page = client.list_images(job=job.id)
    assert {i.id for i in page.items} == {o.image_id for o in job.outputs}
    assert client.get_image(job.outputs[0].image_id).prompt == "a lighthouse at dusk"
    assert any(m.id == "echo" for m in client.models().items)
    assert client.styles().styles


def test_img2img_and_inpaint_upload_bytes_paths_and_pil_images(client: Studiolo, tmp_path: Path) -> None:
    init = Image.new("RGB", (64, 64), (10, 200, 10))
    img2img = client.generate_and_wait("greener", init_image=init, strength=0.5, **SMALL)
    assert (img2img.status, img2img.kind) == ("succeeded", "img2img")
    mask = tmp_path / "mask.png"
    mask.write_bytes(png_bytes(mode="L"))
    inpaint = client.generate_and_wait("a door", init_image=png_bytes(), mask_image=mask, **SMALL)
    assert (inpaint.status, inpaint.kind) == ("succeeded", "inpaint")
    assert client.download(inpaint.outputs[0].image_id).startswith(PNG)


def test_async_client_follows_the_event_sequence(live: Live, client: Studiolo) -> None:
    blocker = occupy_worker(client)

    async def scenario() -> tuple[list[str], Any]:
        async with AsyncStudiolo(live.url, live.key) as aclient:
            job = await aclient.generate("a queued one", **SMALL)
            types = [event.type async for event in aclient.events(job.id)]
            return types, await aclient.get_job(job.id)

    types, job = asyncio.run(scenario())
    assert types[0] == "queued"
    assert types[-1] == "succeeded" and job.status == "succeeded"
    assert types.index("started") < types.index("progress") < types.index("succeeded")
    assert "output" in types
    assert client.get_job(blocker).status == "succeeded"


def test_cancel_a_queued_job(client: Studiolo) -> None:
    blocker = occupy_worker(client)
    queued = client.generate("never drawn", **SMALL)
    canceled = client.cancel_job(queued.id)
    assert canceled.status == "canceled"
    assert client.wait(queued.id, timeout=5).status == "canceled"
    assert client.cancel_job(blocker).id == blocker  # the running one stops at its next step
    assert client.wait(blocker, timeout=10).status == "canceled"


def test_errors_are_typed_with_the_servers_code_and_request_id(live: Live, client: Studiolo) -> None:
    with pytest.raises(NotFoundError) as missing:
        client.get_job("no-such-job")
    assert (missing.value.status, missing.value.code) == (404, "job_not_found")
    assert missing.value.request_id
    with pytest.raises(InvalidRequestError) as invalid:
        client.generate("a cat", n=100, size="64x64")
    assert invalid.value.status == 422
    assert [e["loc"][-1] for e in invalid.value.details["errors"]] == ["n"]
    with Studiolo(live.url, "ais_" + "x" * 40) as stranger, pytest.raises(AuthenticationError) as refused:
        stranger.models()
    assert refused.value.status == 401 and refused.value.code

    async def async_404() -> None:
        async with AsyncStudiolo(live.url, live.key) as aclient:
            await aclient.download("no-such-image")

    with pytest.raises(NotFoundError):
        asyncio.run(async_404())


class DropFirstSubmitAnswer(httpx.BaseTransport):
    """The network losing the answer to the first POST /generations after the server handled it."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.submits: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path.endswith("/generations"):
            self.submits.append(request.headers["Idempotency-Key"])
            response.read()
            if len(self.submits) == 1:
                raise httpx.RemoteProtocolError("connection reset after the request was sent", request=request)
        return response


class AsyncDropFirstSubmitAnswer(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.submits: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/generations"):
            self.submits.append(request.headers["Idempotency-Key"])
            await response.aread()
            if len(self.submits) == 1:
                raise httpx.RemoteProtocolError("connection reset after the request was sent", request=request)
        return response


def job_ids(client: Studiolo) -> set[str]:
    return {j.id for j in client.list_jobs(limit=100).items}


def test_a_retried_submit_creates_exactly_one_job(live: Live, client: Studiolo) -> None:
    before = job_ids(client)
    transport = DropFirstSubmitAnswer()
    with Studiolo(live.url, live.key, transport=transport) as flaky:
        accepted = flaky.generate("only once", **SMALL)
    assert len(transport.submits) == 2 and transport.submits[0] == transport.submits[1]
    assert accepted.replayed  # the second try found the job the first one queued
    assert job_ids(client) - before == {accepted.id}

    async def async_submit() -> str:
        atransport = AsyncDropFirstSubmitAnswer()
        async with AsyncStudiolo(live.url, live.key, transport=atransport) as aflaky:
            job = await aflaky.generate("only once, async", **SMALL)
        assert len(set(atransport.submits)) == 1 and len(atransport.submits) == 2
        return job.id

    before = job_ids(client)
    new_id = asyncio.run(async_submit())
    assert job_ids(client) - before == {new_id}


# --- the CLI's remote mode --------------------------------------------------------------------------------------


def test_cli_generate_on_a_server_writes_the_files_and_the_same_lines(live: Live, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli_app,
        ["generate", "a fox", "--size", "64x64", "--steps", "2", "-n", "2", "--seed", "3", "--out", str(out)],
        env={"STUDIOLO_SERVER": live.url, "STUDIOLO_API_KEY": live.key, "STUDIOLO_DATA_DIR": str(tmp_path / "none")},
    )
    assert result.exit_code == 0, result.output
    assert "done job" in result.stderr and "seeds [3, 4]" in result.stderr
    lines = result.stdout.splitlines()
    images = [line.split() for line in lines if line.startswith("image ")]
    assert [(w[0], w[2], w[3]) for w in images] == [("image", "seed", "3"), ("image", "seed", "4")]
    files = sorted(out.iterdir())
    assert len(files) == 2 and all(f.read_bytes().startswith(PNG) for f in files)
    assert sorted(line for line in lines if line.startswith(str(out))) == [str(f) for f in files]
    assert not (tmp_path / "none").exists()  # nothing local was opened


def test_cli_models_list_on_a_server(live: Live, tmp_path: Path) -> None:
    env = {"STUDIOLO_SERVER": live.url, "STUDIOLO_API_KEY": live.key, "STUDIOLO_DATA_DIR": str(tmp_path / "none")}
    listed = CliRunner().invoke(cli_app, ["models", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = [line for line in listed.stdout.splitlines() if " echo " in line]
    assert rows and "*" in rows[0]  # the server's default model, marked as locally
    assert not (tmp_path / "none").exists()
    refused = CliRunner().invoke(cli_app, ["models", "list"], env={**env, "STUDIOLO_API_KEY": "ais_wrong"})
    assert refused.exit_code == 1 and "error" in refused.stderr


def test_cli_server_errors_print_the_servers_words(live: Live) -> None:
    runner = CliRunner()
    bad = runner.invoke(cli_app, ["generate", "a fox", "-n", "100", "--server", live.url, "--api-key", live.key])
    assert bad.exit_code == 2, bad.output
    assert "invalid_input" in bad.stderr or "n:" in bad.stderr
    refused = runner.invoke(cli_app, ["generate", "a fox", "--server", live.url, "--api-key", "ais_wrong"])
    assert refused.exit_code == 1 and "error" in refused.stderr
    gone = runner.invoke(cli_app, ["generate", "a fox", "--server", "http://127.0.0.1:9", "--api-key", "k"])
    assert gone.exit_code == 1 and "server_unreachable" in gone.stderr


# --- tiny servers: 429 then 200, a dropping event stream ---------------------------------------------------------


@dataclass
class Tiny:
    url: str
    hits: dict[str, int]


JOB = {
    "id": "j1",
    "kind": "txt2img",
    "status": "succeeded",
    "model": "echo",
    "params": {},
    "seeds": [1],
    "created_at": "2026-12-06T10:00:00Z",
    "urls": {"get": "/api/v1/jobs/j1", "cancel": "/api/v1/jobs/j1/cancel", "events": "/api/v1/jobs/j1/events"},
}


@pytest.fixture(scope="module")
def tiny() -> Iterator[Tiny]:
    hits: dict[str, int] = {}

    def count(name: str) -> int:
        hits[name] = hits.get(name, 0) + 1
        return hits[name]

    async def models(request: Request) -> Response:
        if count("models") % 2 == 1:
            body = {"error": {"code": "rate_limited", "message": "Slow down.", "details": {}}, "request_id": "r1"}
            return JSONResponse(body, status_code=429, headers={"Retry-After": "1"})
        return JSONResponse({"default": "echo", "items": []})

    async def busy(request: Request) -> Response:
        count("styles")
        return JSONResponse({"error": {"code": "service_unavailable", "message": "busy"}}, status_code=503)

    async def events(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        n = count(f"events:{job_id}")

        async def frames() -> Any:
            yield b"retry: 10\n\n"
            if n == 1:
                yield b'event: queued\ndata: {"type": "queued", "position": 1}\n\n'
                return  # dropped: the client reconnects once
            if job_id == "j1":
                yield b'event: progress\r\ndata: {"type": "progress",\r\ndata: "step": 1, "total": 2}\r\n\r\n'
                yield b": keep-alive\n\n"
                yield f"event: succeeded\ndata: {json.dumps({'type': 'succeeded', 'job': JOB})}\n\n".encode()

        return StreamingResponse(frames(), media_type="text/event-stream")

    async def job(request: Request) -> Response:
        count("job")
        return JSONResponse({**JOB, "id": request.path_params["job_id"]})

    app = Starlette(
        routes=[
            Route("/api/v1/models", models),
            Route("/api/v1/styles", busy),
            Route("/api/v1/jobs/{job_id}/events", events),
            Route("/api/v1/jobs/{job_id}", job),
        ]
    )
    server = ThreadedServer(app, "tiny server")
    yield Tiny(server.start(), hits)
    server.stop()


def test_429_is_retried_after_retry_after(tiny: Tiny) -> None:
    with Studiolo(tiny.url) as c:
        started = time.monotonic()
        assert c.models().default == "echo"
        assert time.monotonic() - started >= 1.0
    with Studiolo(tiny.url, max_retries=0) as impatient, pytest.raises(RateLimitError) as limited:
        impatient.models()
    assert limited.value.retry_after == 1.0 and limited.value.request_id == "r1"

    async def async_models() -> str:
        async with AsyncStudiolo(tiny.url) as ac:
            await ac.models()  # after the 429 above, this one gets the 200 at once
            return (await ac.models()).default

    started = time.monotonic()
    assert asyncio.run(async_models()) == "echo"
    assert time.monotonic() - started >= 1.0


def test_503_is_retried_then_raised_and_a_dead_server_is_a_connection_error(tiny: Tiny) -> None:
    with Studiolo(tiny.url, max_retries=2) as c:
        c.retry = RetryPolicy(max_retries=2, backoff=0.01)
        with pytest.raises(ServerError) as failed:
            c.styles()
    assert (failed.value.status, failed.value.code) == (503, "service_unavailable")
    assert tiny.hits["styles"] == 3  # the first try and two retries
    with Studiolo("http://127.0.0.1:9", max_retries=1) as dead, pytest.raises(StudioloConnectionError):
        dead.get_job("x")


def test_events_reconnect_once_after_a_drop(tiny: Tiny) -> None:
    with Studiolo(tiny.url) as c:
        events = list(c.events("j1"))
    assert [e.type for e in events] == ["queued", "progress", "succeeded"]
    progress = events[1].progress()
    assert progress is not None and (progress.step, progress.total) == (1, 2)
    assert events[-1].job is not None and events[-1].job.status == "succeeded"


def test_wait_polls_when_the_stream_cannot_be_followed(tiny: Tiny) -> None:
    polls = tiny.hits.get("job", 0)
    with Studiolo(tiny.url) as c:
        job = c.wait("j2", timeout=5)  # its stream drops twice without an end
    assert job.id == "j2" and job.status == "succeeded"
    assert tiny.hits["events:j2"] == 2 and tiny.hits["job"] == polls + 1


# --- the SSE decoder on raw frames -------------------------------------------------------------------------------


def test_sse_decoder_reads_multi_line_data_comments_and_every_line_end() -> None:
    decoder = SSEDecoder()
    raw = ': hello\r\nretry: 1500\r\n\r\nevent: progress\r\ndata: {"a":\r\ndata:1}\r\nid: 7\r\n\r\ndata:x\rdata: y\r\r'
    events = []
    for i in range(0, len(raw), 3):  # chunks that split lines, and a CRLF, anywhere
        events += decoder.feed(raw[i : i + 3])
    events += decoder.close()
    assert [(e.event, e.data, e.id) for e in events] == [("progress", '{"a":\n1}', "7"), ("message", "x\ny", "7")]
    assert decoder.retry == 1500 and events[0].retry == 1500


def test_sse_decoder_ignores_bad_fields_and_drops_an_unfinished_frame() -> None:
    decoder = SSEDecoder()
    events = decoder.feed("retry: soon\nunknown: 1\nevent: empty\n\ndata\n\ndata: last\n")
    assert [(e.event, e.data) for e in events] == [("message", "")]
    assert decoder.retry is None
    assert decoder.close() == []  # "data: last" never got its blank line
