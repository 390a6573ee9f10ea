"""``openmaac sms-plus upload|upload-show|upload-send|upload-delete``: manual upload (the SMS+ help-center tutorial)
from the shell, through the same service as the API extension (``openmaac.sms_plus.uploads``):
the same limits, the same checks and the same error texts (printed on stderr, exit 1).

``upload-send`` queues the messages in the database; a running server (its embedded worker)
or ``openmaac worker`` sends them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from openmaac.cli_errors import fail, fail_api
from openmaac.migrations import migrated_database

app = typer.Typer(help="SMS+ (PNP with SMS fallback): manual recipient lists.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default ./data, env OPENMAAC_DATA_DIR)")]
OrgName = Annotated[str, typer.Option("--org", help="Organisation name")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's answer (JSON) instead of tables")]


def _org(database: Any, name: str) -> Any:
    from openmaac.auth.service import get_org_by_name, org_context

    with database.read() as session:
        organization = get_org_by_name(session, name)
        if organization is None:
            fail(f"no organisation named {name!r} (see `openmaac org list`)")
        return org_context(organization)


def _fail(exc: Exception, not_found: str) -> NoReturn:
    """An APIError: what the API would answer (its text, or its JSON body) in words, exit 1;
    ``not_found`` says what a bare "Not found." did not find."""
    fail_api(exc, not_found=not_found)


def _no_upload(upload_id: int, org: str) -> str:
    return f"no upload {upload_id} in organisation {org!r} (see `openmaac sms-plus upload`)"


def _print(renderable: Any) -> None:
    """On a terminal, fit its width; into a pipe or a file, each row on one line, nothing cut."""
    console = Console(soft_wrap=True)
    (console if console.is_terminal else Console(soft_wrap=True, width=100_000)).print(renderable)


def _show(upload: dict[str, Any]) -> None:
    lines = [
        f"upload id: {upload['id']}",
        f"scenario (pnp_setting_id): {upload['pnp_setting_id']}",
        f"file: {upload['filename']}",
        f"status: {upload['status']}",
        f"imported rows: {upload['imported_rows']}",
        f"bad numbers: {upload['invalid_count']} (not sent)",
        f"phone column: {upload['phone_column']}",
        f"columns: {', '.join(upload['columns'])}",
    ]
    if upload["status"] != "uploaded":
        lines.append(f"sent: {upload['sent_count']}")
        lines.append(f"mapping: {json.dumps(upload['mapping'], ensure_ascii=False)}")
    sys.stdout.write("".join(line + "\n" for line in lines))
    if upload["invalid_rows"]:
        bad = Table("row", "phone number", title="bad numbers" + (
            f" (first {len(upload['invalid_rows'])})" if upload["invalid_count"] > len(upload["invalid_rows"])
            else ""))
        for item in upload["invalid_rows"]:
            bad.add_row(str(item["row"]), str(item["phone_number"]))
        _print(bad)
    preview = Table(*upload["columns"], title="preview (first two rows)")
    for row in upload["preview"]:
        preview.add_row(*(str(row.get(column, "")) for column in upload["columns"]))
    _print(preview)


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in items or []:
        name, sep, column = item.partition("=")
        if not sep or not name.strip():
            err.print(f"{option} takes PARAMETER=COLUMN, got {item!r}", markup=False)
            raise typer.Exit(2)
        mapping[name.strip()] = column
    return mapping


@app.command("upload")
def upload(
    file: Annotated[Path, typer.Argument(help="CSV (any common encoding: UTF-8, Big5, UTF-16 ...) or XLSX file, at most 25 MB and 1,000,000 rows, with a header row",
                                         exists=True, dir_okay=False, readable=True)],
    setting: Annotated[int, typer.Option("--setting", help="Scenario id (pnp_setting_id)")],
    org: OrgName = "default",
    phone_column: Annotated[str | None, typer.Option("--phone-column", help="The column holding the phone "
                                                     "numbers (default: phone_number, phone, mobile, ...)")] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Upload a recipient list for a scenario: prints its id, row counts, bad numbers and a preview."""
    from openmaac.sms_plus import uploads

    database = migrated_database(data_dir)
    context = _org(database, org)
    try:
        with file.open("rb") as stream:
            result = uploads.receive(context, setting, file.name, stream, phone_column)
    except Exception as exc:  # APIError -> its text, exit 1
        _fail(exc, f"no scenario (pnp_setting_id) {setting} in organisation {org!r}")
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return
    _show(result)


@app.command("upload-show")
def upload_show(upload_id: Annotated[int, typer.Argument(help="Upload id")], org: OrgName = "default",
                as_json: AsJson = False, data_dir: DataDir = None) -> None:
    """Show an uploaded list (counts, bad numbers, preview, status)."""
    from openmaac.sms_plus import uploads

    database = migrated_database(data_dir)
    context = _org(database, org)
    try:
        with database.read() as session:
            result = uploads.serialize(uploads.get_upload(session, context.id, upload_id))
    except Exception as exc:
        _fail(exc, _no_upload(upload_id, org))
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return
    _show(result)


@app.command("upload-send")
def upload_send(
    upload_id: Annotated[int, typer.Argument(help="Upload id")],
    org: OrgName = "default",
    pnp: Annotated[list[str] | None, typer.Option("--pnp", help="PNP parameter=column (repeat for each "
                                                  "parameter of the scenario's PNP message)")] = None,
    sms: Annotated[list[str] | None, typer.Option("--sms", help="SMS parameter=column (repeat for each "
                                                  "parameter of the scenario's SMS text)")] = None,
    event_id: Annotated[int | None, typer.Option("--event-id", help="Message event id to count the sends in")] = None,
    data_dir: DataDir = None,
) -> None:
    """Send an uploaded list with a parameter -> column mapping (the API's send body); prints
    {"id", "sent", "result"} on stdout. A list is sent once."""
    from openmaac.sms_plus import uploads

    body: dict[str, Any] = {"mapping": {"pnp": _pairs(pnp, "--pnp"), "sms": _pairs(sms, "--sms")}}
    if event_id is not None:
        body["event_id"] = event_id
    database = migrated_database(data_dir)
    context = _org(database, org)
    try:
        result = uploads.send(context, upload_id, body)
    except Exception as exc:
        _fail(exc, _no_upload(upload_id, org))
    err.print(f"queued {result['sent']} messages from upload {upload_id}; a running server "
              "(or `openmaac worker`) sends them", markup=False)
    sys.stdout.write(json.dumps(result) + "\n")


@app.command("upload-delete")
def upload_delete(upload_id: Annotated[int, typer.Argument(help="Upload id")], org: OrgName = "default",
                  data_dir: DataDir = None) -> None:
    """Delete an uploaded list (its rows go with it; messages already sent stay)."""
    from openmaac.sms_plus import uploads

    database = migrated_database(data_dir)
    context = _org(database, org)
    try:
        uploads.delete_upload(context, upload_id)
    except Exception as exc:
        _fail(exc, _no_upload(upload_id, org))
    err.print(f"deleted upload {upload_id}", markup=False)
