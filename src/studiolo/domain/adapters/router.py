"""HTTP routes for adapters (issue 19): the installed LoRAs, embeddings, ControlNets, IP-Adapters and
preprocessors. Installing and removing them is the CLI's (`studiolo models import|remove`): files on the server's
disk are the operator's business, as with models."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from studiolo.deps import ServicesDep, current_owner_id
from studiolo.domain.adapters.schemas import AdapterKindName, AdapterList, adapter_view

# Any signed-in caller with the read scope may list them, as GET /models (set for the whole router, so no route
# can forget it).
router = APIRouter(tags=["adapters"], dependencies=[Depends(current_owner_id)])


@router.get("/adapters", response_model=AdapterList)
def list_adapters(
    services: ServicesDep,
    kind: Annotated[AdapterKindName | None, Query(description="Only adapters of this kind")] = None,
) -> AdapterList:
    """Installed adapters, by kind then name, with the base family each was made for (a request pairing one with a
    model of another family is refused: 409 ``adapter_incompatible``)."""
    return AdapterList(items=[adapter_view(a) for a in services.adapters.adapters(kind)])
