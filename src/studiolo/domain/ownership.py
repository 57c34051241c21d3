"""Authorization written once: every service loads user-owned rows through ``get_owned``.

Another user's row is reported exactly like a missing one (404, never 403), so ids cannot be probed.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Mapped, Session

from studiolo.errors import NotFound


class Owned(Protocol):
    owner_id: Mapped[str]


T = TypeVar("T", bound=Any)


def get_owned(
    session: Session, model: type[T], obj_id: str, owner_id: str, *, what: str, for_update: bool = False
) -> T:
    """Load ``model`` row ``obj_id`` if it belongs to ``owner_id``; NotFound otherwise."""
    row = session.get(model, obj_id, with_for_update=for_update or None)
    if row is None or row.owner_id != owner_id:
        raise NotFound(f"No {what} with id '{obj_id}'.", code=f"{what}_not_found")
    return row
