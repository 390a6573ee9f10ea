"""Custom segments: multipart CSV uploads of LINE user ids (POST and PATCH custom_segment/)."""

from __future__ import annotations

import csv
import io
import secrets

from helpers import new_line_uid, seed_contacts, wait_for

URL = "/openapi/v1/custom_segment/"


def _upload(tenant, content: bytes, name="crm list", description="from crm", method="POST", segment_id=None):
    url = URL if segment_id is None else f"{URL}{segment_id}/"
    data = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
    files = {"file": ("members.csv", content, "text/csv")} if content is not None else None
    return tenant.client.request(method, url, data=data, files=files)


def _ready(tenant, segment_id):
    def check():
        view = tenant.client.get(f"/openapi/v1/segment/{segment_id}/").json()
        return view if view["status"] == 2 else None

    return wait_for(check, timeout=60)


def _members(tenant, segment_id):
    text = tenant.client.get(f"/openapi/v1/segment/{segment_id}/members/").content.decode("utf-8-sig")
    return sorted(row[0] for row in list(csv.reader(io.StringIO(text)))[1:])


def test_bom_crlf_header_blank_lines_malformed_and_unknown_ids(tenant):
    uids = seed_contacts(tenant, 3)
    stranger = new_line_uid()
    content = ("\ufeffline_uid\r\n" + f"{uids[0]}\r\n\r\n" + f'"{uids[1]}"\r\n' + f"  {uids[2]}  \r\n"
               + f"{uids[0]}\r\n" + "not-an-id\r\n" + f"{stranger}\r\n\r\n").encode()
    response = _upload(tenant, content)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["segment_type"] == 2 and created["status"] == 1 and created["member_count"] == -1
    assert created["last_updated_time"] is None and created["name"] == "crm list"
    ready = _ready(tenant, created["id"])
    assert ready["member_count"] == 3
    assert ready["file_report"] == {"rows": 6, "malformed": 1, "duplicates": 1, "distinct": 4, "matched": 3,
                                    "unknown": 1}
    assert _members(tenant, created["id"]) == sorted(uids)


def test_no_header_and_lf_and_extra_columns(tenant):
    uids = seed_contacts(tenant, 2)
    content = f"{uids[0]},alice\n{uids[1]},bob\n".encode()
    segment = _upload(tenant, content).json()
    assert _ready(tenant, segment["id"])["member_count"] == 2
    # A header naming the column picks it even when it is not the first.
    content = f"name,line_uid\nalice,{uids[0]}\n".encode()
    segment = _upload(tenant, content).json()
    assert _members(tenant, _ready(tenant, segment["id"])["id"]) == [uids[0]]


def test_three_hundred_thousand_rows(tenant):
    uids = seed_contacts(tenant, 2_000)
    others = ["U" + secrets.token_hex(16) for _ in range(300_000 - len(uids))]
    content = ("line_uid\r\n" + "\r\n".join(uids + others) + "\r\n").encode()
    response = _upload(tenant, content)
    assert response.status_code == 201, response.text
    ready = _ready(tenant, response.json()["id"])
    assert ready["member_count"] == 2_000
    assert ready["file_report"]["rows"] == 300_000 and ready["file_report"]["unknown"] == 298_000
    assert _members(tenant, ready["id"]) == sorted(uids)


def test_limits(tenant):
    rows = ("\n".join("U" + secrets.token_hex(16) for _ in range(300_001)) + "\n").encode()
    too_many = _upload(tenant, rows)
    assert too_many.status_code == 400
    assert too_many.json() == {"file": ["Ensure the file has no more than 300000 rows."]}
    huge = b"x" * (25 * 1024 * 1024 + 10)
    too_big = _upload(tenant, huge)
    assert too_big.status_code == 413 and too_big.json() == {"detail": "File is too large: at most 25 MB."}
    assert _upload(tenant, b"\r\n\r\n").json() == {"file": ["The submitted file is empty."]}
    assert _upload(tenant, None).json() == {"file": ["No file was submitted."]}
    assert _upload(tenant, b"Uabc\n", name=None).json() == {"name": ["This field is required."]}
    assert tenant.client.get("/openapi/v1/segment/").json()["results"] == []


def test_patch_name_description_and_file(tenant, make_tenant):
    uids = seed_contacts(tenant, 3)
    segment = _upload(tenant, f"{uids[0]}\n".encode()).json()
    _ready(tenant, segment["id"])
    renamed = _upload(tenant, None, name="renamed", description=None, method="PATCH", segment_id=segment["id"])
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "renamed" and renamed.json()["status"] == 2
    assert renamed.json()["description"] == "from crm"
    as_json = tenant.client.patch(f"{URL}{segment['id']}/", json={"description": "json works too"})
    assert as_json.status_code == 200 and as_json.json()["description"] == "json works too"
    replaced = _upload(tenant, f"{uids[1]}\n{uids[2]}\n".encode(), name=None, description=None, method="PATCH",
                       segment_id=segment["id"])
    assert replaced.status_code == 200
    assert replaced.json()["status"] == 1 and replaced.json()["member_count"] == -1
    assert _ready(tenant, segment["id"])["member_count"] == 2
    assert _members(tenant, segment["id"]) == sorted(uids[1:])
    nothing = tenant.client.patch(f"{URL}{segment['id']}/", json={})
    assert nothing.status_code == 400
    assert nothing.json() == {"non_field_errors": ["At least one of name, description or file is required."]}
    other = make_tenant()
    assert other.client.patch(f"{URL}{segment['id']}/", json={"name": "x"}).status_code == 404
    # A tag segment is not a custom segment.
    tag = tenant.client.post("/openapi/v1/tag/", json={"name": "t"}).json()["id"]
    tag_segment = tenant.client.post("/openapi/v1/segment/", json={
        "name": "tags", "tags": [{"status": "with", "tag_id": tag}]}).json()
    assert tenant.client.patch(f"{URL}{tag_segment['id']}/", json={"name": "x"}).status_code == 404
    assert tenant.client.delete(f"/openapi/v1/segment/{segment['id']}/").status_code == 204


def test_utf16_and_big5_files_and_malformed_csv(tenant):
    uids = seed_contacts(tenant, 3)
    # Excel's "Unicode text" (UTF-16 with BOM) and a Big5 file with a Chinese note column
    utf16 = ("line_uid,備註\r\n" + "".join(f"{uid},客戶\r\n" for uid in uids[:2])).encode("utf-16")
    created = _upload(tenant, utf16)
    assert created.status_code == 201, created.text
    assert _ready(tenant, created.json()["id"])["file_report"] == {
        "rows": 2, "malformed": 0, "duplicates": 0, "distinct": 2, "matched": 2, "unknown": 0}
    big5 = ("line_uid,備註\r\n" + f"{uids[2]},王小明\r\n").encode("big5")
    created = _upload(tenant, big5, name="big5")
    assert created.status_code == 201, created.text
    assert _members(tenant, _ready(tenant, created.json()["id"])["id"]) == [uids[2]]
    # an unterminated quote swallowed the rest of the file into one id (counted malformed)
    unterminated = f'line_uid\n{uids[0]}\n"{uids[1]}\n{uids[2]}\n'.encode()
    refused = _upload(tenant, unterminated, name="bad")
    assert (refused.status_code, refused.json()) == (400, {"file": [
        "The file is not a valid CSV file: the quoted cell starting on line 3 is never closed."]})
    assert (_upload(tenant, b"PK\x03\x04" + b"\x00" * 64, name="zip").json()
            == {"file": ["The file is not a CSV file (it is a zip archive, e.g. XLSX); save it as CSV UTF-8."]})
    assert [s["name"] for s in tenant.client.get("/openapi/v1/segment/").json()["results"]] == ["big5", "crm list"]
