"""``openmaac user create|list|set-password``: console users from the shell."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from openmaac.cli_errors import fail, fail_api, say
from openmaac.migrations import migrated_database

app = typer.Typer(help="Console users (e-mail, password, role per organisation).", no_args_is_help=True)
out = Console(soft_wrap=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default ./data, env OPENMAAC_DATA_DIR)")]
PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first line of "
                                                                       "standard input instead of prompting")]


class Role(StrEnum):
    admin = "admin"
    marketer = "marketer"
    viewer = "viewer"


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        fail("no terminal to ask for the password: pass --password-stdin and write it to standard input")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@app.command("create")
def create(
    email: Annotated[str, typer.Argument(help="The user's e-mail address (their sign-in name)")],
    org: Annotated[str, typer.Option("--org", help="Organisation the user belongs to (see `openmaac org list`)")],
    role: Annotated[Role, typer.Option("--role", help="admin: everything; marketer: content and sending; "
                                                      "viewer: read-only")],
    password_stdin: PasswordStdin = False,
    data_dir: DataDir = None,
) -> None:
    """Create a console user in an organisation; for an existing user, add (or change) their
    role in that organisation without touching their password."""
    from openmaac.auth.service import get_org_by_name
    from openmaac.console import users
    from openmaac.web.errors import APIError

    database = migrated_database(data_dir)
    with database.read() as session:
        organization = get_org_by_name(session, org)
        if organization is None:
            fail(f"no organisation named {org!r} (see `openmaac org list`; `openmaac token create --org NAME` "
                 "creates one)")
        organization_id = organization.id
        existing = users.get_user(session, email) is not None
    password = None if existing else _password(password_stdin)
    try:
        with database.write() as session:
            user = users.get_user(session, email) if existing else users.create_user(session, email, password or "")
            assert user is not None
            added = users.set_membership(session, user, organization_id, role.value)
            shown = user.email
    except APIError as exc:
        fail_api(exc)
    if not existing:
        say(f"created console user {shown}: {role.value} of {org!r}")
    elif added:
        say(f"{shown} already existed: now also {role.value} of {org!r} (password unchanged)")
    else:
        say(f"{shown} is now {role.value} of {org!r} (password unchanged)")


@app.command("list")
def list_users(
    org: Annotated[str | None, typer.Option("--org", help="Only the users of this organisation")] = None,
    data_dir: DataDir = None,
) -> None:
    """List console users with their organisations and roles."""
    from openmaac.auth.service import get_org_by_name
    from openmaac.console import users

    database = migrated_database(data_dir)
    table = Table("email", "organisations (role)", "created", "last sign-in")
    with database.read() as session:
        organization_id = None
        if org is not None:
            organization = get_org_by_name(session, org)
            if organization is None:
                fail(f"no organisation named {org!r} (see `openmaac org list`)")
            organization_id = organization.id
        for user, belongs in users.list_users(session, organization_id):
            table.add_row(user.email, ", ".join(f"{name} ({role})" for _, name, role in belongs),
                          user.created_at.strftime("%Y-%m-%d %H:%M UTC"),
                          user.last_sign_in_at.strftime("%Y-%m-%d %H:%M UTC") if user.last_sign_in_at else "-")
    (out if out.is_terminal else Console(soft_wrap=True, width=100_000)).print(table)


@app.command("set-password")
def set_password(
    email: Annotated[str, typer.Argument(help="The user's e-mail address")],
    password_stdin: PasswordStdin = False,
    data_dir: DataDir = None,
) -> None:
    """Set a user's password (a forgotten one); signs out every session of the user."""
    from openmaac.console import users
    from openmaac.web.errors import APIError

    database = migrated_database(data_dir)
    with database.read() as session:
        user = users.get_user(session, email)
        if user is None:
            fail(f"no console user {users.normalise_email(email)!r} (see `openmaac user list`)")
        user_id, shown = user.id, user.email
    password = _password(password_stdin)
    try:
        with database.write() as session:
            users.change_password(session, user_id, None, password)
    except APIError as exc:
        fail_api(exc)
    say(f"password of {shown} changed; their sessions were signed out")
