"""Signed links to stored images (issue 18): what OpenAI's ``response_format=url`` and webhook payloads hand out.

A link names the image, the size, an expiry and an HMAC of those with the image's owner (the server key signs it):
whoever holds it may fetch that one file until it expires, with no credentials, as OpenAI's and S3's links work.
The owner is part of what is signed but not of the URL, so a link neither reveals whose image it is nor survives
the image changing hands. A trashed image, one held for review, or a wrong or expired signature is a 404/403.

Tests: tests/integration/test_signed_links.py.
"""

from __future__ import annotations

import hmac
import time
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import select

from studiolo.db.session import Database
from studiolo.deps import ServicesDep
from studiolo.domain.accounts.tokens import TokenCodec
from studiolo.domain.gallery import trash
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.service import FILE_SIZES
from studiolo.errors import Forbidden, NotFound
from studiolo.settings import Settings

LINK_PATH = "/api/v1/links/images"
_PURPOSE = "image-link"


def _signature(codec: TokenCodec, owner_id: str, image_id: str, size: str, expires: int) -> str:
    return codec.sign(_PURPOSE, f"{owner_id}:{image_id}:{size}:{expires}")


def signed_image_path(
    codec: TokenCodec, owner_id: str, image_id: str, *, ttl: int, size: str = "original", now: float | None = None
) -> str:
    """The path (no host) of a link to ``image_id``'s file that works for ``ttl`` seconds."""
    expires = int((now if now is not None else time.time()) + ttl)
    signature = _signature(codec, owner_id, image_id, size, expires)
    return f"{LINK_PATH}/{image_id}?size={size}&expires={expires}&signature={signature}"


def base_url(settings: Settings, request_base: str | None = None) -> str:
    """Where clients reach this server: STUDIOLO_PUBLIC_URL, else the request's own base, else host:port."""
    base = settings.public_url or request_base or f"http://{settings.host}:{settings.port}"
    return base.rstrip("/")


def signed_image_url(
    settings: Settings, codec: TokenCodec, owner_id: str, image_id: str, *, request_base: str | None = None
) -> str:
    """An absolute signed link (``STUDIOLO_SIGNED_URL_SECONDS``) to ``image_id``'s original file."""
    path = signed_image_path(codec, owner_id, image_id, ttl=settings.signed_url_seconds)
    return base_url(settings, request_base) + path


def verify_link(db: Database, codec: TokenCodec, image_id: str, size: str, expires: int, signature: str) -> str:
    """The owner of the linked image, when the link is genuine and alive; Forbidden or NotFound otherwise."""
    if expires < time.time():
        raise Forbidden("This link has expired; ask for a new one.", code="link_expired")
    with db.session() as session:
        owner_id = session.scalar(select(Image.owner_id).where(Image.id == image_id, trash.in_gallery()))
    # The same answer for a missing image and a forged signature: a link must not tell which image ids exist.
    if owner_id is None or not hmac.compare_digest(
        signature.encode(), _signature(codec, owner_id, image_id, size, expires).encode()
    ):
        raise NotFound("No image at this link.", code="link_invalid")
    return owner_id


links_router = APIRouter(tags=["gallery"])


@links_router.get(
    LINK_PATH.removeprefix("/api/v1") + "/{image_id}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/webp": {}}}},
    summary="A stored image through a signed link (no credentials: the signature is the permission)",
)
def linked_image(
    image_id: str,
    services: ServicesDep,
    expires: int,
    signature: Annotated[str, Query(max_length=128)],
    size: Annotated[str, Query(pattern="^(" + "|".join(FILE_SIZES) + ")$")] = "original",
) -> Response:
    owner_id = verify_link(services.db, services.codec, image_id, size, expires, signature)
    key, media_type = services.gallery.file(owner_id, image_id, size)  # a held image stays held (403 under_review)
    headers = {"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"}
    return Response(services.gallery.read(key), media_type=media_type, headers=headers)
