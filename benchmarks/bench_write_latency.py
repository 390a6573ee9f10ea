"""Write latency: one organisation's POST taglinemember/ while another uploads big SMS+ lists.

On SQLite every write takes one process-wide lock, so a long write transaction of one
organisation stalls every other organisation's writes. This measures that: ``openmaac serve``
in a child process; organisation W has 2,000 contacts and a tag, and CONCURRENCY clients post
``{"tag_id", "line_uid"}`` to ``/openapi/v1/taglinemember/`` back to back (a write each);
organisation U uploads, through ``POST pnp/setting/{id}/upload/`` (the SMS+ manual upload),

- a 25 MB CSV (phone_number, order_number, name; about 560,000 rows), then
- a 1,000,000-row XLSX written as Excel writes one (phones and names in the shared strings).

W's latencies while each upload runs are compared with W's latencies with no upload, measured
before and after in the same run (goal: p99 during an upload at most 3x the p99 without).
SQLite, then PostgreSQL when benchmarks.common.postgres_url() is set. ``--quick``: a 2 MB CSV
and a 50,000-row XLSX.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import threading
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    LoadStats,
    Result,
    ServerProcess,
    backends,
    database_url,
    process_cpu_seconds,
    run_load,
    scratch,
    scratch_dir,
)

CONCURRENCY = 4
CONTACTS = 2_000
LIFTED = "pnp_push=1000000/1,pnp_multicast=1000000/1"


@dataclass
class Sizes:
    csv_bytes: int
    xlsx_rows: int
    baseline_seconds: float


def sizes(quick: bool) -> Sizes:
    if quick:
        return Sizes(csv_bytes=2 * 1024 * 1024, xlsx_rows=50_000, baseline_seconds=5.0)
    return Sizes(csv_bytes=25 * 1024 * 1024 - 4096, xlsx_rows=1_000_000, baseline_seconds=20.0)


def make_org(server: ServerProcess, name: str, contacts: int) -> tuple[str, list[str]]:
    """An organisation, its token and ``contacts`` contacts with LINE user ids (bulk inserted)."""
    from openmaac.auth.service import create_organization, create_token
    from openmaac.contacts.models import Contact
    from openmaac.db.engine import get_database

    database = get_database(database_url(server))
    uids = ["U" + secrets.token_hex(16) for _ in range(contacts)]
    now = datetime.now(UTC)
    with database.write() as session:
        org = create_organization(session, name)
        token = create_token(session, org.id, label="bench")
        if uids:
            session.execute(Contact.__table__.insert(), [
                {"organization_id": org.id, "line_uid": uid, "status": "follow", "created_at": now,
                 "updated_at": now, "followed_at": now} for uid in uids])
    database.dispose()
    return token, uids


# -- the files -------------------------------------------------------------------------------------


def write_csv(path: Path, size: int) -> int:
    """A UTF-8 CSV of about ``size`` bytes; returns its data rows."""
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("phone_number,order_number,name\r\n")
        written = 0
        while True:
            line = f"09{rows % 100_000_000:08d},AJ{rows:08d},王小明{rows % 1000}\r\n"
            encoded = len(line.encode())
            if written + encoded > size - 64:
                break
            out.write(line)
            written += encoded
            rows += 1
    return rows


def write_xlsx(path: Path, rows: int) -> None:
    """An XLSX as Excel writes it: text in the shared strings (each phone its own entry, names
    from a pool), order numbers as numbers, a <dimension>, written straight with zipfile."""
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    names = [f"王小明{i}" for i in range(1000)]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.'
            'spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.sharedStrings+xml"/></Types>'))
        archive.writestr("_rels/.rels", (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/'
            'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
            'officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>'))
        archive.writestr("xl/workbook.xml", (
            f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{main}" xmlns:r="http://schemas.'
            'openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="list" sheetId="1" '
            'r:id="rId1"/></sheets></workbook>'))
        archive.writestr("xl/_rels/workbook.xml.rels", (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/'
            'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
            'officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
            '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            'sharedStrings" Target="sharedStrings.xml"/></Relationships>'))
        # shared strings: 0-2 the header, 3.. the names, then one per phone
        with archive.open("xl/sharedStrings.xml", "w", force_zip64=True) as out:
            out.write(f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{main}">'.encode())
            out.write("".join(f"<si><t>{text}</t></si>" for text in ["phone_number", "order_number", "name", *names])
                      .encode())
            for start in range(0, rows, 50_000):
                out.write("".join(f"<si><t>09{i % 100_000_000:08d}</t></si>"
                                  for i in range(start, min(rows, start + 50_000))).encode())
            out.write(b"</sst>")
        phone_base = 3 + len(names)
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as out:
            out.write(f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{main}">'
                      f'<dimension ref="A1:C{rows + 1}"/><sheetData>'
                      '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c>'
                      '<c r="C1" t="s"><v>2</v></c></row>'.encode())
            for start in range(0, rows, 50_000):
                out.write("".join(
                    f'<row r="{i + 2}"><c r="A{i + 2}" t="s"><v>{phone_base + i}</v></c>'
                    f'<c r="B{i + 2}"><v>{i}</v></c><c r="C{i + 2}" t="s"><v>{3 + i % len(names)}</v></c></row>'
                    for i in range(start, min(rows, start + 50_000))).encode())
            out.write(b"</sheetData></worksheet>")


# -- measuring -------------------------------------------------------------------------------------


class Uploader(threading.Thread):
    """One upload through the API in a thread; its status, answer and duration."""

    def __init__(self, base_url: str, token: str, setting_id: int, path: Path, media_type: str) -> None:
        super().__init__(daemon=True)
        self.args = (base_url, token, setting_id, path, media_type)
        self.status = 0
        self.body: dict[str, Any] = {}
        self.seconds = 0.0

    def run(self) -> None:
        base_url, token, setting_id, path, media_type = self.args
        began = time.perf_counter()
        with path.open("rb") as handle:
            response = httpx.post(f"{base_url}/openapi/v1/pnp/setting/{setting_id}/upload/",
                                  headers={"Authorization": f"Bearer {token}"},
                                  files={"file": (path.name, handle, media_type)}, timeout=3600)
        self.seconds = time.perf_counter() - began
        self.status = response.status_code
        self.body = response.json() if response.headers.get("content-type", "").startswith("application/json") \
            else {"text": response.text[:200]}


async def tagging_load(base_url: str, token: str, tag_id: int, uids: list[str], *,
                       duration: float | None = None, while_alive: threading.Thread | None = None) -> LoadStats:
    """CONCURRENCY clients tagging random contacts: for ``duration`` seconds, or in one-second
    slices while ``while_alive`` runs."""
    rng = random.Random(7)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120,
                                 limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
        async def one(_worker: int) -> tuple[int, int]:
            response = await client.post("/openapi/v1/taglinemember/",
                                         json={"tag_id": tag_id, "line_uid": rng.choice(uids)})
            return response.status_code, 1

        if duration is not None:
            return await run_load(one, concurrency=CONCURRENCY, duration=duration)
        assert while_alive is not None
        total = LoadStats()
        while while_alive.is_alive():
            total.add(await run_load(one, concurrency=CONCURRENCY, duration=1.0))
        return total


def _statuses(stats: LoadStats) -> str:
    return ", ".join(f"{status}: {count}" for status, count in sorted(stats.statuses.items()))


def measure(label: str, url: str | None, size: Sizes, files: dict[str, Path]) -> Iterable[Result]:
    server = ServerProcess(database_url=url, extra_env={"OPENMAAC_SIMULATORS": "0",
                                                        "OPENMAAC_API_RATE_LIMITS": LIFTED})
    server.cli("migrate")
    with server:
        assert server.process is not None
        writer_token, uids = make_org(server, "bench-writer", CONTACTS)
        uploader_token, _ = make_org(server, "bench-uploader", 0)
        tag = httpx.post(f"{server.base_url}/openapi/v1/tag/", json={"name": "bench"}, timeout=30,
                         headers={"Authorization": f"Bearer {writer_token}"})
        tag.raise_for_status()
        tag_id = int(tag.json()["id"])
        setting = httpx.post(f"{server.base_url}/openapi/v1/pnp/setting/", timeout=30,
                             headers={"Authorization": f"Bearer {uploader_token}"},
                             json={"name": "到貨通知", "pnp_enabled": False, "pnp_messages": [],
                                   "pnp_approval_status": "approved", "fallback_enabled": True,
                                   "sms_text": "Order {{order_number}} for {{name}}", "fallback_period": 1})
        setting.raise_for_status()
        setting_id = int(setting.json()["id"])
        pid = server.process.pid

        baseline = asyncio.run(tagging_load(server.base_url, writer_token, tag_id, uids,
                                            duration=size.baseline_seconds / 2))
        during: dict[str, tuple[LoadStats, Uploader, float]] = {}
        for kind, path in files.items():
            uploader = Uploader(server.base_url, uploader_token, setting_id, path,
                                "text/csv" if kind == "CSV" else
                                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
            cpu = process_cpu_seconds(pid)
            uploader.start()
            stats = asyncio.run(tagging_load(server.base_url, writer_token, tag_id, uids, while_alive=uploader))
            uploader.join()
            during[kind] = (stats, uploader, process_cpu_seconds(pid) - cpu)
        baseline.add(asyncio.run(tagging_load(server.base_url, writer_token, tag_id, uids,
                                              duration=size.baseline_seconds / 2)))

    base_p99 = baseline.p(0.99)
    yield Result(f"{label}: taglinemember p99, no upload", base_p99, "ms",
                 f"p50 {baseline.p(0.5):.1f} ms; {baseline.requests:,} requests by {CONCURRENCY} clients "
                 f"({baseline.rps:,.0f}/s), half before and half after the uploads; {_statuses(baseline)}")
    for kind, (stats, uploader, cpu) in during.items():
        rows = uploader.body.get("imported_rows", "?")
        yield Result(f"{label}: taglinemember p99 during the {kind} upload", stats.p(0.99), "ms",
                     f"{stats.p(0.99) / base_p99 if base_p99 else 0:.2f}x the p99 without (goal ≤ 3x); "
                     f"p50 {stats.p(0.5):.1f} ms, max {stats.p(1.0):.0f} ms; {stats.requests:,} requests "
                     f"({stats.rps:,.0f}/s); {_statuses(stats)}")
        yield Result(f"{label}: {kind} upload ({files[kind].stat().st_size / 1e6:.1f} MB)", uploader.seconds, "s",
                     f"answer {uploader.status}, {rows:,} rows stored; server CPU {cpu:.1f} s"
                     if isinstance(rows, int) else f"answer {uploader.status}: {uploader.body}")


def run(args: Any) -> Iterable[Result]:
    size = sizes(bool(getattr(args, "quick", False)))
    os.environ.setdefault("OPENMAAC_DATA_DIR", str(scratch_dir("write-latency")))
    load = os.getloadavg()
    yield Result("machine: CPU cores", float(os.cpu_count() or 0), "cores",
                 f"shared with the load generator and other work; load average {load[0]:.1f} at start")
    with scratch("files") as folder:
        csv_path, xlsx_path = Path(folder) / "list.csv", Path(folder) / "list.xlsx"
        began = time.perf_counter()
        csv_rows = write_csv(csv_path, size.csv_bytes)
        write_xlsx(xlsx_path, size.xlsx_rows)
        yield Result("files: CSV rows / XLSX rows", float(csv_rows), "rows",
                     f"CSV {csv_path.stat().st_size / 1e6:.1f} MB; XLSX {size.xlsx_rows:,} rows in "
                     f"{xlsx_path.stat().st_size / 1e6:.1f} MB; written in {time.perf_counter() - began:.1f} s")
        for label, url in backends():
            yield from measure(label, url, size, {"CSV": csv_path, "XLSX": xlsx_path})
    load = os.getloadavg()
    yield Result("machine: load average at end", load[0], "", "1-minute load average")
