"""Webhooks API (/api/v1/webhooks, docs/webhooks.md): endpoints, their secrets, test events, the delivery log and
resend; the account secret that signs per-job webhooks.

API keys may use these routes under the usual rule (reads need ``read``, changes ``generate``): an integration
registers its own receiver, as with Replicate's API. Reading a signing secret is the exception: a secret is a
credential, so it needs the ``generate`` scope too (a read-only key, such as a dashboard's, never sees one;
tests/integration/test_api_keys.py). Every query is scoped to the caller."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response

from studiolo.deps import OwnerId, PrincipalDep, ServicesDep
from studiolo.domain.webhooks.schemas import (
    EndpointCreate,
    EndpointList,
    EndpointUpdate,
    EndpointView,
    MessageList,
    MessageView,
    SecretView,
)

router = APIRouter(tags=["webhooks"])


async def secret_reader(principal: PrincipalDep) -> str:
    """The caller's id, when it may read a signing secret: a session, or a key with the generate scope."""
    principal.require("generate")
    return principal.user_id


SecretOwner = Annotated[str, Depends(secret_reader)]
Status = Literal["pending", "succeeded", "failed"]
Limit = Annotated[int, Query(ge=1, le=200)]


@router.get("/webhooks/endpoints", response_model=EndpointList)
def list_endpoints(services: ServicesDep, owner: OwnerId) -> EndpointList:
    return EndpointList(data=services.webhooks.list_endpoints(owner))


@router.post("/webhooks/endpoints", response_model=EndpointView, status_code=201)
def create_endpoint(body: EndpointCreate, services: ServicesDep, owner: OwnerId) -> EndpointView:
    """A receiver of every job of the account (or of one API key's jobs); its secret: GET .../{id}/secret."""
    return services.webhooks.create_endpoint(owner, body)


@router.get("/webhooks/endpoints/{endpoint_id}", response_model=EndpointView)
def get_endpoint(endpoint_id: str, services: ServicesDep, owner: OwnerId) -> EndpointView:
    return services.webhooks.get_endpoint(owner, endpoint_id)


@router.patch("/webhooks/endpoints/{endpoint_id}", response_model=EndpointView)
def update_endpoint(endpoint_id: str, body: EndpointUpdate, services: ServicesDep, owner: OwnerId) -> EndpointView:
    return services.webhooks.update_endpoint(owner, endpoint_id, body)


@router.delete("/webhooks/endpoints/{endpoint_id}", status_code=204)
def delete_endpoint(endpoint_id: str, services: ServicesDep, owner: OwnerId) -> Response:
    services.webhooks.delete_endpoint(owner, endpoint_id)
    return Response(status_code=204)


@router.get("/webhooks/endpoints/{endpoint_id}/secret", response_model=SecretView)
def endpoint_secret(endpoint_id: str, services: ServicesDep, owner: SecretOwner) -> SecretView:
    return services.webhooks.endpoint_secret(owner, endpoint_id)


@router.post("/webhooks/endpoints/{endpoint_id}/secret/rotate", response_model=SecretView)
def rotate_endpoint_secret(endpoint_id: str, services: ServicesDep, owner: OwnerId) -> SecretView:
    """A new secret; the old one keeps signing beside it for STUDIOLO_WEBHOOK_SECRET_GRACE_HOURS."""
    return services.webhooks.rotate_endpoint_secret(owner, endpoint_id)


@router.post("/webhooks/endpoints/{endpoint_id}/test", response_model=MessageView, status_code=202)
def send_test(endpoint_id: str, services: ServicesDep, owner: OwnerId) -> MessageView:
    return services.webhooks.send_test(owner, endpoint_id)


@router.get("/webhooks/endpoints/{endpoint_id}/messages", response_model=MessageList)
def endpoint_messages(
    endpoint_id: str, services: ServicesDep, owner: OwnerId, status: Status | None = None, limit: Limit = 50
) -> MessageList:
    """The endpoint's delivery log, newest first, each message with its attempts."""
    return MessageList(data=services.webhooks.messages(owner, endpoint_id, status=status, limit=limit))


@router.get("/webhooks/messages", response_model=MessageList)
def job_messages(services: ServicesDep, owner: OwnerId, status: Status | None = None, limit: Limit = 50) -> MessageList:
    """The delivery log of per-job webhooks (the ``webhook`` field of a submission)."""
    return MessageList(data=services.webhooks.messages(owner, None, status=status, limit=limit))


@router.post("/webhooks/messages/{message_id}/resend", response_model=MessageView, status_code=202)
def resend(message_id: str, services: ServicesDep, owner: OwnerId) -> MessageView:
    return services.webhooks.resend(owner, message_id)


@router.get("/webhooks/secret", response_model=SecretView)
def account_secret(services: ServicesDep, owner: SecretOwner) -> SecretView:
    """The secret that signs this account's per-job webhooks (made on first request)."""
    return services.webhooks.account_secret(owner)


@router.post("/webhooks/secret/rotate", response_model=SecretView)
def rotate_account_secret(services: ServicesDep, owner: OwnerId) -> SecretView:
    return services.webhooks.rotate_account_secret(owner)
