"""OpenAI's Images API on Studiolo (issue 18): /v1/images/generations, /edits, /variations and /v1/models.

Any OpenAI client (the openai SDK with ``base_url=<server>/v1``, Open WebUI) talks to Studiolo with an ``ais_`` API
key (or a session token) as its Bearer token. Every request becomes an ordinary queued job (same queue, limits,
credits and gallery); the call blocks until the job ends, and a client that goes away leaves the job to finish into
the gallery. Field mapping: compat/openai_params.py; errors in OpenAI's shape: compat/errors.py. The fields and what
each does: docs/compatibility.md "OpenAI Images API". Tests: tests/integration/test_compat_openai.py.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse
from PIL import Image
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from studiolo.compat.errors import openai_error
from studiolo.compat.jobs import TERMINAL, Output, follow_job, read_outputs, wait_for_job
from studiolo.compat.openai_params import (
    VARIATION_PROMPT,
    VARIATION_STRENGTH,
    OpenAIImageRequest,
    encode_output,
    generation_params,
    openai_mask,
    output_size,
    parse_request,
    prompt_tokens,
    resolve_model,
)
from studiolo.deps import GenerationLimit, OwnerId, PrincipalDep, ServicesDep, current_owner_id, multipart_body
from studiolo.domain.accounts.authn import Principal
from studiolo.domain.gallery.links import signed_image_url
from studiolo.domain.generation.catalog import draws_images
from studiolo.domain.generation.models import InstalledModel
from studiolo.domain.generation.schemas import JobView
from studiolo.domain.generation.service import Upload
from studiolo.engines.base import JobKind
from studiolo.errors import InvalidInput, NotFound, StudioloError, UnsupportedMediaType
from studiolo.services import Services
from studiolo.text_guard import refuse_unstorable

router = APIRouter(tags=["openai"], dependencies=[Depends(current_owner_id)])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
_EDIT_FIELDS = {
    "image": {"type": "string", "format": "binary", "description": "The init image (or repeated image[]: the first)"},
    "mask": {"type": "string", "format": "binary", "description": "PNG; transparent pixels = the area to edit"},
    "prompt": {"type": "string"},
    "model": {"type": "string"},
    "n": {"type": "integer"},
    "size": {"type": "string"},
    "response_format": {"type": "string", "enum": ["b64_json", "url"]},
}


class ImageJobFailed(StudioloError):
    """The job behind an OpenAI call failed or was canceled (``details.job_id``); its own code is kept."""

    status_code = 500
    code = "job_failed"


class ContentPolicy(StudioloError):
    """Every image of the job was held for review or refused by the output check."""

    status_code = 400
    code = "content_policy_violation"


# --- submitting ---------------------------------------------------------------------------------------------------


async def _json_body(request: Request) -> Any:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() not in ("", "application/json"):
        raise UnsupportedMediaType("Send application/json.", code="unsupported_content_type")
    try:
        return json.loads(await request.body() or b"null")
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("The body is not valid JSON.", code="invalid_json") from exc


async def _form(request: Request) -> tuple[dict[str, Any], list[bytes], bytes | None]:
    """A multipart request's fields, its images (``image`` or repeated ``image[]``, in order) and its mask."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise UnsupportedMediaType("Send multipart/form-data with the image file(s).", code="unsupported_content_type")
    form = await request.form()
    fields: dict[str, Any] = {}
    images: list[bytes] = []
    mask: bytes | None = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key in ("image", "image[]"):
                images.append(await value.read())
            elif key == "mask":
                mask = await value.read()
            else:
                raise InvalidInput(f"Unexpected file field '{key}'.", code="invalid_upload", details={"param": key})
        elif value != "":
            fields[key.removesuffix("[]")] = value
    refuse_unstorable(fields, "form fields")  # TextGuard reads no multipart bodies: they carry binary files
    if not images:
        raise InvalidInput(
            "Send the image to edit as 'image' (a file).", code="missing_image", details={"param": "image"}
        )
    return fields, images, mask


async def _submit(
    services: Services,
    principal: Principal,
    req: OpenAIImageRequest,
    *,
    prompt: str,
    kind: JobKind,
    init: Upload | None = None,
    mask: Upload | None = None,
    idempotency_key: str | None,
) -> JobView:
    """Queue the job; returns it as stored (its params hold the size and prompt it will make)."""

    def submit() -> JobView:
        model = resolve_model(services, req.model)
        size = output_size(services, req, model, init, principal.user_id)
        params = generation_params(services, req, prompt=prompt, model=model, size=size)
        accepted, _created = services.generation.submit(
            principal.user_id,
            params,
            kind=kind,
            init_image=init,
            mask_image=mask,
            idempotency_key=idempotency_key,
            as_admin=principal.is_admin,
            api_key_id=principal.api_key_id,
        )
        return services.generation.get(principal.user_id, accepted.id)

    return await run_in_threadpool(submit)


# --- answering ----------------------------------------------------------------------------------------------------


def _size(view: JobView) -> str:
    return f"{view.params['width']}x{view.params['height']}"


def _usage(view: JobView, images: int, input_images: int) -> dict[str, Any]:
    """OpenAI's usage block in Studiolo's honest units: input tokens are the prompt's words (plus one per input
    image), output tokens the images returned."""
    words = prompt_tokens(str(view.params.get("prompt", "")))
    return {
        "input_tokens": words + input_images,
        "input_tokens_details": {"text_tokens": words, "image_tokens": input_images},
        "output_tokens": images,
        "output_tokens_details": {"text_tokens": 0, "image_tokens": images},
        "total_tokens": words + input_images + images,
    }


def _outputs(services: Services, owner_id: str, view: JobView) -> list[Output]:
    """The finished job's PNGs; OpenAI-shaped errors for a failed, canceled or entirely held job."""
    if view.status != "succeeded":
        error = view.error
        raise ImageJobFailed(
            error.message if error else f"The job was {view.status}.",
            code=error.code if error else f"job_{view.status}",
            details={"job_id": view.id},
        )
    found = read_outputs(services, owner_id, view)
    if not found:
        held = sum(1 for o in view.outputs if o.review_state == "pending")
        why = (
            f"{held} image(s) are held for review by the output check; they reach your gallery if a moderator "
            "releases them"
            if held
            else f"the output check refused {view.blocked_outputs} image(s)"
        )
        raise ContentPolicy(f"No image to return: {why} (job {view.id}).", details={"job_id": view.id, "held": held})
    return found


def _revised_prompt(view: JobView) -> str | None:
    final = view.params.get("final_prompt")
    return str(final) if final and final != view.params.get("prompt") else None


async def _images_response(
    request: Request, services: Services, owner_id: str, req: OpenAIImageRequest, view: JobView, input_images: int
) -> dict[str, Any]:
    outputs = await run_in_threadpool(_outputs, services, owner_id, view)
    revised = _revised_prompt(view)
    data: list[dict[str, Any]] = []
    if req.response_format == "url":
        base = str(request.base_url)
        for out in outputs:
            image_id = out.output.image_id
            data.append(
                {"url": signed_image_url(services.settings, services.codec, owner_id, image_id, request_base=base)}
            )
    else:
        for out in outputs:
            encoded = await run_in_threadpool(encode_output, out.png, req.format, req.output_compression)
            data.append({"b64_json": base64.b64encode(encoded).decode("ascii")})
    if revised:
        for item in data:
            item["revised_prompt"] = revised
    return {
        "created": int(time.time()),
        "data": data,
        # A url always serves the stored PNG; output_format re-encodes only base64 answers.
        "output_format": "png" if req.response_format == "url" else req.format,
        "size": _size(view),
        "quality": req.quality_name,
        "background": "opaque",  # Studiolo's engines make RGB images: a transparent background is not made
        "usage": _usage(view, len(data), input_images),
    }


def _frame(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


def _error_frame(exc: StudioloError) -> bytes:
    """A data frame with an ``error`` key: the SDK's stream raises it as APIError."""
    _status, body, _headers = openai_error(exc.status_code, exc.code, exc.message, exc.details, None)
    return f"event: error\ndata: {json.dumps({'type': 'error', **body})}\n\n".encode()


def _preview_b64(data_url: str, req: OpenAIImageRequest) -> str:
    """A preview (a small WebP data URL, made by the worker) in the asked output format."""
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])), formats=["WEBP"]) as img:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="PNG")
    return base64.b64encode(encode_output(buf.getvalue(), req.format, req.output_compression)).decode("ascii")


async def _stream(
    services: Services, owner_id: str, req: OpenAIImageRequest, view: JobView, prefix: str, input_images: int
) -> AsyncIterator[bytes]:
    """``{prefix}.partial_image`` frames from the job's previews (at most ``partial_images``), then one
    ``{prefix}.completed`` frame per image; an error frame when the job fails or its images are held."""
    wanted = req.partial_images or 0
    common = {"background": "opaque", "output_format": req.format, "quality": req.quality_name, "size": _size(view)}

    def frame(kind: str, b64: str, **more: Any) -> bytes:
        return _frame({"type": f"{prefix}.{kind}", "b64_json": b64, "created_at": int(time.time()), **more, **common})

    sent = 0
    try:
        async for event in follow_job(services, owner_id, view.id, types={"preview"} if wanted else set()):
            if event["type"] == "preview":
                if sent < wanted and event.get("data_url"):
                    b64 = await run_in_threadpool(_preview_b64, event["data_url"], req)
                    yield frame("partial_image", b64, partial_image_index=sent)
                    sent += 1
            elif event["type"] in TERMINAL:
                done: JobView = event["view"]
                outputs = await run_in_threadpool(_outputs, services, owner_id, done)
                usage = _usage(done, len(outputs), input_images)
                for out in outputs:
                    encoded = await run_in_threadpool(encode_output, out.png, req.format, req.output_compression)
                    yield frame("completed", base64.b64encode(encoded).decode("ascii"), usage=usage)
    except StudioloError as exc:  # a failed or held job, or the wait running out (the job goes on)
        yield _error_frame(exc)


async def _answer(
    request: Request,
    services: Services,
    principal: Principal,
    req: OpenAIImageRequest,
    view: JobView,
    *,
    prefix: str,
    input_images: int = 0,
) -> Response:
    if req.stream:
        return StreamingResponse(
            _stream(services, principal.user_id, req, view, prefix, input_images),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    done = await wait_for_job(services, principal.user_id, view.id)
    body = await _images_response(request, services, principal.user_id, req, done, input_images)
    return Response(json.dumps(body), media_type="application/json")


# --- routes -------------------------------------------------------------------------------------------------------


@router.post(
    "/images/generations",
    summary="OpenAI: create images from a prompt (blocks until the job ends; stream=true for SSE events)",
    dependencies=[GenerationLimit],
    response_class=Response,
)
async def create_images(
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    req = parse_request(await _json_body(request))
    if not req.prompt or not req.prompt.strip():
        raise InvalidInput("prompt is required.", code="missing_prompt", details={"param": "prompt"})
    view = await _submit(services, principal, req, prompt=req.prompt, kind="txt2img", idempotency_key=idempotency_key)
    return await _answer(request, services, principal, req, view, prefix="image_generation")


async def _uploads(services: Services, images: list[bytes], mask: bytes | None) -> tuple[Upload, Upload | None]:
    def validate() -> tuple[Upload, Upload | None]:
        init = services.generation.validate_upload(images[0], field="image")
        return init, (openai_mask(services, mask, init) if mask is not None else None)

    return await run_in_threadpool(validate)


@router.post(
    "/images/edits",
    summary="OpenAI: edit an image (inpaint with a mask, img2img without); the first of several images is used",
    dependencies=[GenerationLimit],
    response_class=Response,
    openapi_extra=multipart_body(["image", "prompt"], _EDIT_FIELDS),
)
async def edit_images(
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    fields, images, mask_data = await _form(request)
    req = parse_request(fields)
    if not req.prompt or not req.prompt.strip():
        raise InvalidInput("prompt is required.", code="missing_prompt", details={"param": "prompt"})
    init, mask = await _uploads(services, images, mask_data)
    kind: JobKind = "inpaint" if mask is not None else "img2img"
    view = await _submit(
        services, principal, req, prompt=req.prompt, kind=kind, init=init, mask=mask, idempotency_key=idempotency_key
    )
    return await _answer(request, services, principal, req, view, prefix="image_edit", input_images=len(images))


@router.post(
    "/images/variations",
    summary="OpenAI: variations of an image (img2img with a neutral prompt)",
    dependencies=[GenerationLimit],
    response_class=Response,
    openapi_extra=multipart_body(["image"], {k: _EDIT_FIELDS[k] for k in ("image", "model", "n", "size")}),
)
async def create_variations(
    request: Request,
    services: ServicesDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    fields, images, mask_data = await _form(request)
    if mask_data is not None or "prompt" in fields:
        raise InvalidInput("Variations take no prompt or mask; use /v1/images/edits.", code="invalid_input")
    req = parse_request(fields)
    if req.strength is None:
        req = req.model_copy(update={"strength": VARIATION_STRENGTH})
    init, _ = await _uploads(services, images, None)
    view = await _submit(
        services, principal, req, prompt=VARIATION_PROMPT, kind="img2img", init=init, idempotency_key=idempotency_key
    )
    return await _answer(request, services, principal, req, view, prefix="image_edit", input_images=1)


def _model_list(services: Services) -> list[dict[str, Any]]:
    with services.db.session() as session:
        installed = {
            row.id: row.created_at for row in session.execute(select(InstalledModel.id, InstalledModel.created_at))
        }
    return [
        {
            "id": m.id,
            "object": "model",
            # Built-in models (echo, demo) have no install time: 0.
            "created": int(installed[m.id].timestamp()) if m.id in installed else 0,
            "owned_by": m.engine if m.source == "remote" else "studiolo",
        }
        for m in services.catalog.models()
        if draws_images(m.arch)
    ]


@router.get("/models", summary="OpenAI: this server's image models")
def list_models(services: ServicesDep, owner: OwnerId) -> dict[str, Any]:
    return {"object": "list", "data": _model_list(services)}


@router.get("/models/{model_id:path}", summary="OpenAI: one image model")
def get_model(model_id: str, services: ServicesDep, owner: OwnerId) -> dict[str, Any]:
    found = next((m for m in _model_list(services) if m["id"] == model_id), None)
    if found is None:
        raise NotFound(
            f"The model '{model_id}' does not exist here.", code="model_not_found", details={"param": "model"}
        )
    return found
