"""The admin review API (issue 17): the queue of images the output check held back, and the decisions on them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from studiolo.deps import AdminPrincipal, OriginDep, ServicesDep
from studiolo.domain.safety.review import ReviewItem, ReviewPage, ReviewRequest, ReviewService, ReviewState

router = APIRouter(prefix="/admin/reviews", tags=["admin"])


async def review_service(services: ServicesDep) -> ReviewService:
    """The review service over this app's database, gallery and account administration (it holds no state)."""
    return ReviewService(services.db, services.gallery, services.admin)


Reviews = Annotated[ReviewService, Depends(review_service)]


@router.get("", response_model=ReviewPage)
def list_reviews(
    reviews: Reviews,
    admin: AdminPrincipal,
    state: ReviewState = "pending",
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> ReviewPage:
    """Images held for review (``state``: pending, approved or rejected), oldest first, with their owner and score."""
    return reviews.list(state=state, limit=limit, cursor=cursor)


@router.get("/{image_id}", response_model=ReviewItem)
def get_review(image_id: str, reviews: Reviews, admin: AdminPrincipal) -> ReviewItem:
    """One held image as the queue shows it."""
    return reviews.item(image_id)


@router.post("/{image_id}", response_model=ReviewItem)
def decide_review(
    image_id: str, body: ReviewRequest, reviews: Reviews, admin: AdminPrincipal, origin: OriginDep
) -> ReviewItem:
    """approve: the owner sees the original, thumbnails unblurred; reject: it stays private and the owner sees the
    reason; ban: reject and suspend the owner. Audited as ``image_reviewed``."""
    return reviews.decide(admin.user_id, image_id, body, origin)


@router.get(
    "/{image_id}/file",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/webp": {}}}},
)
def review_file(image_id: str, reviews: Reviews, admin: AdminPrincipal, size: str = "original") -> Response:
    """A held image's original (or a thumbnail ``size``), for the administrator judging it."""
    data, media_type = reviews.file(image_id, size)
    # Never kept by a shared cache, nor by the browser past this page: it is a picture held back for a reason.
    headers = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
    return Response(content=data, media_type=media_type, headers=headers)
