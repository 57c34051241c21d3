"""HTTP routes for generation: submit, jobs (status, cancel, retry, live events), styles, models, stats; and
under /admin, every user's jobs (list, retry) and the install's analytics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from studiolo.deps import (
    AdminPrincipal,
    GenerationCharge,
    GenerationLimit,
    OriginDep,
    OwnerId,
    PrincipalDep,
    ServicesDep,
    current_owner_id,
    multipart_body,
)
from studiolo.domain.gallery.schemas import NO_CONTROL_CHARS
from studiolo.domain.generation.cancel_all import CanceledJobs, cancel_all
from studiolo.domain.generation.pnginfo import PngInfo, read_png_info
from studiolo.domain.generation.rules import params_error
from studiolo.domain.generation.schemas import (
    MAX_CONTROLS,
    AdminAnalytics,
    AdminJobPage,
    BatchAccepted,
    BatchSubmission,
    GenerationParams,
    JobAccepted,
    JobPage,
    JobView,
    ModelList,
    ModelView,
    Stats,
    StyleCatalog,
    StyleCreate,
    StyleView,
    UpscaleRequest,
    UpscalerList,
    model_capabilities,
)
from studiolo.domain.generation.service import GenerationService, Upload
from studiolo.domain.generation.submission import queued_event
from studiolo.engines.base import JobKind
from studiolo.errors import InvalidInput, UnsupportedMediaType
from studiolo.lifecycle import ShutdownNotice
from studiolo.text_guard import refuse_unstorable

# Every route needs a caller whose credential has the scope the method needs (deps.current_owner_id), set here
# for the whole router so that no route can forget it (GET /models once did).
router = APIRouter(tags=["generation"], dependencies=[Depends(current_owner_id)])
admin_router = APIRouter(prefix="/admin", tags=["admin"])
Days = Annotated[int, Query(ge=1, le=365, description="How many UTC days, today included")]
FilterText = Annotated[str | None, Query(max_length=200, pattern=NO_CONTROL_CHARS)]

_TERMINAL = {"succeeded", "failed", "canceled"}
_FILE_FIELDS = ("init_image", "mask_image")
_ADAPTER_FILES = (*(f"control_image_{i}" for i in range(MAX_CONTROLS)), "reference_image")

_GENERATION_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": GenerationParams.model_json_schema(ref_template="#/components/schemas/{model}")
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "kind": {"type": "string", "enum": ["txt2img", "img2img", "inpaint"]},
                        "params": {"type": "string", "description": "GenerationParams as JSON"},
                        "prompt": {"type": "string"},
                        "init_image": {"type": "string", "format": "binary"},
                        "mask_image": {"type": "string", "format": "binary", "description": "white = repaint"},
                        "control_image_0": {
                            "type": "string",
                            "format": "binary",
                            "description": "The picture of controls[0] (control_image_1, _2 for the others)",
                        },
                        "reference_image": {"type": "string", "format": "binary", "description": "IP-Adapter"},
                    },
                }
            },
        },
    }
}


# The route reads the raw body (one-pass parse, a cap from the settings), so its schema is given here, GenerationParams
# inlined: it is no route's declared body, so it has no entry under components to refer to.
_BATCH_SCHEMA = BatchSubmission.model_json_schema()
_BATCH_SCHEMA["properties"]["generations"]["items"] = _BATCH_SCHEMA.pop("$defs")["GenerationParams"]
_BATCH_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": _BATCH_SCHEMA}}}
}


def _json(model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A response from an already validated model (FastAPI would validate a returned model once more)."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json", headers=headers)


def _params(data: Any, generation: GenerationService) -> GenerationParams:
    try:
        return GenerationParams.model_validate(data, context=generation.validation_context)
    except ValidationError as exc:
        raise params_error(exc) from exc


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _parse_batch(request: Request, max_items: int, generation: GenerationService) -> list[GenerationParams]:
    if _content_type(request) not in ("", "application/json"):
        raise UnsupportedMediaType("Send application/json.", code="unsupported_content_type")
    context = {**generation.validation_context, "max_items": max_items}
    try:
        batch = BatchSubmission.model_validate_json(await request.body() or b"null", context=context)
    except ValidationError as exc:
        types = {e["type"] for e in exc.errors()}
        if "json_invalid" in types:
            raise InvalidInput("The body is not valid JSON.", code="invalid_json") from exc
        if "too_many_generations" in types:
            raise InvalidInput(
                f"At most {max_items} generations per batch.",
                code="too_many_generations",
                details={"limit": max_items},
            ) from exc
        raise params_error(exc, "body") from exc  # e.g. body.generations.3.prompt
    return batch.generations


async def _parse_submission(
    request: Request, generation: GenerationService
) -> tuple[GenerationParams, JobKind, Upload | None, Upload | None, dict[str, bytes]]:
    content_type = _content_type(request)
    if content_type in ("", "application/json"):
        # pydantic-core parses and validates in one pass: the submit hot path (bench/api.py).
        try:
            body = await request.body() or b"null"
            params = GenerationParams.model_validate_json(body, context=generation.validation_context)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                raise InvalidInput("The body is not valid JSON.", code="invalid_json") from exc
            raise params_error(exc) from exc
        return params, "txt2img", None, None, {}
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            "Send application/json, or multipart/form-data for image uploads.", code="unsupported_content_type"
        )
    form = await request.form()
    fields: dict[str, Any] = {}
    if "params" in form:
        raw = form["params"]
        if not isinstance(raw, str):
            raise InvalidInput("'params' must be a JSON text field.", code="invalid_json")
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            # Not only JSONDecodeError: nesting past the interpreter's recursion limit ("[" * 100000) raises
            # RecursionError, and an integer of over 4300 digits a plain ValueError; both were 500s
            # (tests/integration/test_malformed_json.py).
            raise InvalidInput("'params' is not valid JSON.", code="invalid_json") from exc
        if not isinstance(parsed, dict):
            raise InvalidInput("'params' must be a JSON object.", code="invalid_json")
        fields.update(parsed)
    for key, value in form.multi_items():
        if key in ("params", "kind", *_FILE_FIELDS, *_ADAPTER_FILES) or isinstance(value, UploadFile):
            continue
        if key == "tags":
            fields.setdefault("tags", []).append(value)
        elif value != "":
            fields[key] = value
    refuse_unstorable(fields, "form fields")  # TextGuard reads no multipart bodies: they carry binary files
    kind_raw = form.get("kind")
    files = {name: form.get(name) for name in _FILE_FIELDS}
    implied = "inpaint" if files["mask_image"] else "img2img" if files["init_image"] else "txt2img"
    kind_value = kind_raw if isinstance(kind_raw, str) else implied
    if kind_value not in ("txt2img", "img2img", "inpaint"):
        raise InvalidInput("kind must be txt2img, img2img or inpaint.", code="invalid_kind")
    kind: JobKind = kind_value  # type: ignore[assignment]
    params = _params(fields, generation)
    uploads: dict[str, Upload] = {}
    modes: tuple[tuple[str, Literal["RGB", "L"]], ...] = (("init_image", "RGB"), ("mask_image", "L"))
    for name, mode in modes:
        f = files[name]
        if isinstance(f, UploadFile):
            data = await f.read()
            uploads[name] = await run_in_threadpool(generation.validate_upload, data, field=name, mode=mode)
        elif f is not None:
            raise InvalidInput(f"'{name}' must be a file upload.", code="invalid_upload", details={"field": name})
    # Issue 19: ControlNet and reference pictures, validated with the request's other adapter inputs at submit.
    adapter_files: dict[str, bytes] = {}
    for name in _ADAPTER_FILES:
        f = form.get(name)
        if isinstance(f, UploadFile):
            adapter_files[name] = await f.read()
        elif f is not None:
            raise InvalidInput(f"'{name}' must be a file upload.", code="invalid_upload", details={"field": name})
    return params, kind, uploads.get("init_image"), uploads.get("mask_image"), adapter_files


@router.post(
    "/generations",
    status_code=202,
    response_model=JobAccepted,
    openapi_extra=_GENERATION_BODY,
    summary="Queue a generation (JSON for txt2img; multipart with init_image/mask_image for img2img and inpaint)",
    dependencies=[GenerationLimit],
)
async def submit_generation(
    request: Request,
    services: ServicesDep,
    owner: OwnerId,
    principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    params, kind, init, mask, adapter_files = await _parse_submission(request, services.generation)
    accepted, created = await run_in_threadpool(
        lambda: services.generation.submit(
            owner,
            params,
            kind=kind,
            init_image=init,
            mask_image=mask,
            files=adapter_files,
            idempotency_key=idempotency_key,
            as_admin=principal.is_admin,
        )
    )
    headers = {"Location": accepted.urls.get}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return _json(accepted, status_code=202, headers=headers)


@router.post(
    "/generations/batch",
    status_code=202,
    response_model=BatchAccepted,
    openapi_extra=_BATCH_BODY,
    summary="Queue many txt2img generations at once, all or none (each counts against the generation rate limit)",
)
async def submit_generation_batch(
    request: Request,
    services: ServicesDep,
    owner: OwnerId,
    charge: GenerationCharge,
    principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    """Jobs come back in the order of ``generations``. An item that is refused (unknown model, image too large, ...)
    keeps its usual status and code, names itself in ``details.index``, and nothing is queued."""
    items = await _parse_batch(request, services.settings.max_batch_submissions, services.generation)
    charge(len(items))
    accepted, created = await run_in_threadpool(
        lambda: services.generation.submit_batch(
            owner, items, idempotency_key=idempotency_key, as_admin=principal.is_admin
        )
    )
    return _json(accepted, status_code=202, headers=None if created else {"Idempotent-Replayed": "true"})


@router.get("/jobs", response_model=JobPage)
def list_jobs(
    services: ServicesDep,
    owner: OwnerId,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: str | None = None,
) -> JobPage:
    return services.generation.list(owner, status=status, limit=limit, cursor=cursor)


@router.get("/jobs/{job_id}", response_model=JobView)
def get_job(job_id: str, services: ServicesDep, owner: OwnerId) -> Response:
    # Clients poll this: a ready Response skips FastAPI validating the JobView a second time.
    return _json(services.generation.get(owner, job_id))


@router.post("/jobs/cancel-all", response_model=CanceledJobs)
def cancel_all_jobs(services: ServicesDep, owner: OwnerId) -> CanceledJobs:
    """Cancel every queued job of yours and ask every running one to stop at its next step."""
    return cancel_all(services.generation, owner)


@router.post("/jobs/{job_id}/cancel", response_model=JobView)
def cancel_job(job_id: str, services: ServicesDep, owner: OwnerId) -> JobView:
    return services.generation.cancel(owner, job_id)


@router.post("/jobs/{job_id}/retry", response_model=JobAccepted, status_code=202, dependencies=[GenerationLimit])
def retry_job(job_id: str, services: ServicesDep, owner: OwnerId) -> JobAccepted:
    return services.generation.retry(owner, job_id)


# The last event of a stream whose server shuts down (a restart, most likely): the job goes on; reconnect.
_SHUTDOWN_EVENT: dict[str, Any] = {
    "type": "shutdown",
    "message": "The server is shutting down; reconnect to keep following the job.",
}


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, default=str)}\n\n".encode()


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events until the job ends"}},
)
async def job_events(job_id: str, request: Request, services: ServicesDep, owner: OwnerId) -> StreamingResponse:
    """Live job events: queued{position}, started, progress{step,total,image,images},
    preview{step,total,image,images,data_url}, output, succeeded, failed, canceled; and shutdown{message} when the
    server stops while the job goes on (reconnect).

    ``step`` of ``total`` are the steps of the engine's current sampling call; ``image`` is the 1-based image it is
    making when it makes them one after another, 0 when it samples all ``images`` in one call (JobProgress).
    ``preview`` carries a look at the image being made in ``data_url`` as ``data:image/webp;base64,...`` (at most
    256 px, a few KB), when the engine offers one: at most about twice a second, never for the last step (the output
    follows), not at all with STUDIOLO_PREVIEWS=false. Events published in this process arrive at once;
    the row is re-read every second as well, so a job run by a worker in another process is followed too
    (progress then arrives at that pace, and previews only through the Redis relay).
    """
    gen = services.generation
    first = await run_in_threadpool(gen.get, owner, job_id)  # 404 for someone else's job, before streaming
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def deliver(ev: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(inbox.put_nowait, ev)

    unsubscribe = services.events.subscribe(job_id, deliver)
    # The server going away ends the stream with a last event (clients reconnect after `retry`), instead of the
    # server cancelling it after its grace period (tests/e2e/test_serve_lifecycle.py::test_ctrl_c_ends_event_streams).
    notice: ShutdownNotice = request.app.state.shutdown_notice
    stop_listening = notice.subscribe(lambda: deliver(_SHUTDOWN_EVENT))

    def snapshot_events(view: JobView) -> list[dict[str, Any]]:
        if view.status == "queued":
            return [queued_event(view.queue_position, view.queue_position_capped)]
        if view.status == "running":
            return [
                {"type": "started", "attempt": view.attempts},
                {"type": "progress", **view.progress.model_dump()},
            ]
        return [_terminal_event(view)]

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n\n"
            last_status, last_at = first.status, _position(first.progress.image, first.progress.step)
            for ev in snapshot_events(first):
                yield _sse(ev)
            if first.status in _TERMINAL:
                return
            idle = 0.0
            while True:
                try:
                    ev = await asyncio.wait_for(inbox.get(), timeout=1.0)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    view = await run_in_threadpool(gen.get, owner, job_id)
                    if view.status in _TERMINAL:
                        yield _sse(_terminal_event(view))
                        return
                    # The row's progress is written less often than live events arrive, so it may lag behind
                    # what this stream already sent: only a newer step (or a new status) is news.
                    at = _position(view.progress.image, view.progress.step)
                    if view.status != last_status or at > last_at:
                        for snap in snapshot_events(view):
                            yield _sse(snap)
                        last_status, last_at = view.status, at
                    idle += 1.0
                    if idle >= 15.0:
                        idle = 0.0
                        yield b": keep-alive\n\n"
                    continue
                idle = 0.0
                if ev is _SHUTDOWN_EVENT:
                    yield _sse(ev)
                    return
                if ev["type"] in _TERMINAL:
                    # Re-read so the terminal event carries the final outputs/error from the committed row.
                    view = await run_in_threadpool(gen.get, owner, job_id)
                    yield _sse(_terminal_event(view) if view.status in _TERMINAL else ev)
                    return
                if ev["type"] == "progress":
                    if last_status == "queued":
                        # The job started between this stream's first read and its subscription, so the
                        # "started" event went by unseen: say it before the first step.
                        yield _sse({"type": "started", "attempt": first.attempts + 1})
                    last_status, last_at = "running", _position(int(ev.get("image", 0)), int(ev["step"]))
                elif ev["type"] in ("queued", "started"):
                    last_status = "queued" if ev["type"] == "queued" else "running"
                yield _sse(ev)
        finally:
            stop_listening()
            unsubscribe()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def _position(image: int, step: int) -> tuple[int, int]:
    """Where a job's progress is, in order: steps start again at 1 with each image an engine makes in turn."""
    return image, step


def _terminal_event(view: JobView) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": view.status, "job": view.model_dump(mode="json")}
    if view.status == "succeeded":
        ev["image_ids"] = [o.image_id for o in view.outputs]
    elif view.error:
        ev["error"] = view.error.model_dump()
    return ev


@router.get("/styles", response_model=StyleCatalog)
def list_styles(services: ServicesDep, owner: OwnerId) -> StyleCatalog:
    return services.generation.style_catalog(owner)


@router.post("/styles", response_model=StyleView, status_code=201)
def create_style(data: StyleCreate, services: ServicesDep, owner: OwnerId) -> StyleView:
    return services.generation.create_style(owner, data)


@router.delete("/styles/{slug}", status_code=204)
def delete_style(slug: str, services: ServicesDep, owner: OwnerId) -> Response:
    services.generation.delete_style(owner, slug)
    return Response(status_code=204)


_PNG_INFO_BODY = multipart_body(["file"], {"file": {"type": "string", "format": "binary", "description": "a PNG"}})


@router.post("/png-info", response_model=PngInfo, openapi_extra=_PNG_INFO_BODY)
async def png_info(request: Request, services: ServicesDep) -> PngInfo:
    """The generation settings a PNG carries (Studiolo's own, AUTOMATIC1111's "parameters" text or a ComfyUI
    graph), as GenerationParams fields. Stateless: nothing is stored. ``source`` is null when none was found."""
    if _content_type(request) != "multipart/form-data":
        raise UnsupportedMediaType("Send multipart/form-data with a 'file' field.", code="unsupported_content_type")
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("Send the PNG as the 'file' upload.", code="invalid_upload", details={"field": "file"})
    data = await upload.read()
    limit = services.settings.max_upload_bytes
    return await run_in_threadpool(read_png_info, data, max_bytes=limit)


@router.get("/models", response_model=ModelList)
def list_models(services: ServicesDep) -> ModelList:
    """Installed and built-in models, with what each can do (``capabilities``: the web studio disables what the
    selected model cannot do; a request for it is refused before it is queued)."""
    catalog = services.catalog
    max_pixels = services.settings.max_pixels
    items = [
        ModelView(
            id=m.id,
            engine=m.engine,
            source=m.source,
            arch=m.arch,
            size_bytes=m.size_bytes,
            is_default=m.is_default,
            loaded=m.loaded,
            demo=m.demo,
            remote_model=m.remote_model,
            capabilities=model_capabilities(caps, max_pixels),
            adapters=list(caps.adapters),
            hires=caps.hires,
        )
        for m, caps in ((m, catalog.capabilities(m)) for m in catalog.models())
    ]
    return ModelList(default=catalog.default_model_id(), items=items)


@router.post(
    "/images/{image_id}/upscale",
    status_code=202,
    response_model=JobAccepted,
    summary="Queue an upscale of one of your images (2x or 4x); the result is a new image whose parent_id is this one",
    dependencies=[GenerationLimit],
)
def upscale_image(
    image_id: str,
    data: UpscaleRequest,
    services: ServicesDep,
    owner: OwnerId,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    """A job of kind ``upscale``, followed like a generation (``GET /jobs/{id}``, its events). 404 for an image that
    is not yours; 422 ``unknown_upscaler``, ``invalid_upscale_factor``, or ``image_too_large`` for a result over
    STUDIOLO_MAX_PIXELS."""
    accepted, created = services.upscale.submit(owner, image_id, data, idempotency_key=idempotency_key)
    headers = {"Location": accepted.urls.get}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return _json(accepted, status_code=202, headers=headers)


@router.get("/upscalers", response_model=UpscalerList)
def list_upscalers(services: ServicesDep) -> UpscalerList:
    """The built-in Lanczos upscaler, then the installed upscaler models, each with the factors it makes."""
    return services.upscale.upscalers()


@router.get("/stats", response_model=Stats)
def stats(services: ServicesDep, owner: OwnerId, days: Days = 30) -> Stats:
    return services.generation.stats(owner, days)


@admin_router.get("/jobs", response_model=AdminJobPage)
def admin_list_jobs(
    services: ServicesDep,
    admin: AdminPrincipal,
    status: Annotated[str | None, Query(description="queued, running, succeeded, failed or canceled")] = None,
    user: Annotated[
        str | None, Query(max_length=200, pattern=NO_CONTROL_CHARS, description="Only this user's jobs (a user id)")
    ] = None,
    model: FilterText = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: FilterText = None,
) -> AdminJobPage:
    """Every user's jobs, newest first, each with its owner's id and email."""
    return services.job_admin.list(status=status, user_id=user, model=model, limit=limit, cursor=cursor)


@admin_router.post("/jobs/{job_id}/retry", response_model=JobAccepted, status_code=202)
def admin_retry_job(
    job_id: Annotated[str, Path(max_length=64, pattern=NO_CONTROL_CHARS)],
    services: ServicesDep,
    admin: AdminPrincipal,
    origin: OriginDep,
) -> JobAccepted:
    """Queue any user's failed or canceled job again (as its owner's retry would); recorded in the audit log."""
    return services.job_admin.retry(admin.user_id, job_id, origin)


@admin_router.get("/analytics", response_model=AdminAnalytics)
def admin_analytics(services: ServicesDep, admin: AdminPrincipal, days: Days = 30) -> AdminAnalytics:
    """Jobs, outcomes, images and run times per UTC day over every user; totals; the most used styles and models."""
    return services.analytics.admin(days)
