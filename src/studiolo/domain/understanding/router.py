"""HTTP routes of photo -> character, ``/api/v1/describe`` (docs/describe.md). Thin: one DescribeService call each."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from studiolo.deps import GenerationLimit, OwnerId, ServicesDep, current_owner_id, multipart_body
from studiolo.domain.understanding.ports import MAX_INSTRUCTION_CHARS, TEMPLATES
from studiolo.domain.understanding.schemas import DescriptionPage, DescriptionView
from studiolo.errors import InvalidInput, UnsupportedMediaType

router = APIRouter(prefix="/describe", tags=["describe"], dependencies=[Depends(current_owner_id)])

DescriptionId = Annotated[str, Path(max_length=64, description="The description's id")]
_BODY = multipart_body(
    ["photo"],
    {
        "photo": {"type": "string", "format": "binary", "description": "PNG, JPEG, WebP or GIF"},
        "template": {"type": "string", "enum": list(TEMPLATES), "default": "character"},
        "instruction": {
            "type": "string",
            "maxLength": MAX_INSTRUCTION_CHARS,
            "description": "What to describe; required for the custom template",
        },
    },
)


@router.post(
    "",
    status_code=201,
    response_model=DescriptionView,
    summary="Describe a photo as a character, fursona, portrait or scene",
    openapi_extra=_BODY,
    # A describe may be a paid provider call: it counts in the same per-user limit as a job submission.
    dependencies=[GenerationLimit],
)
async def describe(request: Request, services: ServicesDep, owner: OwnerId) -> DescriptionView:
    """The structured description, a ready prompt and a suggested style. The upload is checked as the gallery's are
    (413/415/422); 422 describe_refused when the vision model declines, 502 describer_invalid_reply when its answer
    cannot be repaired, 503 describer_unavailable after the retries."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise UnsupportedMediaType(
            "Send multipart/form-data with a 'photo' file (and 'template', 'instruction').",
            code="unsupported_content_type",
        )
    form = await request.form()
    upload, template, instruction = form.get("photo"), form.get("template") or "character", form.get("instruction")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("Send the photo as the 'photo' upload.", code="invalid_upload", details={"field": "photo"})
    if not isinstance(template, str) or not isinstance(instruction or "", str):
        raise InvalidInput("template and instruction are text fields.", code="invalid_input")
    data = await upload.read()
    return await run_in_threadpool(services.describe.describe, owner, data, template, str(instruction or ""))


@router.get("", response_model=DescriptionPage, summary="Your descriptions, newest first")
def list_descriptions(
    services: ServicesDep,
    owner: OwnerId,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=64, description="The `next_cursor` of the previous page")] = None,
) -> DescriptionPage:
    return services.describe.list(owner, limit=limit, cursor=cursor)


@router.get("/{description_id}", response_model=DescriptionView, summary="One description")
def get_description(description_id: DescriptionId, services: ServicesDep, owner: OwnerId) -> DescriptionView:
    return services.describe.get(owner, description_id)


@router.get(
    "/{description_id}/photo",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
    summary="The described photo (PNG, upright, without metadata)",
)
def description_photo(description_id: DescriptionId, services: ServicesDep, owner: OwnerId) -> Response:
    data = services.describe.photo(owner, description_id)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.delete("/{description_id}", status_code=204, response_class=Response, summary="Delete a description")
def delete_description(description_id: DescriptionId, services: ServicesDep, owner: OwnerId) -> Response:
    """The photo goes too; images rendered from it stay, without the link."""
    services.describe.delete(owner, description_id)
    return Response(status_code=204)
