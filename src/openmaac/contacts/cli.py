"""``openmaac contacts import|export``: bulk contacts from the command line, same services as the API."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from openmaac.cli_errors import fail, fail_api
from openmaac.common import tabular
from openmaac.migrations import migrated_database

app = typer.Typer(help="Contacts: bulk import and export.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default ./data, env OPENMAAC_DATA_DIR)")]
OrgName = Annotated[str, typer.Option("--org", help="Organisation name")]
# Rows per import task: each task is one write transaction, which on SQLite every other
# writer (the server's API requests too) waits for; 2,000 rows take about 0.1 s.
BATCH = 2_000
IMPORT_LIMITS = tabular.Limits(max_bytes=512 * 1024 * 1024, max_rows=1_000_000)
# rows whose problems a refused import lists (checking stops there)
SHOWN_ROWS = 20


def _org(database: Any, name: str) -> Any:
    from openmaac.auth.service import get_org_by_name, org_context

    with database.read() as session:
        org = get_org_by_name(session, name)
        if org is None:
            fail(f"no organisation named {name!r} (see `openmaac org list`)")
        return org_context(org)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err)


def _cell(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return value.date().isoformat() if hasattr(value, "date") else value.isoformat()
    return value


@contextmanager
def _open_rows(path: Path) -> Iterator[tuple[list[str], str, Iterator[tuple[int, dict[str, Any]]]]]:
    """The header, what a record is called ("line" in a CSV, "row" in a worksheet) and the rows
    with their line numbers, of a CSV (its encoding detected: UTF-8, Big5, UTF-16 ...) or XLSX
    (first sheet, streaming) file, read by ``openmaac.common.tabular`` (malformed files are
    refused with the line number, at most IMPORT_LIMITS.max_rows rows).

    The first row names the fields; a ``tags`` cell holds comma-separated tag names; empty
    cells are left out (they would not overwrite anyway).
    """
    with tabular.open_path(path, path.name, IMPORT_LIMITS) as table:
        header, records = table.header_and_rows()
        yield header, table.unit, ((line, _row(header, [_cell(c) for c in record])) for line, record in records)


def _row(header: list[str], record: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, value in zip(header, record, strict=False):
        if not name or value is None or (isinstance(value, str) and not value.strip()):
            continue
        if name == "tags":
            row["tags"] = [t.strip() for t in str(value).split(",") if t.strip()]
        else:
            row[name] = value
    return row


def _batches(rows: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    batch: list[tuple[int, dict[str, Any]]] = []
    for item in rows:
        batch.append(item)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


@app.command("import")
def import_contacts(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="FILE.csv or FILE.xlsx")],
    key: Annotated[str, typer.Option("--key", help="Match contacts on line_uid, customer_id, email or mobile")],
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag for every imported contact (repeatable)")] = None,
    org: OrgName = "default",
    data_dir: DataDir = None,
) -> None:
    """Import contacts in tasks of 2,000 rows, exactly as POST member/import/ does."""
    from openmaac.contacts import imports

    if key not in imports.IMPORT_KEYS:
        err.print(f"[red]--key must be one of {', '.join(imports.IMPORT_KEYS)}[/]")
        raise typer.Exit(2)
    database = migrated_database(data_dir)
    context = _org(database, org)
    tags = [t.strip() for t in (tag or []) if t.strip()]
    try:
        problems, total = _check(imports, context, file, key)
        if problems:
            fail(f"{file.name}: nothing was imported:", *(f"  {problem}" for problem in problems))
        _import(database, imports, context, file, key, tags, total)
    except tabular.TabularError as exc:
        fail(f"{file.name}: {exc} Nothing was imported.")


def _check(imports: Any, context: Any, file: Path, key: str) -> tuple[list[str], int]:
    """First pass over the whole file, so a bad file changes nothing: what is wrong with its
    columns, then with its first SHOWN_ROWS refused rows, in words; and its row count."""
    problems: list[str] = []
    refused_rows = total = 0
    with _open_rows(file) as (header, unit, rows), _progress() as progress:
        unknown = [name for name in header if name and name not in imports.ROW_FIELDS]
        problems += [f'column "{name}" is not a field of a contact (fields: {", ".join(imports.ROW_FIELDS)})'
                     for name in unknown]
        if key not in header:
            return [*problems, f'there is no "{key}" column, the field contacts are matched on (--key {key})'], 0
        checking = progress.add_task("checking", total=None)
        for batch in _batches(rows):
            records = [{name: value for name, value in row.items() if name not in unknown} for _line, row in batch]
            progress.advance(checking, len(batch))
            total += len(batch)
            if imports.validate_rows(key, records, context.region).ok:
                continue
            labels = [f"{unit} {line}" for line, _row in batch]
            for index, reasons in imports.explain_rows(key, records, context.region, labels):
                problems += [f"{labels[index]}: {reason}" for reason in reasons]
                refused_rows += 1
                if refused_rows == SHOWN_ROWS:
                    return [*problems, f"(the first {SHOWN_ROWS} {unit}s with problems; the rest of the file "
                                       "was not checked)"], total
    return problems, total


def _import(database: Any, imports: Any, context: Any, file: Path, key: str, tags: list[str], total: int) -> None:
    totals = {"total_num": 0, "created_num": 0, "updated_num": 0, "mismatch_num": 0}
    with _open_rows(file) as (_header, _unit, rows), _progress() as progress:
        importing = progress.add_task("importing", total=total)
        for batch in _batches(rows):
            task_id = _start(database, imports, context.id, key, [row for _line, row in batch], tags)
            imports.run_task(task_id)  # a running worker may take it first; either way it runs once
            with database.read() as session:
                result = imports.task_view(session, context, task_id)["result"]
            for name in totals:
                totals[name] += result.get(name, 0)
            progress.advance(importing, len(batch))
    err.print(f"[green]imported[/] {totals['total_num']} rows: {totals['created_num']} created, "
              f"{totals['updated_num']} updated, {totals['mismatch_num']} matched no contact")


def _start(database: Any, imports: Any, org_id: int, key: str, batch: list[dict[str, Any]], tags: list[str]) -> int:
    import time

    from openmaac.web.errors import APIError

    for _ in range(600):
        try:
            with database.write() as session:
                return int(imports.create_task(session, org_id, key, batch, tags).id)
        except APIError as exc:  # another import is running (e.g. through the API): wait for it
            if exc.status_code != 429:
                raise
            time.sleep(1)
    err.print("[red]another import kept running for 10 minutes; giving up[/]")
    raise typer.Exit(1)


EXPORT_COLUMNS = ("line_uid", "line_display_name", "display_name", "email", "mobile", "customer_id", "gender",
                  "birthday", "status", "tags", "created_at", "updated_at")


@app.command("export")
def export_contacts(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="CSV file (default: stdout)")] = None,
    segment: Annotated[int | None, typer.Option("--segment", help="Only the members of this segment (line_uid)")] = None,
    org: OrgName = "default",
    data_dir: DataDir = None,
) -> None:
    """Export every contact (with its valid tags) to CSV, streaming, oldest first."""
    from sqlalchemy import func, select

    from openmaac.contacts.models import Contact
    from openmaac.contacts.service import tags_for
    from openmaac.web.times import render

    database = migrated_database(data_dir)
    context = _org(database, org)
    members: Iterator[list[str]] = iter(())
    if segment is not None:
        from openmaac.segments.service import get_segment, iter_member_line_uids

        with database.read() as session:
            try:
                get_segment(session, context.id, segment)
            except Exception as exc:
                fail_api(exc, not_found=f"no segment {segment} in organisation {org!r}")
        members = iter_member_line_uids(segment, context.id)
    # UTF-8 with a BOM, as every CSV openmaac writes: Excel then shows Chinese names
    try:
        handle = (output.open("w", encoding="utf-8", newline="") if output
                  else io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline=""))
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    handle.write("\ufeff")
    writer = csv.writer(handle, lineterminator="\r\n")
    try:
        if segment is not None:
            writer.writerow(["line_uid"])
            for batch in members:
                writer.writerows([uid] for uid in batch)
            return
        with database.read() as session:
            total = session.scalar(select(func.count()).select_from(Contact)
                                   .where(Contact.organization_id == context.id)) or 0
        writer.writerow(EXPORT_COLUMNS)
        last_id = 0
        with _progress() as progress:
            exporting = progress.add_task("exporting", total=total)
            while True:
                with database.read() as session:
                    contacts = list(session.scalars(
                        select(Contact).where(Contact.organization_id == context.id, Contact.id > last_id)
                        .order_by(Contact.id).limit(5_000)))
                    if not contacts:
                        break
                    tags = tags_for(session, [c.id for c in contacts])
                for c in contacts:
                    writer.writerow([
                        c.line_uid, c.line_display_name, c.display_name, c.email, c.mobile, c.customer_id, c.gender,
                        c.birthday.isoformat() if c.birthday else "", c.status,
                        ",".join(name for name, _at in tags[c.id]),
                        render(c.created_at, context.tz), render(c.updated_at, context.tz),
                    ])
                last_id = contacts[-1].id
                progress.advance(exporting, len(contacts))
    finally:
        if output:
            handle.close()
        else:
            handle.flush()
            handle.detach()
    if output:
        err.print(f"[green]exported[/] to {output}")
