"""``studiolo users``: the first administrator, listing accounts, suspending and re-activating them.

The same admin service calls as the HTTP admin API; a domain error becomes one line and exit code 1 through the
``command_services`` context the main CLI passes in.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from studiolo.cli_options import SuggestingGroup
from studiolo.errors import NotFound

CommandServices = Callable[[], AbstractContextManager[Any]]


def build_users_app(command_services: CommandServices, out: Console) -> typer.Typer:
    """The ``users`` command group, bound to the main CLI's services factory and output console."""
    users_app = typer.Typer(
        help="Accounts: the first administrator, listing, suspending.", no_args_is_help=True, cls=SuggestingGroup
    )

    @users_app.command("create-admin")
    def users_create_admin(
        email: Annotated[str, typer.Option(help="The administrator's email address.")],
        password: Annotated[
            str,
            typer.Option(
                prompt=True,
                hide_input=True,
                confirmation_prompt=True,
                envvar="STUDIOLO_ADMIN_PASSWORD",
                help="Asked for when not given (or read from STUDIOLO_ADMIN_PASSWORD).",
            ),
        ],
        name: Annotated[str, typer.Option(help="Display name.")] = "",
    ) -> None:
        """Create an administrator (on a new install: the first account, which also owns what the CLI made)."""
        from studiolo.domain.accounts.audit import Origin

        with command_services() as services:
            view = services.admin.create_admin(email, password, name, Origin(ip="cli", user_agent="studiolo cli"))
        out.print(f"Administrator {view.email} ({view.id}) is ready; sign in with this email and password.")

    @users_app.command("list")
    def users_list(
        query: Annotated[str, typer.Argument(help="Part of an email or name.")] = "",
        status: Annotated[str | None, typer.Option(help="pending, active or suspended.")] = None,
    ) -> None:
        """List accounts, newest first."""
        with command_services() as services:
            page = services.admin.list_users(q=query, status=status, limit=100)
        table = Table("id", "email", "name", "role", "status", "last sign-in")
        for u in page.items:
            table.add_row(u.id, u.email, u.display_name, u.role, u.status, str(u.last_login_at or "-"))
        out.print(table)

    def _set_status(email: str, status: str, reason: str = "") -> None:
        from studiolo.domain.accounts.audit import Origin
        from studiolo.domain.accounts.service import normalize_email

        with command_services() as services:
            matches = [u for u in services.admin.list_users(q=normalize_email(email)).items if u.email == email.lower()]
            if not matches:
                raise NotFound(f"No account with the email {email}.", code="user_not_found")
            origin = Origin(ip="cli", user_agent="studiolo cli")
            view = services.admin.set_status(None, matches[0].id, status, origin, reason.strip()[:500] or None)
        out.print(f"{view.email}: {view.status}")

    @users_app.command("suspend")
    def users_suspend(
        email: str, reason: Annotated[str, typer.Option(help="Why: what the user is told when they try.")] = ""
    ) -> None:
        """Suspend an account: its sessions, tokens and API keys stop working at once."""
        _set_status(email, "suspended", reason)

    @users_app.command("activate")
    def users_activate(email: str) -> None:
        """Re-activate a suspended account."""
        _set_status(email, "active")

    return users_app
