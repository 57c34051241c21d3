"""HTTP routes of provenance (issue 17): check any file's Content Credentials, watermark and PNG metadata, or those of
one of your images."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from studiolo.deps import OwnerId, ServicesDep, current_owner_id, multipart_body
from studiolo.domain.safety.provenance import C2paCredentials
from studiolo.domain.safety.provenance_service import ProvenanceCheck, ProvenanceService
from studiolo.errors import InvalidInput, UnsupportedMediaType

router = APIRouter(tags=["provenance"], dependencies=[Depends(current_owner_id)])

_CHECK_BODY = multipart_body(
    ["file"], {"file": {"type": "string", "format": "binary", "description": "PNG, JPEG or WebP"}}
)


def provenance_service(services: ServicesDep) -> ProvenanceService:
    """The service on this app's services: the worker's signer verifies, or a verifier when signing is off."""
    credentials = services.runner.guard.credentials if services.runner.guard is not None else None
    return ProvenanceService(
        db=services.db,
        gallery=services.gallery,
        settings=services.settings,
        credentials=credentials or C2paCredentials(services.settings),
        install_key=services.codec.key.encode(),
    )


Provenance = Annotated[ProvenanceService, Depends(provenance_service)]


@router.post("/provenance/check", response_model=ProvenanceCheck, openapi_extra=_CHECK_BODY)
async def check_provenance(request: Request, provenance: Provenance) -> ProvenanceCheck:
    """What a file says of its origin: its C2PA Content Credentials (valid, untrusted, invalid or none), Studiolo's
    invisible watermark (and whether it is this install's) and a PNG's generation settings. Nothing is stored."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise UnsupportedMediaType("Send multipart/form-data with a 'file' field.", code="unsupported_content_type")
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("Send the image as the 'file' upload.", code="invalid_upload", details={"field": "file"})
    data = await upload.read()
    return await run_in_threadpool(provenance.check, data)


@router.get("/images/{image_id}/provenance", response_model=ProvenanceCheck)
def image_provenance(
    image_id: Annotated[str, Path(max_length=64)], provenance: Provenance, owner: OwnerId
) -> ProvenanceCheck:
    """The same for one of your images' stored original (404 ``image_not_found`` for anyone else's)."""
    return provenance.for_image(owner, image_id)
