"""SMS+ manual upload (``POST pnp/setting/{id}/upload/``) of real-world and hostile files:
encodings Excel writes, malformed CSV, oversized cells, XLSX bombs, the row cap, and other
organisations' writes going on while a big list is stored."""

from __future__ import annotations

import io
import threading
import zipfile
from typing import Any

import httpx
import pytest

from helpers import behind_a_lock, seed_contacts, wait_for

NAMES = ["王小明", "陳大文", "林美麗"]


def scenario(tenant: Any) -> int:
    response = tenant.client.post(tenant.api("pnp/setting/"), json={
        "name": "到貨通知", "pnp_enabled": False, "pnp_messages": [], "pnp_approval_status": "approved",
        "fallback_enabled": True, "sms_text": "Hi {{name}}", "fallback_period": 1})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def upload(tenant: Any, setting_id: int, content: bytes, filename: str = "list.csv") -> httpx.Response:
    return tenant.client.post(tenant.api(f"pnp/setting/{setting_id}/upload/"),
                              files={"file": (filename, content, "application/octet-stream")})


def stored_uploads(database: Any, org_id: int) -> tuple[int, int]:
    """(lists, rows) the organisation has in the database, whatever their state."""
    from sqlalchemy import func, select

    from openmaac.sms_plus.models import PnpUpload, PnpUploadRow

    with database.read() as session:
        ids = list(session.scalars(select(PnpUpload.id).where(PnpUpload.organization_id == org_id)))
        rows = session.scalar(select(func.count()).select_from(PnpUploadRow).where(PnpUploadRow.upload_id.in_(ids)))
    return len(ids), int(rows or 0)


def chinese_list() -> str:
    return "phone_number,name\r\n" + "".join(f"091200{i:04d},{name}\r\n" for i, name in enumerate(NAMES))


@pytest.mark.parametrize("encoding", ["big5", "cp950", "utf-16", "utf-8-sig", "utf-8"])
def test_encodings_excel_writes_are_read_with_their_chinese_text(tenant: Any, encoding: str) -> None:
    response = upload(tenant, scenario(tenant), chinese_list().encode(encoding))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["columns"] == ["phone_number", "name"] and body["imported_rows"] == 3
    assert [row["name"] for row in body["preview"]] == NAMES[:2]


def test_a_big5_name_deep_in_an_ascii_list_decides_the_encoding(tenant: Any, database: Any) -> None:
    text = "phone,name\n" + "".join(f"0912{i:06d},customer {i}\n" for i in range(20_000)) + "0913000000,王小明\n"
    response = upload(tenant, scenario(tenant), text.encode("big5"))
    assert response.status_code == 201, response.text
    assert response.json()["imported_rows"] == 20_001
    from sqlalchemy import select

    from openmaac.sms_plus.models import PnpUploadRow

    with database.read() as session:
        values = session.scalar(select(PnpUploadRow.values).where(
            PnpUploadRow.upload_id == response.json()["id"], PnpUploadRow.phone_number == "+886913000000"))
    assert values == {"phone": "0913000000", "name": "王小明"}


def test_undecodable_and_malformed_files_are_refused_naming_the_problem(tenant: Any, database: Any) -> None:
    setting_id = scenario(tenant)
    cases = {
        # a UTF-8 BOM, then bytes that are not UTF-8 on line 3
        b"\xef\xbb\xbfphone,name\n0912000001,ok\n0912000002,\xff\xfe\n":
            "The file is not valid UTF-8 text (line 3); save it as CSV UTF-8.",
        bytes(range(256)) * 64:
            "The file's text encoding could not be recognised (it is not UTF-8); save it as CSV UTF-8.",
        b'customer_id,phone\nC1,0912000001\nC2,"0912000002\nC3,0912000003\n':
            "The file is not a valid CSV file: the quoted cell starting on line 3 is never closed.",
        b"phone,name\n0912000001,a\n0912000002,b,extra\n":
            "Line 3 has 3 cells, more than the 2 columns of the header.",
        b'phone,name\n0912000001,"a"b\n':
            "The file is not a valid CSV file: line 2: ',' expected after '\"'.",
        b"phone,name\n0912000001,a\x00b\n": "The file is not a CSV file: line 2 contains a NUL character.",
    }
    for content, message in cases.items():
        response = upload(tenant, setting_id, content)
        assert (response.status_code, response.json()) == (400, {"file": [message]}), content[:40]
    assert stored_uploads(database, tenant.id) == (0, 0)


def test_blank_cells_beyond_the_header_are_not_an_error(tenant: Any) -> None:
    response = upload(tenant, scenario(tenant), b"phone,name\r\n0912000001,a,,\r\n0912000002,b\r\n")
    assert response.status_code == 201, response.text
    assert response.json()["imported_rows"] == 2


@pytest.mark.parametrize("size", [40_000, 200_000])
def test_an_oversized_cell_is_a_400_with_its_line(tenant: Any, size: int) -> None:
    content = b"phone,name\n0912000001,a\n0912000002," + b"x" * size + b"\n"
    response = upload(tenant, scenario(tenant), content)
    assert (response.status_code, response.json()) == (400, {"file": ["Line 3: a cell is longer than 32767 "
                                                                      "characters."]})


def test_a_failure_part_way_leaves_nothing_behind(tenant: Any, database: Any) -> None:
    """Rows are stored in short transactions as they are read: a bad line after thousands of
    good ones removes what was stored."""
    good = "".join(f"0912{i:06d},n{i}\n" for i in range(5_000))
    response = upload(tenant, scenario(tenant), f"phone,name\n{good}0913000000,a,b\n".encode())
    assert (response.status_code, response.json()) == (400, {"file": [
        "Line 5002 has 3 cells, more than the 2 columns of the header."]})
    assert stored_uploads(database, tenant.id) == (0, 0)


def test_row_cap(tenant: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from openmaac.common import tabular
    from openmaac.sms_plus import uploads

    assert uploads.LIMITS.max_rows == 1_000_000
    monkeypatch.setattr(uploads, "LIMITS", tabular.Limits(max_bytes=uploads.MAX_BYTES, max_rows=3))
    setting_id = scenario(tenant)
    assert upload(tenant, setting_id, b"phone\n0912000001\n0912000002\n\n0912000003\n").status_code == 201
    over = upload(tenant, setting_id, b"phone\n0912000001\n0912000002\n0912000003\n0912000004\n")
    assert (over.status_code, over.json()) == (400, {"file": ["Ensure the file has no more than 3 rows."]})
    # XLSX rows count whether or not they hold anything (a bomb's rows are empty)
    rows = "".join(f'<row r="{n}"><c r="A{n}"><v>91200000{n}</v></c></row>' for n in range(2, 5))
    assert upload(tenant, setting_id, xlsx(sheet_rows='<row r="1"><c r="A1" t="inlineStr"><is><t>phone</t></is>'
                                                      "</c></row>" + rows), "list.xlsx").status_code == 201
    empty = "".join(f'<row r="{n}"/>' for n in range(2, 10))
    over = upload(tenant, setting_id, xlsx(sheet_rows='<row r="1"><c r="A1" t="inlineStr"><is><t>phone</t></is>'
                                                      "</c></row>" + empty), "list.xlsx")
    assert (over.status_code, over.json()) == (400, {"file": ["Ensure the file has no more than 3 rows."]})


# -- XLSX ------------------------------------------------------------------------------------------

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
TYPES = ('<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
         'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
         'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/'
         'workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
         '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-'
         'officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType='
         '"application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
RELS = ('<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
        '2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>')
WORKBOOK = (f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{MAIN}" xmlns:r="http://schemas.'
            'openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="s" sheetId="1" '
            'r:id="rId1"/></sheets></workbook>')
WORKBOOK_RELS = ('<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/'
                 'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
                 'officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship '
                 'Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
                 'sharedStrings" Target="sharedStrings.xml"/></Relationships>')


def xlsx(sheet_rows: str = "", *, shared: list[str] | None = None, dimension: str = "",
         sheet_parts: list[bytes] | None = None, shared_parts: list[bytes] | None = None) -> bytes:
    """A minimal XLSX written with zipfile: the sheet's rows (or raw parts, streamed: a bomb's
    megabytes are never held at once), the shared strings (or raw parts)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", TYPES)
        archive.writestr("_rels/.rels", RELS)
        archive.writestr("xl/workbook.xml", WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", WORKBOOK_RELS)
        with archive.open("xl/sharedStrings.xml", "w", force_zip64=True) as out:
            out.write(f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{MAIN}">'.encode())
            for part in shared_parts or [("".join(f"<si><t>{s}</t></si>" for s in shared or [])).encode()]:
                out.write(part)
            out.write(b"</sst>")
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as out:
            out.write(f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{MAIN}">{dimension}'
                      "<sheetData>".encode())
            for part in sheet_parts or [sheet_rows.encode()]:
                out.write(part)
            out.write(b"</sheetData></worksheet>")
    return buffer.getvalue()


def repeated(piece: bytes, total: int) -> list[bytes]:
    """``piece`` repeated to ``total`` bytes, as a list of the same 1 MB block (no copies)."""
    block = piece * (1024 * 1024 // len(piece))
    return [block] * (total // len(block) + 1)


HEADER_ROW = '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row>'


def test_xlsx_shared_strings_numbers_and_a_declared_huge_dimension(tenant: Any) -> None:
    # A sheet declaring 16,384 columns by 1,048,576 rows is read as the rows it holds, unpadded.
    rows = (HEADER_ROW + '<row r="2"><c r="A2" t="s"><v>2</v></c><c r="B2" t="s"><v>3</v></c></row>'
            '<row r="3"><c r="A3"><v>912000002</v></c><c r="B3" t="inlineStr"><is><t>陳大文</t></is></c>'
            '<c r="XFD3" s="1"/></row>')
    content = xlsx(rows, shared=["phone_number", "name", "0912000001", "王小明"],
                   dimension='<dimension ref="A1:XFD1048576"/>')
    response = upload(tenant, scenario(tenant), content, "list.xlsx")
    assert response.status_code == 201, response.text
    assert response.json()["preview"] == [{"phone_number": "0912000001", "name": "王小明"},
                                          {"phone_number": "912000002", "name": "陳大文"}]


def test_xlsx_bombs_are_refused(tenant: Any, database: Any) -> None:
    setting_id = scenario(tenant)
    cases = [
        # 600 MB of worksheet in a file of about 600 KB
        ("The XLSX file is too large once decompressed (xl/worksheets/sheet1.xml holds",
         xlsx(sheet_parts=[HEADER_ROW.encode(), *repeated(b'<row r="2"/>', 600 * 1024 * 1024)],
              shared=["phone", "name"])),
        # one 200 MB cell (inline)
        ("The XLSX file holds a text or tag longer than 262,144 bytes.",
         xlsx(sheet_parts=[HEADER_ROW.encode(), b'<row r="2"><c r="A2" t="inlineStr"><is><t>',
                           *repeated(b"x", 200 * 1024 * 1024), b"</t></is></c></row>"], shared=["phone", "name"])),
        # one 100 MB shared string
        ("The XLSX file holds a text or tag longer than 262,144 bytes.",
         xlsx(HEADER_ROW, shared_parts=[b"<si><t>phone</t></si><si><t>", *repeated(b"y", 100 * 1024 * 1024),
                                        b"</t></si>"])),
        # 5,000,000 shared strings
        ("The XLSX file has more than 2,000,000 shared strings.",
         xlsx(HEADER_ROW, shared_parts=repeated(b"<si><t>a</t></si>", 5_000_000 * 17))),
        # a value in column 16,384
        ("Row 2 has a value in column 16384; at most 1000 columns are allowed.",
         xlsx(HEADER_ROW + '<row r="2"><c r="XFD2"><v>1</v></c></row>', shared=["phone", "name"])),
        ("The file is not a valid XLSX file.", b"PK\x03\x04" + b"\x00" * 100),
    ]
    for message, content in cases:
        assert len(content) < 2 * 1024 * 1024  # small files
        response = upload(tenant, setting_id, content, "list.xlsx")
        assert response.status_code == 400, (message, response.text)
        assert response.json()["file"][0].startswith(message), response.json()
    assert stored_uploads(database, tenant.id) == (0, 0)


# -- other organisations' writes -------------------------------------------------------------------



def upload_big5_list_in_background(tenant: Any, setting_id: int) -> tuple[threading.Thread, list[httpx.Response]]:
    """A 100,000-row Big5 list uploaded from another thread; its answer lands in the list."""
    content = ("phone_number,name\n" + "".join(f"09{i:08d},王小明{i}\n" for i in range(100_000))).encode("big5")
    answers: list[httpx.Response] = []

    def post() -> None:
        with httpx.Client(base_url=str(tenant.client.base_url), headers=tenant.client.headers, timeout=600) as client:
            answers.append(client.post(tenant.api(f"pnp/setting/{setting_id}/upload/"),
                                       files={"file": ("list.csv", content, "text/csv")}))

    thread = threading.Thread(target=post)
    thread.start()
    return thread, answers

def test_another_organisations_write_completes_while_a_big_list_is_stored(tenant: Any, make_tenant: Any,
                                                                           database: Any) -> None:
    """On SQLite every write takes one lock: the list is stored in short transactions, so a
    tagging request of another organisation made while the list is being stored is answered
    before the list is done, and the half-stored list cannot be seen or sent meanwhile."""
    from sqlalchemy import func, select

    from openmaac.sms_plus.models import PnpUpload, PnpUploadRow

    other = make_tenant()
    uid = seed_contacts(other, 1)[0]
    tag = other.client.post(other.api("tag/"), json={"name": "vip"})
    assert tag.status_code == 201, tag.text
    setting_id = scenario(tenant)
    thread, answers = upload_big5_list_in_background(tenant, setting_id)

    def storing() -> int | None:
        with database.read() as session:
            upload_id = session.scalar(select(PnpUpload.id).where(PnpUpload.organization_id == tenant.id,
                                                                  PnpUpload.status == "storing"))
            if upload_id is None:
                return None
            rows = session.scalar(select(func.count()).select_from(PnpUploadRow)
                                  .where(PnpUploadRow.upload_id == upload_id))
            return upload_id if rows and rows >= 2_000 else None

    upload_id = wait_for(storing, timeout=120, interval=0.05)
    tagged = other.client.post(other.api("taglinemember/"), json={"tag_id": tag.json()["id"], "line_uid": uid})
    assert tagged.status_code == 201, tagged.text
    # answered while the list was still being stored
    assert thread.is_alive() and not answers
    assert tenant.client.get(tenant.api(f"pnp/upload/{upload_id}/")).status_code == 404
    assert tenant.client.post(tenant.api(f"pnp/upload/{upload_id}/send/"), json={}).status_code == 404
    thread.join(timeout=600)
    assert answers and answers[0].status_code == 201, answers and answers[0].text
    assert answers[0].json()["imported_rows"] == 100_000
    assert tenant.client.get(tenant.api(f"pnp/upload/{upload_id}/")).json()["status"] == "uploaded"


# -- the reading child process ---------------------------------------------------------------------


def test_the_file_is_read_outside_the_server_process(tenant: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing and phone normalisation run in a child process: in the server's own process
    the reader and the phone helper are never called."""
    from openmaac.common import phones, tabular
    from openmaac.sms_plus import uploads

    def not_here(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the file was read in the server process")

    monkeypatch.setattr(tabular, "open_path", not_here)
    monkeypatch.setattr(tabular.Table, "header_and_rows", not_here)
    monkeypatch.setattr(phones, "to_e164", not_here)
    monkeypatch.setattr(uploads, "to_e164", not_here, raising=False)
    response = upload(tenant, scenario(tenant), chinese_list().encode("big5") + b"12345,bad\n")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["imported_rows"], body["invalid_count"], body["invalid_rows"]) == (
        3, 1, [{"row": 5, "phone_number": "12345"}])
    assert body["preview"][0] == {"phone_number": "0912000000", "name": NAMES[0]}


def test_a_reader_killed_part_way_is_a_400_and_leaves_nothing(tenant: Any, database: Any) -> None:
    """A reading child that dies (killed, out of memory) ends the upload with a plain 400 and
    the rows stored so far removed, rather than a hang or a half list."""
    import multiprocessing
    import os
    import signal

    from sqlalchemy import func, select

    from openmaac.sms_plus.models import PnpUpload, PnpUploadRow

    setting_id = scenario(tenant)
    thread, answers = upload_big5_list_in_background(tenant, setting_id)

    def stored_some() -> bool:
        with database.read() as session:
            rows = session.scalar(select(func.count()).select_from(PnpUploadRow).join(
                PnpUpload, PnpUpload.id == PnpUploadRow.upload_id).where(PnpUpload.organization_id == tenant.id))
        return bool(rows and rows >= 1_000)

    wait_for(stored_some, timeout=120, interval=0.05)
    readers = [child for child in multiprocessing.active_children() if child.name == "openmaac-upload-reader"]
    assert readers and all(child.pid != os.getpid() for child in readers)
    for child in readers:
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert (answers[0].status_code, answers[0].json()) == (400, {"file": [
        "The file could not be read to the end; upload it again."]})
    assert stored_uploads(database, tenant.id) == (0, 0)


def test_a_send_waiting_for_the_list_lock_sees_the_send_that_started_first(tenant: Any, database: Any) -> None:
    """Two sends of one list at once (a double click, a retried request): the one that waited
    for the other's transaction sees the list being sent and refuses, so nobody gets the list's
    messages twice (PostgreSQL: a list read unlocked was sent by both)."""

    from sqlalchemy import func, select, update

    from helpers import org_of
    from openmaac.sms_plus import uploads
    from openmaac.sms_plus.models import PnpMessage, PnpUpload
    from openmaac.web.errors import APIError

    setting_id = scenario(tenant)
    assert tenant.client.post(tenant.api("pnp/points/"), json={"amount": 10}).status_code == 200
    uploaded = upload(tenant, setting_id, b"phone,name\n0912000081,Amy\n0912000082,Bob\n")
    assert uploaded.status_code == 201, uploaded.text
    upload_id = uploaded.json()["id"]
    outcome: list[Any] = []

    def send() -> None:
        try:
            outcome.append(uploads.send(org_of(tenant), upload_id, {"mapping": {"sms": {"name": "name"}}}))
        except APIError as error:
            outcome.append(error)

    def hold(session: Any) -> None:  # the send that started first: the list is its, until commit
        session.execute(update(PnpUpload).where(PnpUpload.id == upload_id).values(status="sending"))

    behind_a_lock(database, hold, send)
    [refused] = outcome
    assert isinstance(refused, APIError) and refused.status_code == 400, refused
    with database.read() as session:
        assert session.scalar(select(func.count()).select_from(PnpMessage)
                              .where(PnpMessage.upload_id == upload_id)) == 0
