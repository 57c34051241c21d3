"""``studiolo images``: list the gallery or the Trash, move images to the Trash, restore them, empty the Trash.

The same service calls as the HTTP API (``GalleryService.list``, ``bulk``, ``empty_trash``), so the CLI deletes as the
web page does: to the Trash, restorable until purged (``--permanent``, ``empty-trash``, or housekeeping after
STUDIOLO_TRASH_DAYS). Commands act for the install's local owner, or for ``--user EMAIL``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Column, Table

from studiolo.cli_options import SuggestingGroup
from studiolo.db.base import utcnow
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.gallery.schemas import BulkAction, BulkImageRequest
from studiolo.errors import NotFound

CommandServices = Callable[[], AbstractContextManager[Any]]

USER_OPTION = typer.Option("--user", help="Email of the account whose images these are (default: the local owner).")
IDS_ARGUMENT = typer.Argument(help="Image ids (as `studiolo images list` shows them).")


def _owner(services: Any, email: str | None) -> str:
    if email is None:
        return LOCAL_USER_ID
    wanted = email.strip().lower()
    matches = [u for u in services.admin.list_users(q=wanted).items if u.email == wanted]
    if not matches:
        raise NotFound(f"No account with the email {email}.", code="user_not_found")
    return str(matches[0].id)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def build_images_app(command_services: CommandServices, out: Console, console: Console) -> typer.Typer:
    """The ``images`` command group; ``command_services`` is cli.py's (a domain error: one line, exit code 1)."""
    images_app = typer.Typer(
        help="Your gallery from the command line: list, move to the Trash, restore, empty the Trash.",
        no_args_is_help=True,
        cls=SuggestingGroup,
    )

    def act(action: BulkAction, image_ids: list[str], user: str | None, done_text: str) -> None:
        try:
            request = BulkImageRequest(image_ids=image_ids, action=action)
        except ValidationError:
            console.print("[red]error[/red] [bold]invalid_input[/bold]: give 1 to 500 image ids.")
            raise typer.Exit(2) from None
        with command_services() as services:
            result = services.gallery.bulk(_owner(services, user), request)
        for image_id in result.done:
            out.print(f"{done_text} {image_id}", markup=False, highlight=False)
        for image_id in result.not_found:
            console.print(f"[red]error[/red] [bold]image_not_found[/bold]: no image {image_id}", highlight=False)
        if result.not_found:
            raise typer.Exit(1)

    @images_app.command("list")
    def images_list(
        trash: Annotated[bool, typer.Option("--trash", help="List the Trash instead of the gallery.")] = False,
        query: Annotated[str | None, typer.Option("--query", "-q", help="Search prompts and tags.")] = None,
        limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 50,
        user: Annotated[str | None, USER_OPTION] = None,
    ) -> None:
        """List images, newest first (with --trash: those in the Trash, and when each is purged)."""
        with command_services() as services:
            page = services.gallery.list(_owner(services, user), limit=limit, q=query, trashed=trash)
        # Ids are what the other commands take: never shortened, whatever the terminal's width; the prompt is clipped
        # to the room left (Rich would otherwise squeeze the date column to "2…").
        header, fmt = ("purge on", "%Y-%m-%d") if trash else ("created", "%Y-%m-%d %H:%M")
        when_width = len(f"{utcnow():{fmt}}")
        table = Table(Column("id", no_wrap=True, min_width=36), Column(header, no_wrap=True, min_width=when_width))
        table.add_column("prompt", no_wrap=True)
        room = max(12, out.width - 36 - when_width - 10)
        for i in page.items:
            when = i.purge_at if trash and i.purge_at else i.created_at
            table.add_row(i.id, f"{when:{fmt}}", _clip(("★ " if i.starred else "") + i.prompt, room))
        if not page.items:
            console.print("The Trash is empty." if trash else "No images.")
            return
        out.print(table)
        if page.next_cursor:
            console.print(f"Showing the newest {limit}; more with --limit (up to 100).")

    @images_app.command("remove")
    def images_remove(
        image_ids: Annotated[list[str], IDS_ARGUMENT],
        permanent: Annotated[
            bool, typer.Option("--permanent", help="Delete for good now, files too, instead of to the Trash.")
        ] = False,
        user: Annotated[str | None, USER_OPTION] = None,
    ) -> None:
        """Move images to the Trash (restore them with `studiolo images restore`), or with --permanent delete them."""
        if permanent:
            act("purge", image_ids, user, "deleted for good")
        else:
            act("delete", image_ids, user, "moved to the Trash")

    @images_app.command("restore")
    def images_restore(
        image_ids: Annotated[list[str], IDS_ARGUMENT], user: Annotated[str | None, USER_OPTION] = None
    ) -> None:
        """Bring images back from the Trash into the gallery."""
        act("restore", image_ids, user, "restored")

    @images_app.command("empty-trash")
    def images_empty_trash(
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
        user: Annotated[str | None, USER_OPTION] = None,
    ) -> None:
        """Delete every image in the Trash for good, files included."""
        if not yes:
            typer.confirm("Delete every image in the Trash for good?", abort=True)
        with command_services() as services:
            purged = services.gallery.empty_trash(_owner(services, user))
        out.print(f"Deleted {purged} image{'s' if purged != 1 else ''} for good.")

    return images_app
