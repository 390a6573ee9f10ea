"""Bulk contact import (1,000,000 contacts through the API), tag segments over 5,000,000 links, a 300,000-row custom segment.

For each database (SQLite, and PostgreSQL when OPENMAAC_BENCH_DATABASE_URL or
OPENMAAC_TEST_DATABASE_URL names a server):

1. ``POST member/import/`` 100 times with 10,000 rows each (key customer_id, six profile
   fields, a global tag), waiting for each task to be done as the spec's flow says; rows/s
   beside a raw bulk insert of the same rows (contacts + tag links, the driver's executemany
   in 10,000-row transactions) into another organisation of the same database. The clock
   runs from each POST to its task's ``done`` (polled every 10 ms); making up the rows and
   encoding the JSON body is the load generator's work and happens before each POST.
2. 1,000,000 LINE contacts with 5,000,000 tag links (10 tags, 5 per contact) seeded directly
   (COPY on PostgreSQL), then an AND and an OR/without tag segment built through the API
   (POST segment/ until status 2).
3. A 300,000-row custom segment: multipart upload until status 2.

Peak server memory (RSS of the ``openmaac serve`` process) is sampled during each, and the
server's CPU time (user + system) is read around each, as is the load average: on a shared
machine the CPU time is the figure other work moves least.
"""

from __future__ import annotations

import io
import os
import random
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from benchmarks.common import PeakMemory, Result, ServerProcess, fresh_postgres_database, postgres_url

TAGS = 10
TAGS_PER_CONTACT = 5


def _rows(start: int, count: int) -> list[dict[str, Any]]:
    return [
        {"customer_id": f"CRM{i:08d}", "email": f"user{i}@example.com", "mobile": f"09{i % 100_000_000:08d}",
         "line_display_name": f"User {i}", "gender": ("male", "female")[i % 2],
         "birthday": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 10}"}
        for i in range(start, start + count)
    ]


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _wait(client: httpx.Client, path: str, done: Any, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(path).json()
        if done(view):
            return view
        time.sleep(0.01)
    raise RuntimeError(f"{path} did not finish")


def _database_url(server: ServerProcess) -> str:
    if server.database_url:
        return server.database_url.replace("postgresql://", "postgresql+psycopg://")
    return f"sqlite:///{server.data_dir / 'data' / 'openmaac.sqlite3'}"


def _org_id(db: Any, name: str) -> int:
    from sqlalchemy import text

    with db.read() as session:
        return int(session.execute(text("SELECT id FROM organizations WHERE name = :n"), {"n": name}).scalar_one())


def _raw_insert(db: Any, org_id: int, total: int, batch: int) -> float:
    """The same rows straight into the tables with the driver's executemany, one transaction
    per 10,000: contacts, their ids read back, one tag link each."""
    from sqlalchemy import text

    now = datetime.now(UTC)
    pg = db.dialect == "postgresql"
    stamp: Any = now if pg else now.strftime("%Y-%m-%d %H:%M:%S.%f")
    mark = "%s" if pg else "?"
    with db.write() as session:
        tag_id = session.execute(text("INSERT INTO tags (organization_id, name, created_at) VALUES (:o, 'bench', :c) "
                                      "RETURNING id"), {"o": org_id, "c": stamp}).scalar_one()
    columns = ("organization_id", "status", "created_at", "updated_at", "display_name", "line_display_name",
               "email", "mobile", "customer_id", "gender", "birthday")
    insert_contacts = (f"INSERT INTO contacts ({', '.join(columns)}) VALUES ({', '.join(mark for _ in columns)})")
    insert_links = (f"INSERT INTO contact_tags (contact_id, tag_id, organization_id, tagged_at, created_at) "
                    f"VALUES ({', '.join(mark for _ in range(5))})")
    started = time.perf_counter()
    for start in range(0, total, batch):
        rows = [(org_id, "unfollow", stamp, stamp, r["line_display_name"], r["line_display_name"], r["email"],
                 "+886" + r["mobile"][1:], r["customer_id"], r["gender"], r["birthday"]) for r in _rows(start, batch)]
        with db.write() as session:
            connection = session.connection()
            floor = connection.execute(text("SELECT coalesce(max(id), 0) FROM contacts")).scalar_one()
            connection.exec_driver_sql(insert_contacts, rows)
            ids = connection.execute(text("SELECT id FROM contacts WHERE organization_id = :o AND id > :f"),
                                     {"o": org_id, "f": floor}).scalars().all()
            connection.exec_driver_sql(insert_links, [(i, tag_id, org_id, stamp, stamp) for i in ids])
    return time.perf_counter() - started


def _seed_segment_data(db: Any, org_id: int, contacts: int) -> list[int]:
    """``contacts`` LINE contacts and TAGS_PER_CONTACT of TAGS tags on each, in bulk."""
    from sqlalchemy import text

    from openmaac.tags.models import Tag

    now = datetime.now(UTC)
    rng = random.Random(7)
    with db.write() as session:
        tag_ids = [session.execute(Tag.__table__.insert().returning(Tag.__table__.c.id),
                                   {"organization_id": org_id, "name": f"seg{t}", "created_at": now}).scalar_one()
                   for t in range(TAGS)]
    batch = 100_000
    last_id = 0
    for start in range(0, contacts, batch):
        count = min(batch, contacts - start)
        uids = ["U" + secrets.token_hex(16) for _ in range(count)]
        if db.dialect == "postgresql":
            with db.write() as session:
                raw = session.connection().connection.dbapi_connection
                with raw.cursor() as cursor:
                    with cursor.copy("COPY contacts (organization_id, line_uid, status, created_at, updated_at) "
                                     "FROM STDIN") as copy:
                        for uid in uids:
                            copy.write_row((org_id, uid, "follow", now, now))
                    cursor.execute("SELECT id FROM contacts WHERE organization_id = %s AND id > %s ORDER BY id",
                                   (org_id, last_id))
                    ids = [r[0] for r in cursor.fetchall()]
                    with cursor.copy("COPY contact_tags (contact_id, tag_id, organization_id, tagged_at, created_at) "
                                     "FROM STDIN") as copy:
                        for cid in ids:
                            for tag in rng.sample(tag_ids, TAGS_PER_CONTACT):
                                copy.write_row((cid, tag, org_id, now, now))
        else:
            stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
            with db.write() as session:
                connection = session.connection()
                connection.exec_driver_sql(
                    "INSERT INTO contacts (organization_id, line_uid, status, created_at, updated_at) "
                    "VALUES (?, ?, 'follow', ?, ?)", [(org_id, uid, stamp, stamp) for uid in uids])
                ids = connection.execute(text("SELECT id FROM contacts WHERE organization_id = :o AND id > :f "
                                              "ORDER BY id"), {"o": org_id, "f": last_id}).scalars().all()
                connection.exec_driver_sql(
                    "INSERT INTO contact_tags (contact_id, tag_id, organization_id, tagged_at, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(cid, tag, org_id, stamp, stamp) for cid in ids for tag in rng.sample(tag_ids, TAGS_PER_CONTACT)])
        last_id = ids[-1]
    if db.dialect == "postgresql":
        # What autovacuum does within a minute of a bulk load (its insert threshold): statistics,
        # and the visibility map that lets index-only scans skip the table.
        with db.write_engine.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text("VACUUM ANALYZE contacts"))
            connection.execute(text("VACUUM ANALYZE contact_tags"))
    else:
        with db.write() as session:
            session.execute(text("ANALYZE"))
    return tag_ids


def _line_uids(db: Any, org_id: int, count: int) -> Iterator[str]:
    from sqlalchemy import text

    with db.read() as session:
        result = session.execute(text("SELECT line_uid FROM contacts WHERE organization_id = :o ORDER BY id LIMIT :n")
                                 .execution_options(stream_results=True), {"o": org_id, "n": count})
        for row in result:
            yield row[0]


def _run_backend(label: str, database_url: str | None, quick: bool) -> Iterable[Result]:
    from openmaac.db.engine import get_database

    requests = 4 if quick else 100
    batch = 2_500 if quick else 10_000
    total = requests * batch
    seg_contacts = 50_000 if quick else 1_000_000
    custom_rows = 30_000 if quick else 300_000
    env = {"OPENMAAC_MEMBER_IMPORT_RATE": "100000/60", "OPENMAAC_SIMULATORS": "0", "OPENMAAC_SEGMENT_LIMIT": "100"}
    with ServerProcess(database_url=database_url, extra_env=env) as server:
        token = server.cli("token", "create", "--org", "bench")
        server.cli("token", "create", "--org", "raw")
        seg_token = server.cli("token", "create", "--org", "segments")
        db = get_database(_database_url(server))
        assert server.process is not None
        client = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120)

        # 1. The import through the API.
        pid = server.process.pid
        load_before = _load()
        api_seconds = making_seconds = 0.0
        cpu_before = _cpu(pid)
        with PeakMemory(pid) as memory:
            for i in range(requests):
                making = time.perf_counter()
                body = orjson.dumps({"import_key": "customer_id", "data": _rows(i * batch, batch), "tags": ["bench"]})
                started = time.perf_counter()
                making_seconds += started - making
                response = client.post("/openapi/v1/member/import/", content=body,
                                       headers={"Content-Type": "application/json"})
                response.raise_for_status()
                view = _wait(client, f"/openapi/v1/member/import/{response.json()['id']}/",
                             lambda v: v["status"] == "done")
                api_seconds += time.perf_counter() - started
                assert view["result"]["success"], view
        api_cpu = _cpu(pid) - cpu_before
        raw_started = time.process_time()
        raw_seconds = _raw_insert(db, _org_id(db, "raw"), total, batch)
        raw_cpu = time.process_time() - raw_started
        api_rate, raw_rate = total / api_seconds, total / raw_seconds
        yield Result(f"{label}: import {total:,} contacts via API ({requests} × {batch:,})", api_rate, "rows/s",
                     f"{api_seconds:.1f} s from POST to done; {api_rate / raw_rate:.0%} of raw; goal ≥30% and "
                     f"<60 s (SQLite); server CPU {api_cpu:.1f} s ({total / api_cpu:,.0f} rows per CPU-second); "
                     f"making the bodies {making_seconds:.1f} s, not counted; load {load_before} → {_load()}")
        yield Result(f"{label}: raw bulk insert of the same rows", raw_rate, "rows/s",
                     f"{raw_seconds:.1f} s; CPU of this process {raw_cpu:.1f} s (the database's own work not "
                     f"included on PostgreSQL); load {_load()}")
        yield Result(f"{label}: peak server memory during import", memory.peak_mb, "MB", "goal flat, <300 MB")

        # 2. Tag segments over 1,000,000 contacts and 5,000,000 links.
        seg_org = _org_id(db, "segments")
        seeding = time.perf_counter()
        tag_ids = _seed_segment_data(db, seg_org, seg_contacts)
        seed_seconds = time.perf_counter() - seeding
        seg = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {seg_token}"}, timeout=120)
        shapes = {
            "AND (with a, with b)": ("AND", [("with", tag_ids[0]), ("with", tag_ids[1])]),
            "OR (with a, without b)": ("OR", [("with", tag_ids[2]), ("without", tag_ids[3])]),
        }
        for name, (operator, conditions) in shapes.items():
            load_before = _load()
            cpu_before = _cpu(pid)
            with PeakMemory(server.process.pid) as memory:
                started = time.perf_counter()
                created = seg.post("/openapi/v1/segment/", json={
                    "name": name, "operator": operator,
                    "tags": [{"status": s, "tag_id": t} for s, t in conditions]}).json()
                ready = _wait(seg, f"/openapi/v1/segment/{created['id']}/", lambda v: v["status"] == 2)
                seconds = time.perf_counter() - started
            cpu = _cpu(pid) - cpu_before
            yield Result(f"{label}: build {name} segment over {seg_contacts:,} contacts / "
                         f"{seg_contacts * TAGS_PER_CONTACT:,} links", seconds, "s",
                         f"{ready['member_count']:,} members; goal <2 s; server CPU {cpu:.2f} s (SQLite runs "
                         f"in it; PostgreSQL's own work not included); peak {memory.peak_mb:.0f} MB; "
                         f"load {load_before}; seeded in {seed_seconds:.0f} s")
            with PeakMemory(server.process.pid) as memory:
                started = time.perf_counter()
                with seg.stream("GET", f"/openapi/v1/segment/{created['id']}/members/") as response:
                    lines = sum(chunk.count(b"\n") for chunk in response.iter_bytes())
                seconds = time.perf_counter() - started
            yield Result(f"{label}: stream members CSV of {name}", seconds, "s",
                         f"{lines - 1:,} rows; peak {memory.peak_mb:.0f} MB")

        # 3. A 300,000-row custom segment.
        content = io.BytesIO()
        content.write(b"\xef\xbb\xbfline_uid\r\n")
        for uid in _line_uids(db, seg_org, custom_rows):
            content.write(uid.encode() + b"\r\n")
        payload = content.getvalue()
        load_before = _load()
        cpu_before = _cpu(pid)
        with PeakMemory(server.process.pid) as memory:
            started = time.perf_counter()
            created = seg.post("/openapi/v1/custom_segment/", data={"name": "custom"},
                               files={"file": ("list.csv", payload, "text/csv")}).json()
            ready = _wait(seg, f"/openapi/v1/segment/{created['id']}/", lambda v: v["status"] == 2)
            seconds = time.perf_counter() - started
        cpu = _cpu(pid) - cpu_before
        yield Result(f"{label}: custom segment of {custom_rows:,} rows ({len(payload) / 1e6:.1f} MB), upload to ready",
                     seconds, "s", f"{ready['member_count']:,} members; goal <3 s; server CPU {cpu:.2f} s; "
                     f"peak {memory.peak_mb:.0f} MB; load {load_before}")
        client.close()
        seg.close()


def run(args: Any) -> Iterable[Result]:
    yield from _run_backend("SQLite", None, args.quick)
    admin = postgres_url()
    if admin:
        with ExitStack() as stack:
            url = stack.enter_context(fresh_postgres_database(admin))
            yield from _run_backend("PostgreSQL", url, args.quick)
