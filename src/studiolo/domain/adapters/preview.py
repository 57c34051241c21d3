"""POST /api/v1/controls/preview: the ControlNet map a picture gives (issue 19), for the web studio's ControlNet panel.

The same maps a job makes (engines/preprocess.py), so what the user sees is what the ControlNet will follow. Maps made
without a model (canny, scribble, lineart, softedge, tile) cost milliseconds and are not counted; a depth map runs the
installed depth model, so it counts against the generation rate limit like a job submission.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from PIL import Image
from starlette.datastructures import UploadFile

from studiolo.deps import GenerationCharge, ServicesDep, current_owner_id, multipart_body
from studiolo.engines.base import CONTROL_TYPES, EngineError
from studiolo.engines.preprocess import MODEL_TYPES, make_control_map
from studiolo.errors import InvalidInput, ServiceUnavailable, UnsupportedMediaType

if TYPE_CHECKING:
    from studiolo.services import Services

# POST needs a credential with the generate scope (deps.current_owner_id), as submitting a job does.
router = APIRouter(prefix="/controls", tags=["adapters"], dependencies=[Depends(current_owner_id)])

MAX_SIDE = 2048
_BODY = multipart_body(
    ["image", "type"],
    {
        "image": {"type": "string", "format": "binary", "description": "PNG, JPEG, WebP or GIF"},
        "type": {"type": "string", "enum": list(CONTROL_TYPES)},
        "width": {"type": "integer", "minimum": 8, "maximum": MAX_SIDE, "multipleOf": 8},
        "height": {"type": "integer", "minimum": 8, "maximum": MAX_SIDE, "multipleOf": 8},
    },
)


def _side(value: object, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        side = int(str(value))
    except ValueError:
        side = 0
    if not 8 <= side <= MAX_SIDE or side % 8:
        raise InvalidInput(
            f"{name} must be a multiple of 8 from 8 to {MAX_SIDE}.", code="invalid_size", details={"field": name}
        )
    return side


def _default_size(image: Image.Image) -> tuple[int, int]:
    """The upload's own size, shrunk to fit MAX_SIDE and rounded down to multiples of 8."""
    scale = min(1.0, MAX_SIDE / max(image.width, image.height))
    return max(8, int(image.width * scale) // 8 * 8), max(8, int(image.height * scale) // 8 * 8)


def control_preview(services: Services, data: bytes, control_type: str, width: int | None, height: int | None) -> bytes:
    """The ``control_type`` map of the uploaded picture ``data`` as PNG bytes."""
    upload = services.generation.validate_upload(data, field="image")
    image = Image.open(io.BytesIO(upload.png)).convert("RGB")
    size = _default_size(image)
    preprocessors = [a.ref() for a in services.generation.adapters.adapters("preprocessor")]
    try:
        control = make_control_map(
            control_type, image, width or size[0], height or size[1], preprocessors=preprocessors
        )
    except EngineError as exc:
        if exc.code == "preprocessor_unavailable":
            raise InvalidInput(str(exc), code=exc.code, details={"type": control_type}) from exc
        # The installed preprocessor's files are broken: the install's problem, not the request's.
        raise ServiceUnavailable(str(exc), code=exc.code) from exc
    out = io.BytesIO()
    control.save(out, format="PNG")
    return out.getvalue()


@router.post(
    "/preview",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
    openapi_extra=_BODY,
    summary="The ControlNet map (canny edges, scribble, depth...) a picture gives, as a PNG",
)
async def preview_control(request: Request, services: ServicesDep, charge: GenerationCharge) -> Response:
    """422 ``invalid_control_type`` for an unknown type, ``preprocessor_unavailable`` for a map Studiolo cannot make
    (depth with no depth preprocessor installed; pose, seg, normal, mlsd: upload a ready map with preprocess=false);
    the upload is checked as generation uploads are (413/415/422)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise UnsupportedMediaType(
            "Send multipart/form-data with an 'image' file and a 'type'.", code="unsupported_content_type"
        )
    form = await request.form()
    upload, control_type = form.get("image"), form.get("type")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("Send the picture as the 'image' upload.", code="invalid_upload", details={"field": "image"})
    if not isinstance(control_type, str) or control_type not in CONTROL_TYPES:
        raise InvalidInput(
            f"type must be one of: {', '.join(CONTROL_TYPES)}.",
            code="invalid_control_type",
            details={"field": "type", "allowed": list(CONTROL_TYPES)},
        )
    width, height = _side(form.get("width"), "width"), _side(form.get("height"), "height")
    if control_type in MODEL_TYPES:  # runs a model: counted like a job submission
        charge(1)
    data = await upload.read()
    png = await run_in_threadpool(control_preview, services, data, control_type, width, height)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
