"""HTTP routes for the gallery: images, their files, regenerate, collections."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from studiolo.deps import GenerationLimit, OwnerId, ServicesDep, current_owner_id
from studiolo.domain.gallery.schemas import (
    BulkImageRequest,
    BulkImageResult,
    CollectionCreate,
    CollectionItems,
    CollectionPage,
    CollectionPatch,
    CollectionView,
    ImagePage,
    ImagePatch,
    ImageView,
    RegenerateRequest,
    TrashEmptied,
)
from studiolo.domain.generation.schemas import JobAccepted

# Every route needs a caller whose credential has the scope the method needs (deps.current_owner_id), set here
# for the whole router so that no route can forget it (GET /models once did).
router = APIRouter(tags=["gallery"], dependencies=[Depends(current_owner_id)])

Limit = Annotated[int, Query(ge=1, le=100)]


@router.get("/images", response_model=ImagePage)
def list_images(
    services: ServicesDep,
    owner: OwnerId,
    limit: Limit = 50,
    cursor: str | None = None,
    style: str | None = None,
    model: str | None = None,
    starred: bool | None = None,
    collection: str | None = None,
    job: str | None = None,
    q: Annotated[str | None, Query(max_length=500)] = None,
    trash: Annotated[bool, Query(description="List your Trash instead of your gallery (same filters)")] = False,
) -> ImagePage:
    """Your images, newest first. Trashed images are left out unless ``trash=true``, which lists only them."""
    return services.gallery.list(
        owner,
        limit=limit,
        cursor=cursor,
        style=style,
        model=model,
        starred=starred,
        collection_id=collection,
        q=q,
        job_id=job,
        trashed=trash,
    )


@router.post("/images/bulk", response_model=BulkImageResult)
def bulk_images(body: BulkImageRequest, services: ServicesDep, owner: OwnerId) -> BulkImageResult:
    """delete (to the Trash), restore (from it), purge (for good, files too), star, unstar, add_tags or remove_tags on
    up to 500 of your images at once."""
    return services.gallery.bulk(owner, body)


@router.post("/images/trash/empty", response_model=TrashEmptied)
def empty_trash(services: ServicesDep, owner: OwnerId) -> TrashEmptied:
    """Delete every image in your Trash for good, files included."""
    return TrashEmptied(purged=services.gallery.empty_trash(owner))


@router.get("/images/{image_id}", response_model=ImageView)
def get_image(image_id: str, services: ServicesDep, owner: OwnerId) -> ImageView:
    """One of your images, in the gallery or in the Trash (then with ``trashed_at`` and ``purge_at``)."""
    return services.gallery.get(owner, image_id)


@router.patch("/images/{image_id}", response_model=ImageView)
def update_image(image_id: str, patch: ImagePatch, services: ServicesDep, owner: OwnerId) -> ImageView:
    return services.gallery.update(owner, image_id, patch)


@router.delete("/images/{image_id}", status_code=204)
def delete_image(
    image_id: str,
    services: ServicesDep,
    owner: OwnerId,
    permanent: Annotated[bool, Query(description="Delete for good now (files too), not to the Trash")] = False,
) -> Response:
    """Move the image to the Trash (idempotent): out of the gallery, counts and search, restorable until it is
    purged STUDIOLO_TRASH_DAYS later or the Trash is emptied; its files stay until then. ``permanent=true`` purges it
    at once."""
    services.gallery.delete(owner, image_id, permanent=permanent)
    return Response(status_code=204)


@router.post("/images/{image_id}/restore", response_model=ImageView)
def restore_image(image_id: str, services: ServicesDep, owner: OwnerId) -> ImageView:
    """Bring the image back from the Trash into the gallery (an image not in the Trash is returned unchanged)."""
    return services.gallery.restore(owner, image_id)


@router.get(
    "/images/{image_id}/file",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/webp": {}}},
        307: {"description": "The file's presigned URL, when the object store has them (S3 storage)."},
    },
)
def image_file(
    image_id: str,
    request: Request,
    services: ServicesDep,
    owner: OwnerId,
    size: str = "original",
    download: bool = False,
) -> Response:
    key, media_type = services.gallery.file(owner, image_id, size)
    etag = '"' + key.rsplit("/", 1)[-1].split(".")[0] + '"'
    # A private picture may be kept by the browser, but shown again only after asking us (no-cache): a cached copy
    # is then served only to a request whose credentials still pass, never after sign-out. The content-addressed
    # ETag makes that question a 304 with no body. (Before: max-age=31536000, immutable, which let the HTTP cache
    # show it to the next person at the browser; tests/integration/test_api_gallery.py.)
    headers = {"Cache-Control": "private, no-cache", "ETag": etag, "X-Content-Type-Options": "nosniff"}
    filename = None
    if download:
        ext = "png" if media_type == "image/png" else "webp"
        filename = f"studiolo-{image_id}-{size}.{ext}"
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    expires = services.settings.s3_presign_seconds
    url = services.store.presigned_url(key, expires, filename)
    if url is not None:
        # A store with its own URLs (S3) serves the bytes itself. The redirect is not kept either: a cached one
        # would lead a signed-out browser to the picture for as long as the URL lives (tests/contract/test_s3_store.py).
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "private, no-store"})
    path = services.store.local_path(key)
    if path is not None and path.exists():
        return FileResponse(path, media_type=media_type, headers=headers)
    return Response(services.gallery.read(key), media_type=media_type, headers=headers)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (RFC 9110: a list, weak validators compared weakly, ``*``)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


@router.post(
    "/images/{image_id}/regenerate", response_model=JobAccepted, status_code=202, dependencies=[GenerationLimit]
)
def regenerate_image(
    image_id: str, services: ServicesDep, owner: OwnerId, req: RegenerateRequest | None = None
) -> JobAccepted:
    return services.upscale.regenerate(owner, image_id, req or RegenerateRequest())  # upscales too


@router.get("/collections", response_model=CollectionPage)
def list_collections(
    services: ServicesDep, owner: OwnerId, limit: Limit = 50, cursor: str | None = None
) -> CollectionPage:
    return services.gallery.list_collections(owner, limit=limit, cursor=cursor)


@router.post("/collections", response_model=CollectionView, status_code=201)
def create_collection(data: CollectionCreate, services: ServicesDep, owner: OwnerId) -> CollectionView:
    return services.gallery.create_collection(owner, data)


@router.get("/collections/{collection_id}", response_model=CollectionView)
def get_collection(collection_id: str, services: ServicesDep, owner: OwnerId) -> CollectionView:
    return services.gallery.get_collection(owner, collection_id)


@router.patch("/collections/{collection_id}", response_model=CollectionView)
def update_collection(
    collection_id: str, patch: CollectionPatch, services: ServicesDep, owner: OwnerId
) -> CollectionView:
    return services.gallery.update_collection(owner, collection_id, patch)


@router.delete("/collections/{collection_id}", status_code=204)
def delete_collection(collection_id: str, services: ServicesDep, owner: OwnerId) -> Response:
    services.gallery.delete_collection(owner, collection_id)
    return Response(status_code=204)


@router.post("/collections/{collection_id}/images", response_model=CollectionView)
def add_collection_images(
    collection_id: str, data: CollectionItems, services: ServicesDep, owner: OwnerId
) -> CollectionView:
    return services.gallery.add_to_collection(owner, collection_id, data.image_ids)


@router.delete("/collections/{collection_id}/images/{image_id}", status_code=204)
def remove_collection_image(collection_id: str, image_id: str, services: ServicesDep, owner: OwnerId) -> Response:
    services.gallery.remove_from_collection(owner, collection_id, image_id)
    return Response(status_code=204)
