"""``openmaac webhook add|list|secret|scheme|deliveries|replay``: outgoing webhooks from the shell."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from openmaac.cli_errors import fail, fail_api
from openmaac.migrations import migrated_database

app = typer.Typer(help="Outgoing webhooks (endpoints, secrets, delivery log, replay).", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default ./data, env OPENMAAC_DATA_DIR)")]


def _org_by_name(session: Any, name: str) -> Any:
    from openmaac.auth.service import get_org_by_name, org_context

    organization = get_org_by_name(session, name)
    if organization is None:
        fail(f"no organisation named {name!r} (see `openmaac org list`)")
    return org_context(organization)


def _org_of_endpoint(session: Any, endpoint_id: int) -> Any:
    from openmaac.auth.models import Organization
    from openmaac.auth.service import org_context
    from openmaac.webhooks.models import WebhookEndpoint

    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        fail(f"no webhook with id {endpoint_id}")
    return org_context(session.get(Organization, endpoint.organization_id))


def _print_table(table: Table) -> None:
    """On a terminal, fit its width (long cells fold, nothing is cut off); into a pipe or a
    file, each row on one line at its natural width (Rich would otherwise assume 80 columns
    and shorten URLs and keys with "…")."""
    (out if out.is_terminal else Console(soft_wrap=True, width=100_000)).print(table)


STATUSES = ("pending", "succeeded", "failed")


def _fail(exc: Exception) -> None:
    """A refusal in words (``url: Enter a valid URL.``), exit 1."""
    fail_api(exc)


@app.command("add")
def add(
    url: Annotated[str, typer.Option("--url", help="Where to POST events")],
    topic: Annotated[list[str], typer.Option("--topic", help="A topic to receive (repeat for more)")],
    org: Annotated[str, typer.Option("--org", help="Organisation name")] = "default",
    style: Annotated[str, typer.Option("--style", help="maac | cdh | raw")] = "maac",
    header: Annotated[list[str] | None, typer.Option("--header", help="Extra header NAME=VALUE (repeatable)")] = None,
    signature_scheme: Annotated[str, typer.Option("--signature-scheme", help="maac | maac+standard (Standard "
                                                  "Webhooks headers as well)")] = "maac",
    data_dir: DataDir = None,
) -> None:
    """Register an endpoint; prints its id and share secret (JSON) on stdout, and its
    Standard Webhooks secret (standard_secret) with --signature-scheme maac+standard."""
    from openmaac.webhooks import service

    headers = {}
    for item in header or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            err.print(f"--header takes NAME=VALUE, got {item!r}", markup=False, highlight=False)
            raise typer.Exit(2)
        headers[name.strip()] = value
    database = migrated_database(data_dir)
    try:
        checked = service.validate_url(url)
        with database.write() as session:
            created = service.create_endpoint(session, _org_by_name(session, org), url=checked, topics=topic,
                                              style=style, headers=headers, signature_scheme=signature_scheme)
    except Exception as exc:  # APIError -> message, exit 1
        _fail(exc)
        return
    shown = {"id": created["id"], "secret": created["secret"]}
    if created["standard_secret"] is not None:
        shown["standard_secret"] = created["standard_secret"]
    sys.stdout.write(json.dumps(shown) + "\n")


@app.command("list")
def list_(org: Annotated[str, typer.Option("--org", help="Organisation name")] = "default",
          as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line instead of a table")] = False,
          data_dir: DataDir = None) -> None:
    """List an organisation's endpoints with their delivery counts."""
    from sqlalchemy import select

    from openmaac.webhooks import service
    from openmaac.webhooks.models import WebhookEndpoint

    database = migrated_database(data_dir)
    rows: list[dict[str, Any]] = []
    with database.read() as session:
        context = _org_by_name(session, org)
        for endpoint in session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.organization_id == context.id)
                                        .order_by(WebhookEndpoint.id)):
            shown = service.serialize_endpoint(endpoint, context)
            rows.append({"id": endpoint.id, "url": endpoint.url, "style": endpoint.style,
                         "signature_scheme": endpoint.signature_scheme, "topics": list(endpoint.topics), "is_active": endpoint.is_active,
                         **service.delivery_counts(session, endpoint.id),
                         "failing_since": shown["failing_since"], "disabled_at": shown["disabled_at"],
                         "disabled_reason": shown["disabled_reason"]})
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    table = Table("id", "url", "style", "signature", "topics", "active", "pending", "succeeded", "failed",
                  "failing since")
    table.columns[1].overflow = table.columns[4].overflow = "fold"
    for row in rows:
        active = "yes" if row["is_active"] else ("deactivated" if row["disabled_reason"] else "paused")
        table.add_row(str(row["id"]), row["url"], row["style"], row["signature_scheme"], ", ".join(row["topics"]),
                      active,
                      str(row["pending"]), str(row["succeeded"]), str(row["failed"]), row["failing_since"] or "-")
    _print_table(table)


@app.command("secret")
def secret(webhook_id: Annotated[int, typer.Argument(help="Webhook id")],
           rotate: Annotated[bool, typer.Option("--rotate", help="Replace it with a new secret")] = False,
           standard: Annotated[bool, typer.Option("--standard", help="The Standard Webhooks (whsec_) secret "
                                                  "instead of the share secret")] = False,
           data_dir: DataDir = None) -> None:
    """Print an endpoint's share secret (only it) on stdout; --rotate makes a new one first.

    With --standard, the whsec_ secret of an endpoint whose scheme is maac+standard (after
    --rotate, the previous one still signs for 24 hours)."""
    from openmaac.webhooks import service

    database = migrated_database(data_dir)
    try:
        with database.write() as session:
            context = _org_of_endpoint(session, webhook_id)
            if rotate:
                result = service.rotate_secret(session, context, webhook_id, "standard" if standard else "maac")
            else:
                result = service.reveal_secret(session, context, webhook_id)
    except Exception as exc:  # APIError -> message, exit 1
        _fail(exc)
        return
    shown = result["standard_secret"] if standard else result["secret"]
    if shown is None:
        err.print(f"webhook {webhook_id} does not use the maac+standard signature scheme "
                  f"(openmaac webhook scheme {webhook_id} maac+standard)")
        raise typer.Exit(1)
    sys.stdout.write(shown + "\n")


@app.command("scheme")
def scheme(webhook_id: Annotated[int, typer.Argument(help="Webhook id")],
           signature_scheme: Annotated[str, typer.Argument(help="maac | maac+standard")],
           data_dir: DataDir = None) -> None:
    """Set an endpoint's signature scheme; prints it (JSON), with the new standard_secret when
    this turned maac+standard on."""
    from openmaac.webhooks import service

    database = migrated_database(data_dir)
    try:
        with database.write() as session:
            context = _org_of_endpoint(session, webhook_id)
            updated = service.update_endpoint(session, context, webhook_id, {"signature_scheme": signature_scheme})
    except Exception as exc:  # APIError -> message, exit 1
        _fail(exc)
        return
    shown = {"id": updated["id"], "signature_scheme": updated["signature_scheme"]}
    if "standard_secret" in updated:
        shown["standard_secret"] = updated["standard_secret"]
    sys.stdout.write(json.dumps(shown) + "\n")


@app.command("deliveries")
def deliveries(
    webhook_id: Annotated[int, typer.Argument(help="Webhook id")],
    status: Annotated[str | None, typer.Option("--status", help="pending | succeeded | failed")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line instead of a table")] = False,
    data_dir: DataDir = None,
) -> None:
    """The newest 300 deliveries of an endpoint (id, topic, status, attempts, last answer, next attempt)."""
    from openmaac.webhooks import service

    if status is not None and status not in STATUSES:
        err.print(f"--status must be one of {', '.join(STATUSES)}")
        raise typer.Exit(2)
    database = migrated_database(data_dir)
    with database.read() as session:
        context = _org_of_endpoint(session, webhook_id)
        page = service.list_deliveries(session, context, webhook_id, status=status, start=None)
    if as_json:
        for row in page["results"]:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    table = Table("id", "topic", "idempotency key", "status", "attempts", "next attempt", "last status",
                  "last error", "created")
    table.columns[1].overflow = table.columns[2].overflow = "fold"
    for row in page["results"]:
        table.add_row(str(row["id"]), row["topic"], row["idempotency_key"], row["status"],
                      f"{row['attempts']}/{row['max_attempts']}", row["next_attempt_at"] or "-",
                      str(row["last_status_code"] or "-"), (row["last_error"] or "")[:60], row["created_at"])
    _print_table(table)


@app.command("replay")
def replay(
    webhook_id: Annotated[int, typer.Argument(help="Webhook id")],
    delivery: Annotated[list[int] | None, typer.Option("--delivery", help="A delivery id (repeatable); "
                                                                          "default: every failed one and every "
                                                                          "one waiting for a long retry")] = None,
    data_dir: DataDir = None,
) -> None:
    """Send deliveries again now (same body and idempotency key); a running server picks them up."""
    from openmaac.webhooks import service

    database = migrated_database(data_dir)
    with database.write() as session:
        context = _org_of_endpoint(session, webhook_id)
        result = service.replay(session, context, webhook_id, list(delivery) if delivery else None)
    err.print(f"replaying {result['replayed']} deliveries")
    sys.stdout.write(json.dumps(result) + "\n")
