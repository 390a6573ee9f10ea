"""Segments: tag-condition audiences (type 1) and uploaded LINE user id lists (type 2).

A tag segment is a saved query over the live tag links: its members (the CSV, and anything
that sends to it) are evaluated when read, so tag changes and expiry count at once; its
``member_count`` is computed by the ``segment.build`` job at creation and refreshed every
``OPENMAAC_SEGMENT_REFRESH_SECONDS`` (default 3,600) by a durable job chain.

A custom segment stores the contacts its uploaded ids matched when the build job ran (their
ids, one list per segment: ``segment_member_lists``); a new file (PATCH) rebuilds it.
"""

from __future__ import annotations

import codecs
import os
import re
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import IO, Any

from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.common import tabular
from openmaac.db.base import UTCDateTime, utcnow
from openmaac.db.engine import get_database
from openmaac.db.locks import lock_for_update
from openmaac.jobs.queue import enqueue
from openmaac.jobs.registry import JobContext, handler
from openmaac.segments.models import (
    SEGMENT_TYPE_CUSTOM,
    SEGMENT_TYPE_TAGS,
    STATUS_PENDING,
    STATUS_READY,
    Segment,
    SegmentMemberList,
    SegmentUpload,
)
from openmaac.tags.models import Tag
from openmaac.web.errors import APIError, field_errors, not_found
from openmaac.web.pagination import paginate_by_id
from openmaac.web.times import render

MAX_UPLOAD_ROWS = 300_000
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
LINE_UID = re.compile(r"^U[0-9a-f]{32}$")
STREAM_BATCH = 5_000


def segment_limit() -> int:
    return int(os.environ.get("OPENMAAC_SEGMENT_LIMIT") or 30)


def refresh_seconds() -> float:
    return float(os.environ.get("OPENMAAC_SEGMENT_REFRESH_SECONDS") or 3600)


# -- views ------------------------------------------------------------------------------


def serialize(segment: Segment, org: OrgContext) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": segment.id,
        "name": segment.name,
        "description": segment.description,
        "segment_type": segment.segment_type,
        "member_count": segment.member_count if segment.status == STATUS_READY else -1,
        "status": segment.status,
        "last_updated_time": render(segment.last_updated_time, org.tz),
    }
    if segment.segment_type == SEGMENT_TYPE_CUSTOM:
        view["file_report"] = segment.file_report  # openmaac extension
    return view


def list_segments(session: Session, org: OrgContext, name: str | None, start: str | None) -> dict[str, Any]:
    stmt = select(Segment).where(Segment.organization_id == org.id)
    if name:
        stmt = stmt.where(Segment.name == name)
    page = paginate_by_id(session, stmt, Segment.id, scope=f"segment:{org.id}", start=start)
    return {"results": [serialize(s, org) for s in page.rows], "next": page.next}


def get_segment(session: Session, org_id: int, segment_id: int, *, for_update: bool = False) -> Segment:
    stmt = select(Segment).where(Segment.organization_id == org_id, Segment.id == segment_id)
    if for_update:
        stmt = stmt.with_for_update()
    segment = session.scalar(stmt)
    if segment is None:
        raise not_found()
    return segment


# -- creating ---------------------------------------------------------------------------


def _check_limit(session: Session, org_id: int) -> None:
    lock_for_update(session, "segments", org_id)
    limit = segment_limit()
    count = session.scalar(select(func.count()).select_from(Segment).where(Segment.organization_id == org_id)) or 0
    if count >= limit:
        raise APIError(400, {"detail": f"The number of segments has reached the limit ({limit} per organisation). "
                                       "Delete a segment first."})


def _enqueue_build(session: Session, segment: Segment) -> None:
    enqueue(session, "segment.build", {"segment_id": segment.id, "generation": segment.generation},
            organization_id=segment.organization_id,
            unique_key=f"segment.build:{segment.id}:{segment.generation}")


def create_tag_segment(session: Session, org: OrgContext, name: str, description: str | None, operator: str,
                       conditions: list[dict[str, Any]]) -> dict[str, Any]:
    tag_ids = sorted({c["tag_id"] for c in conditions})
    known = set(session.scalars(select(Tag.id).where(Tag.organization_id == org.id, Tag.id.in_(tag_ids))))
    if len(known) != len(tag_ids):
        errors = [
            {} if c["tag_id"] in known else {"tag_id": [f'Invalid pk "{c["tag_id"]}" - object does not exist.']}
            for c in conditions
        ]
        raise field_errors({"tags": errors})
    _check_limit(session, org.id)
    now = utcnow()
    segment = Segment(organization_id=org.id, name=name, description=description, segment_type=SEGMENT_TYPE_TAGS,
                      operator=operator, conditions=conditions, status=STATUS_PENDING, member_count=-1,
                      generation=1, created_at=now, updated_at=now)
    session.add(segment)
    session.flush()
    _enqueue_build(session, segment)
    return serialize(segment, org)


class Upload:
    """A parsed id file: distinct well-formed ids (compressed) and what was in the file."""

    def __init__(self, data: bytes, report: dict[str, int]) -> None:
        self.data = data
        self.report = report


HEADER_NAMES = ("line_uid", "uid", "lineuid", "line uid", "userid", "user_id")
PACK_BATCH = 10_000
# CSV only (the spec's format), read by the shared reader: encoding detected, strict syntax.
UPLOAD_LIMITS = tabular.Limits(max_bytes=MAX_UPLOAD_BYTES, max_rows=MAX_UPLOAD_ROWS, kinds=("csv",))
TOO_LARGE = APIError(413, {"detail": "File is too large: at most 25 MB."})


def parse_upload(raw: IO[bytes]) -> Upload:
    """Read a CSV of LINE user ids, streaming: any common encoding (``openmaac.common.tabular``),
    header or none, CRLF, blank lines, quotes.

    The ids are the column named ``line_uid`` (or ``uid``) when the first row is a header,
    else the first column. Malformed ids and repeats are counted, not fatal. The distinct ids
    are kept sorted (the build job then looks them up in index order).
    """
    try:
        with tabular.open_upload(raw, "upload.csv", UPLOAD_LIMITS) as table:
            return _read_ids(table.records())
    except tabular.TooLarge:
        raise TOO_LARGE from None
    except tabular.TabularError as exc:
        raise field_errors({"file": [str(exc)]}) from None


def _read_ids(records: Iterator[tuple[int, list[str]]]) -> Upload:
    column = 0
    rows = malformed = duplicates = 0
    seen: set[str] = set()
    first = True
    match = LINE_UID.match
    for _line, record in records:
        if first:
            first = False
            cells = [cell.strip().strip("\ufeff") for cell in record]
            lowered = [cell.lower() for cell in cells]
            if not match(cells[0]) and any(cell in HEADER_NAMES for cell in lowered):
                column = next(index for index, cell in enumerate(lowered) if cell in HEADER_NAMES)
                continue
        rows += 1
        if rows > MAX_UPLOAD_ROWS:
            raise field_errors({"file": [f"Ensure the file has no more than {MAX_UPLOAD_ROWS} rows."]})
        value = record[column].strip().strip("\ufeff") if column < len(record) else ""
        if not match(value):
            malformed += 1
        elif value in seen:
            duplicates += 1
        else:
            seen.add(value)
    if rows == 0:
        raise field_errors({"file": ["The submitted file is empty."]})
    distinct = sorted(seen)
    del seen
    packer = zlib.compressobj(1)
    parts = [packer.compress(("\n".join(distinct[start : start + PACK_BATCH]) + "\n").encode())
             for start in range(0, len(distinct), PACK_BATCH)]
    parts.append(packer.flush())
    return Upload(b"".join(parts), {"rows": rows, "malformed": malformed, "duplicates": duplicates,
                                    "distinct": len(distinct)})


def create_custom_segment(session: Session, org: OrgContext, name: str, description: str | None,
                          upload: Upload) -> dict[str, Any]:
    _check_limit(session, org.id)
    now = utcnow()
    segment = Segment(organization_id=org.id, name=name, description=description, segment_type=SEGMENT_TYPE_CUSTOM,
                      operator="AND", conditions=[], status=STATUS_PENDING, member_count=-1, generation=1,
                      created_at=now, updated_at=now)
    session.add(segment)
    session.flush()
    session.add(SegmentUpload(segment_id=segment.id, generation=1, data=upload.data, report=upload.report,
                              created_at=now))
    _enqueue_build(session, segment)
    return serialize(segment, org)


def patch_custom_segment(session: Session, org: OrgContext, segment_id: int, changes: dict[str, Any],
                         upload: Upload | None) -> dict[str, Any]:
    segment = get_segment(session, org.id, segment_id, for_update=True)
    if segment.segment_type != SEGMENT_TYPE_CUSTOM:
        raise not_found()
    now = utcnow()
    if "name" in changes:
        segment.name = changes["name"]
    if "description" in changes:
        segment.description = changes["description"]
    segment.updated_at = now
    if upload is not None:
        segment.generation += 1
        segment.status = STATUS_PENDING
        segment.member_count = -1
        session.execute(delete(SegmentUpload).where(SegmentUpload.segment_id == segment.id))
        session.add(SegmentUpload(segment_id=segment.id, generation=segment.generation, data=upload.data,
                                  report=upload.report, created_at=now))
        session.flush()
        _enqueue_build(session, segment)
    session.flush()
    return serialize(segment, org)


def delete_segment(session: Session, org: OrgContext, segment_id: int) -> None:
    segment = get_segment(session, org.id, segment_id, for_update=True)
    session.execute(delete(SegmentMemberList).where(SegmentMemberList.segment_id == segment.id))
    session.execute(delete(SegmentUpload).where(SegmentUpload.segment_id == segment.id))
    session.delete(segment)


# -- membership -------------------------------------------------------------------------

_UNIVERSE = "c.organization_id = :org AND c.line_uid IS NOT NULL"  # contacts a segment can hold


def _tag_test(postgres: bool, contact: str, indexes: list[int], has: bool) -> str:
    """SQL: contact id ``contact`` has (``has``) an active link to any of the tags
    ``:t<index>``, or has none of them.

    Both forms read only the index (tag_id, contact_id, expired_at). SQLite builds an
    uncorrelated ``[NOT] IN`` list once and probes it; PostgreSQL turns ``[NOT] EXISTS`` into a
    hash semi-/anti-join (``IN``/``NOT IN`` lists there are rescanned row by row once they
    outgrow work_mem, e.g. under an OR).
    """
    tags = f"x.tag_id = :t{indexes[0]}" if len(indexes) == 1 else f"x.tag_id IN ({', '.join(f':t{i}' for i in indexes)})"
    active = "(x.expired_at IS NULL OR x.expired_at > :now)"
    if postgres:
        return (f"{'' if has else 'NOT '}EXISTS (SELECT 1 FROM contact_tags x WHERE x.contact_id = {contact} "
                f"AND {tags} AND {active})")
    return f"{contact} {'IN' if has else 'NOT IN'} (SELECT x.contact_id FROM contact_tags x WHERE {tags} AND {active})"


def _params(segment: Segment) -> dict[str, Any]:
    params: dict[str, Any] = {"org": segment.organization_id}
    for index, condition in enumerate(segment.conditions):
        params[f"t{index}"] = int(condition["tag_id"])
    return params


def _conditions(segment: Segment) -> list[tuple[bool, int]]:
    """(has the tag?, parameter index) for each condition."""
    return [(condition["status"] != "without", index) for index, condition in enumerate(segment.conditions)]


def _driven(postgres: bool, conditions: list[tuple[bool, int]], select: str) -> str:
    """AND of ``conditions`` (at least one "with"), driven by the first "with" tag's links in
    contact_id order, every other condition tested on each: ``select`` over ``d`` (the link) and
    ``c`` (the contact)."""
    driver = next(index for has, index in conditions if has)
    tests = [_tag_test(postgres, "d.contact_id", [index], has) for has, index in conditions if index != driver]
    # CROSS JOIN keeps SQLite from starting at contacts; PostgreSQL plans the join itself.
    join = "JOIN contacts c ON c.id = d.contact_id" if postgres else "CROSS JOIN contacts c"
    where = [f"d.tag_id = :t{driver}", "(d.expired_at IS NULL OR d.expired_at > :now)", "c.id = d.contact_id",
             _UNIVERSE, *tests]
    return f"SELECT {select} FROM contact_tags d {join} WHERE {' AND '.join(where)}"


def _scanned(postgres: bool, conditions: list[tuple[bool, int]], operator: str, select: str) -> str:
    """The organisation's contacts filtered by ``conditions`` joined with ``operator``; an OR
    of only "with"s (or an AND of only "without"s) is one test against the set of those tags."""
    if all(has for has, _ in conditions) and (operator == "OR" or len(conditions) == 1):
        tests = _tag_test(postgres, "c.id", [index for _, index in conditions], True)
    elif not any(has for has, _ in conditions) and (operator == "AND" or len(conditions) == 1):
        tests = _tag_test(postgres, "c.id", [index for _, index in conditions], False)
    else:
        tests = f" {operator} ".join(_tag_test(postgres, "c.id", [index], has) for has, index in conditions)
    return f"SELECT {select} FROM contacts c WHERE {_UNIVERSE} AND ({tests})"


def tag_member_count_query(segment: Segment, postgres: bool) -> tuple[str, dict[str, Any]]:
    """One statement (one snapshot) counting a tag segment's members, and its parameters.

    Members are the organisation's contacts with a LINE user id that meet the conditions (tags
    whose ``expired_at`` has passed count as gone). AND with a "with" walks that tag's links;
    OR with a "without" is counted as everyone minus the AND of the negated conditions
    (De Morgan), which again walks a tag; an OR of "with"s is the contacts in the union of
    those tags' links, and an AND of "without"s everyone minus that.
    """
    conditions = _conditions(segment)
    negated = [(not has, index) for has, index in conditions]
    everyone = f"SELECT count(*) FROM contacts c WHERE {_UNIVERSE}"
    if segment.operator == "OR":
        if all(has for has, _ in conditions):
            sql = _scanned(postgres, conditions, "OR", "count(*)")
        else:
            sql = f"SELECT ({everyone}) - ({_driven(postgres, negated, 'count(*)')})"
    elif any(has for has, _ in conditions):
        sql = _driven(postgres, conditions, "count(*)")
    else:
        sql = f"SELECT ({everyone}) - ({_scanned(postgres, negated, 'OR', 'count(*)')})"
    return sql, _params(segment)


def tag_member_list_query(segment: Segment, postgres: bool) -> tuple[str, dict[str, Any]]:
    """The members' line_uids in contact id order (the same set tag_member_count_query counts)."""
    conditions = _conditions(segment)
    if segment.operator == "AND" and any(has for has, _ in conditions):
        sql = _driven(postgres, conditions, "c.line_uid") + " ORDER BY d.contact_id"
    else:
        sql = _scanned(postgres, conditions, segment.operator, "c.line_uid") + " ORDER BY c.id"
    return sql, _params(segment)


def _bind(sql: str) -> Any:
    return text(sql).bindparams(bindparam("now", type_=UTCDateTime()))


def _is_postgres(session: Session) -> bool:
    return session.connection().dialect.name == "postgresql"


def count_tag_members(session: Session, segment: Segment, now: datetime | None = None) -> int:
    postgres = _is_postgres(session)
    sql, params = tag_member_count_query(segment, postgres)
    params["now"] = now or utcnow()
    if postgres:
        # For this transaction only: one process with room for its hash tables. Parallel hash
        # joins of 500,000-row tag lists spilled to disk in batches (4 MB work_mem; estimates
        # 3x low, as every LINE contact has a line_uid) and took 2-3x longer on the shared
        # 2-core machine (docs/benchmarks.md, import_segments).
        session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
        session.execute(text("SET LOCAL work_mem = '64MB'"))
    return int(session.execute(_bind(sql), params).scalar() or 0)


def iter_member_line_uids(segment_id: int, organization_id: int) -> Iterator[list[str]]:
    """The segment's members' line_uids in batches, from a streaming cursor (memory stays flat)."""
    with get_database().read() as session:
        segment = get_segment(session, organization_id, segment_id)
        if segment.segment_type == SEGMENT_TYPE_TAGS:
            sql, params = tag_member_list_query(segment, _is_postgres(session))
            params["now"] = utcnow()
            stmt = _bind(sql)
        else:
            stmt = text(_custom_members_sql(_is_postgres(session)))
            params = {"sid": segment.id}
        result = session.execute(stmt.execution_options(stream_results=True, yield_per=STREAM_BATCH), params)
        for batch in result.partitions(STREAM_BATCH):
            yield [row[0] for row in batch]


def members_csv(segment_id: int, organization_id: int) -> Iterator[bytes]:
    # UTF-8 with BOM, as every CSV openmaac writes: Excel then reads it as UTF-8
    yield codecs.BOM_UTF8 + b"line_uid\r\n"
    for batch in iter_member_line_uids(segment_id, organization_id):
        yield ("\r\n".join(batch) + "\r\n").encode()


# -- building ---------------------------------------------------------------------------


def _custom_members_sql(postgres: bool) -> str:
    """A custom segment's members' line_uids, in contact id order (the stored list's order)."""
    if postgres:
        return ("SELECT c.line_uid FROM segment_member_lists l "
                "CROSS JOIN LATERAL jsonb_array_elements_text(l.contact_ids) WITH ORDINALITY AS j(id, n) "
                "JOIN contacts c ON c.id = j.id::bigint WHERE l.segment_id = :sid AND c.line_uid IS NOT NULL "
                "ORDER BY j.n")
    return ("SELECT c.line_uid FROM segment_member_lists l, json_each(l.contact_ids) j CROSS JOIN contacts c "
            "WHERE l.segment_id = :sid AND c.id = j.value AND c.line_uid IS NOT NULL ORDER BY j.key")


def _match_members_sql(postgres: bool) -> str:
    """The ids of the organisation's contacts named by ``:ids`` (the upload's distinct
    line_uids), ascending, as one JSON array text, and how many: one read statement inside the
    database. PostgreSQL gets the ids as one newline-separated text (a 300,000-element array
    parameter costs more to send than the query to run) and tests them as a hashed ``= ANY``;
    SQLite walks the sorted JSON array and looks each up in (organization_id, line_uid)."""
    if postgres:
        return ("SELECT coalesce(jsonb_agg(id ORDER BY id), '[]'::jsonb)::text, count(*) FROM contacts "
                "WHERE organization_id = :org AND line_uid = ANY(string_to_array(:ids, E'\\n'))")
    return ("SELECT json_group_array(id), count(*) FROM (SELECT c.id FROM json_each(:ids) AS j "
            "CROSS JOIN contacts c WHERE c.organization_id = :org AND c.line_uid = j.value ORDER BY c.id)")


def _build_custom(segment_id: int, generation: int) -> None:
    """Match the uploaded ids in a read transaction (on SQLite, a second or two for 300,000 ids
    that other writers need not wait for), then store the list in a short write transaction,
    if the segment has not changed meanwhile."""
    database = get_database()
    postgres = database.dialect == "postgresql"
    with database.read() as session:
        segment = session.get(Segment, segment_id)
        if segment is None or segment.generation != generation or segment.status == STATUS_READY:
            return
        upload = session.get(SegmentUpload, segment_id)
        if upload is None or upload.generation != generation:
            return
        organization_id = segment.organization_id
        report = dict(upload.report)
        ids = zlib.decompress(upload.data).decode()  # distinct ids, sorted, each ending in a newline
        if postgres:
            value = ids.rstrip("\n")
        else:  # well-formed LINE user ids (U + 32 hex digits): nothing to escape in a JSON array
            items = ids[:-1].replace("\n", '","')
            value = f'["{items}"]' if ids else "[]"
            del items
        del ids
        members, matched = session.execute(text(_match_members_sql(postgres)),
                                           {"org": organization_id, "ids": value}).one()
        del value
    with database.write() as session:
        segment = session.get(Segment, segment_id, with_for_update=True)
        if segment is None or segment.generation != generation or segment.status == STATUS_READY:
            return
        session.execute(delete(SegmentMemberList).where(SegmentMemberList.segment_id == segment_id))
        session.execute(text("INSERT INTO segment_member_lists (segment_id, contact_ids) VALUES "
                             f"(:sid, {'CAST(:members AS jsonb)' if postgres else ':members'})"),
                        {"sid": segment_id, "members": members})
        del members
        report["matched"] = int(matched or 0)
        report["unknown"] = report.get("distinct", 0) - report["matched"]
        now = utcnow()
        segment.status = STATUS_READY
        segment.member_count = report["matched"]
        segment.last_updated_time = now
        segment.updated_at = now
        segment.file_report = report
        session.execute(delete(SegmentUpload).where(SegmentUpload.segment_id == segment_id))


def _build_tags(segment_id: int, generation: int, scheduled: str | None) -> None:
    database = get_database()
    with database.read() as session:
        segment = session.get(Segment, segment_id)
        if segment is None or segment.generation != generation:
            return
        count = count_tag_members(session, segment)
    with database.write() as session:
        segment = session.get(Segment, segment_id, with_for_update=True)
        if segment is None or segment.generation != generation:
            return
        now = utcnow()
        segment.status = STATUS_READY
        segment.member_count = count
        segment.last_updated_time = now
        segment.updated_at = now
        base = datetime.fromisoformat(scheduled) if scheduled else segment.created_at
        next_at = base + timedelta(seconds=refresh_seconds())
        if next_at <= now:  # the server was down for a while: do not replay every missed slot
            next_at = now + timedelta(seconds=refresh_seconds())
        enqueue(session, "segment.build",
                {"segment_id": segment_id, "generation": generation, "scheduled": next_at.isoformat()},
                organization_id=segment.organization_id, run_at=next_at,
                unique_key=f"segment.refresh:{segment_id}:{next_at.isoformat()}")


@handler("segment.build")
def run_build(payload: dict[str, Any], _context: JobContext) -> None:
    segment_id = int(payload["segment_id"])
    generation = int(payload["generation"])
    with get_database().read() as session:
        segment_type = session.scalar(select(Segment.segment_type).where(Segment.id == segment_id))
    if segment_type is None:
        return
    if segment_type == SEGMENT_TYPE_CUSTOM:
        _build_custom(segment_id, generation)
    else:
        _build_tags(segment_id, generation, payload.get("scheduled"))


def csv_filename(segment_id: int, org: OrgContext) -> str:
    return f"{datetime.now(org.tz).date().isoformat()}_segment_{segment_id}_members.csv"
