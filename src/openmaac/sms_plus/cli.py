"""``openmaac points ...``: SMS points of an organisation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from openmaac.migrations import migrated_database

app = typer.Typer(help="SMS points (SMS+ sends cost one point per SMS segment).", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)


def _organization(session, name: str):  # type: ignore[no-untyped-def]
    from openmaac.auth.service import get_org_by_name

    org = get_org_by_name(session, name)
    if org is None:
        err.print(f"no organisation named {name!r}")
        raise typer.Exit(1)
    return org


@app.command("add")
def add(
    amount: Annotated[int, typer.Argument(help="Points to add (positive)", min=1, max=1_000_000_000)],
    org: Annotated[str, typer.Option("--org", help="Organisation name")] = "default",
    note: Annotated[str | None, typer.Option(help="A note for the ledger")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory")] = None,
) -> None:
    """Top up an organisation's SMS points; prints the new balance on stdout."""
    from openmaac.sms_plus import points

    with migrated_database(data_dir).write() as session:
        organization = _organization(session, org)
        try:
            balance = points.top_up(session, organization.id, amount, note or "openmaac points add")
        except points.BalanceFull as exc:
            err.print(f"cannot add {amount} points to {org!r}: {exc}")
            raise typer.Exit(1) from exc
    err.print(f"added {amount} points to {org!r}")
    typer.echo(str(balance))


@app.command("show")
def show(
    org: Annotated[str, typer.Option("--org", help="Organisation name")] = "default",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory")] = None,
) -> None:
    """Print an organisation's SMS points balance."""
    from openmaac.sms_plus import points

    with migrated_database(data_dir).read() as session:
        organization = _organization(session, org)
        typer.echo(str(points.balance(session, organization.id)))
