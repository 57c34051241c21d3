"""Typed FastAPI dependencies shared by every router."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.services import Services


# Dependencies that never block are ``async def``: FastAPI runs a plain ``def`` dependency in the thread
# pool, and each such hop cost more than the whole job lookup (bench/api.py, GET /jobs/{id}).
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def current_owner_id() -> str:
    """The acting user's id. Until accounts land every request acts as the built-in local owner."""
    return LOCAL_USER_ID


ServicesDep = Annotated[Services, Depends(get_services)]
OwnerId = Annotated[str, Depends(current_owner_id)]
