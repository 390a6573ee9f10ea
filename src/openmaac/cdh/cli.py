"""``openmaac cdh-key create|revoke``: CDH API keys (header ``apikey``), as ``token`` does for
OpenAPI tokens."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from openmaac.cli_errors import fail, say
from openmaac.migrations import migrated_database

app = typer.Typer(help="CDH API keys (the apikey header of /cdh/v1).", no_args_is_help=True)
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default: OPENMAAC_DATA_DIR)")]


@app.command("create")
def create(org: Annotated[str, typer.Option("--org", help="Organisation name")],
           label: Annotated[str | None, typer.Option("--label", help="A note to recognise the key by")] = None,
           data_dir: DataDir = None) -> None:
    """Create a CDH API key for ORG and print it (only it) on stdout. It is shown once."""
    from openmaac.auth.service import get_org_by_name, org_context
    from openmaac.cdh.keys import create_cdh_key

    database = migrated_database(data_dir)
    with database.write() as session:
        organization = get_org_by_name(session, org.strip())
        if organization is None:
            fail(f"no organisation named {org.strip()!r} (openmaac org list)")
        key = create_cdh_key(session, org_context(organization), label)  # the command line acts as admin
    sys.stdout.write(key + "\n")


@app.command("revoke")
def revoke(key: Annotated[str, typer.Argument(help="The key, or its 12-character prefix")],
           data_dir: DataDir = None) -> None:
    """Revoke a CDH API key: it stops working at once (within 2 s on running servers)."""
    from openmaac.cdh.keys import revoke_cdh_key

    database = migrated_database(data_dir)
    with database.write() as session:
        count = revoke_cdh_key(session, key.strip())
    if count == 0:
        fail("no active CDH API key matched")
    say(f"revoked {count} CDH API key(s)")
