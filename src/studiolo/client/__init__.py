"""A typed Python client for a Studiolo server's native API: ``Studiolo`` (blocking) and ``AsyncStudiolo`` (asyncio).
Needs only httpx and pydantic (docs/client.md)."""

from studiolo.client._core import RetryPolicy
from studiolo.client.aio import AsyncStudiolo
from studiolo.client.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    StudioloAPIError,
    StudioloConnectionError,
    StudioloError,
    WaitTimeout,
)
from studiolo.client.models import (
    Image,
    ImagePage,
    Job,
    JobAccepted,
    JobError,
    JobEvent,
    JobOutput,
    JobPage,
    JobProgress,
    ModelInfo,
    ModelList,
    Style,
    StyleCatalog,
)
from studiolo.client.sse import ServerSentEvent, SSEDecoder
from studiolo.client.sync import Studiolo

__all__ = [
    "AsyncStudiolo",
    "AuthenticationError",
    "ConflictError",
    "Image",
    "ImagePage",
    "InvalidRequestError",
    "Job",
    "JobAccepted",
    "JobError",
    "JobEvent",
    "JobOutput",
    "JobPage",
    "JobProgress",
    "ModelInfo",
    "ModelList",
    "NotFoundError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "SSEDecoder",
    "ServerError",
    "ServerSentEvent",
    "Studiolo",
    "StudioloAPIError",
    "StudioloConnectionError",
    "StudioloError",
    "Style",
    "StyleCatalog",
    "WaitTimeout",
]
