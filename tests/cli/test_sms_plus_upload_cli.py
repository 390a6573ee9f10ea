"""``openmaac sms-plus upload|upload-show|upload-send|upload-delete`` (manual upload, the SMS+ help-center tutorial)
as real processes on the test server's database (SQLite, or PostgreSQL with
``OPENMAAC_TEST_DATABASE_URL``); the server's embedded worker sends what ``upload-send``
queues, over real HTTP, to the Twilio and LINE simulators. Files are real CSV and XLSX files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from helpers import wait_for

OPENMAAC = str(Path(sys.executable).with_name("openmaac"))
SMS_TEXT = "Order {{order_number}} arrives {{arrival_date}}"
NO_POINTS = "your SMS points are insufficient, please recharge before sending"


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``openmaac sms-plus ...`` on the test server's database (the environment conftest set)."""
    result = subprocess.run([OPENMAAC, "sms-plus", *args], env=dict(os.environ), capture_output=True, text=True,
                            timeout=120)
    if check:
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """The error a failed command printed (exit 1, nothing on stdout)."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    return result.stderr.strip()


def no_upload(upload_id: int, tenant: Any) -> str:
    return f"no upload {upload_id} in organisation '{tenant.name}' (see `openmaac sms-plus upload`)"


def scenario(tenant: Any, **fields: Any) -> dict[str, Any]:
    body = {"name": "到貨通知", "pnp_enabled": False, "pnp_messages": [], "pnp_approval_status": "approved",
            "fallback_enabled": True, "sms_text": SMS_TEXT, "fallback_period": 1, **fields}
    response = tenant.client.post(tenant.api("pnp/setting/"), json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def records(tenant: Any, setting_id: int) -> list[dict[str, Any]]:
    response = tenant.client.get(tenant.api("pnp/message/") + f"?pnp_setting_id={setting_id}"
                                 "&updated_at_min=2000-01-01T00:00:00&updated_at_max=2999-01-01T00:00:00")
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def upload_count(database: Any, org_id: int) -> int:
    from sqlalchemy import func, select

    from openmaac.sms_plus.models import PnpUpload

    with database.read() as session:
        return int(session.scalar(select(func.count()).select_from(PnpUpload)
                                  .where(PnpUpload.organization_id == org_id)) or 0)


def upload_id_of(stdout: str) -> int:
    match = re.search(r"^upload id: (\d+)$", stdout, re.M)
    assert match, stdout
    return int(match.group(1))


def test_csv_upload_preview_bad_rows_send_and_delete(tenant: Any, base_url: str, tmp_path: Path) -> None:
    setting = scenario(tenant)
    source = tmp_path / "list.csv"
    source.write_text("手機,訂單,日期\n0918000071,A1,2020/7/30\n+886918000072,A2,2020/7/31\nnot-a-number,A3,x\n"
                   "0918000073,A4,2020/8/1\n,A5,y\n", encoding="utf-8")
    shown = cli("upload", str(source), "--org", tenant.name, "--setting", str(setting["id"])).stdout
    upload_id = upload_id_of(shown)
    assert "imported rows: 3\n" in shown and "bad numbers: 2 (not sent)\n" in shown
    assert "phone column: 手機\n" in shown and "columns: 手機, 訂單, 日期\n" in shown
    # the bad numbers (row, value) and the preview of the first two good rows, as tables
    assert re.search(r"│ 4 +│ not-a-number", shown) and re.search(r"│ 6 +│ +│", shown), shown
    assert re.search(r"│ 0918000071 +│ A1 +│ 2020/7/30 +│", shown), shown
    assert re.search(r"│ \+886918000072 +│ A2 +│ 2020/7/31 +│", shown), shown
    assert "A4" not in shown  # the preview is two rows
    # The CLI's upload is the API's.
    api = tenant.client.get(tenant.api(f"pnp/upload/{upload_id}/")).json()
    assert (api["imported_rows"], api["invalid_count"], api["invalid_rows"]) == (
        3, 2, [{"row": 4, "phone_number": "not-a-number"}, {"row": 6, "phone_number": ""}])
    assert api["preview"] == [{"手機": "0918000071", "訂單": "A1", "日期": "2020/7/30"},
                              {"手機": "+886918000072", "訂單": "A2", "日期": "2020/7/31"}]
    assert json.loads(cli("upload-show", str(upload_id), "--org", tenant.name, "--json").stdout) == api

    # Send: every parameter mapped, points checked first (the API's texts).
    unmapped = failed(cli("upload-send", str(upload_id), "--org", tenant.name, "--sms", "order_number=訂單",
                          check=False))
    assert unmapped == "mapping.sms.arrival_date: This field is required."
    wrong = failed(cli("upload-send", str(upload_id), "--org", tenant.name, "--sms", "order_number=訂單",
                       "--sms", "arrival_date=nope", check=False))
    assert wrong == 'mapping.sms.arrival_date: "nope" is not a column of the list.'
    mapping = ("--sms", "order_number=訂單", "--sms", "arrival_date=日期")
    assert failed(cli("upload-send", str(upload_id), "--org", tenant.name, *mapping, check=False)) == NO_POINTS
    assert records(tenant, setting["id"]) == []
    assert tenant.client.post(tenant.api("pnp/points/"), json={"amount": 3}).status_code == 200
    sent = cli("upload-send", str(upload_id), "--org", tenant.name, *mapping)
    assert json.loads(sent.stdout) == {"id": upload_id, "sent": 3, "result": "pending"}
    assert "queued 3 messages" in sent.stderr

    # The server's worker delivers the three good rows through Twilio; the bad ones never go.
    wait_for(lambda: sorted(r["status"] for r in records(tenant, setting["id"])) == ["sms_delivered"] * 3,
             timeout=30, interval=0.2)
    assert sorted(r["phone_number"] for r in records(tenant, setting["id"])) == [
        "+886918000071", "+886918000072", "+886918000073"]
    texts = httpx.get(f"{base_url}/_simulators/twilio/_admin/messages", params={"to": "+886918000072"}).json()
    assert [m["text"] for m in texts["results"]] == ["Order A2 arrives 2020/7/31"]
    assert tenant.client.get(tenant.api("pnp/points/")).json()["balance"] == 0
    assert failed(cli("upload-send", str(upload_id), "--org", tenant.name, *mapping, check=False)) == (
        "This list was already sent.")
    after = cli("upload-show", str(upload_id), "--org", tenant.name).stdout
    assert "status: sent\n" in after and "sent: 3\n" in after

    # Delete: the list goes (the API answers 404), the messages sent from it stay.
    deleted = cli("upload-delete", str(upload_id), "--org", tenant.name)
    assert f"deleted upload {upload_id}" in deleted.stderr
    assert tenant.client.get(tenant.api(f"pnp/upload/{upload_id}/")).status_code == 404
    assert failed(cli("upload-show", str(upload_id), "--org", tenant.name, check=False)) == no_upload(upload_id, tenant)
    assert failed(cli("upload-delete", str(upload_id), "--org", tenant.name, check=False)) == no_upload(upload_id, tenant)
    assert len(records(tenant, setting["id"])) == 3


def test_xlsx_upload_with_a_named_phone_column_reaches_line_by_pnp(tenant: Any, base_url: str, tmp_path: Path
                                                                   ) -> None:
    from openpyxl import Workbook

    line_sim = f"{base_url}/_simulators/line"
    phone = "+886918000081"
    uid = httpx.post(line_sim + "/_admin/users", json={"phone": phone}).json()["user_id"]
    setting = scenario(tenant, pnp_enabled=True, pnp_messages=[{"type": "text", "text": "Order {{order_number}} "
                                                                "arrived"}], fallback_enabled=False, sms_text="")
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append(["收件人", "mobile", "order"])
    sheet.append([phone, "ignored", 1234567])  # a whole number cell reads as "1234567"
    sheet.append(["12345", "x", 2])
    sheet.append([None, None, None])  # an empty row is skipped, not counted
    path = tmp_path / "list.xlsx"
    workbook.save(path)

    shown = cli("upload", str(path), "--org", tenant.name, "--setting", str(setting["id"]),
                "--phone-column", "收件人", "--json").stdout
    body = json.loads(shown)
    assert (body["imported_rows"], body["invalid_count"], body["invalid_rows"]) == (
        1, 1, [{"row": 3, "phone_number": "12345"}])
    assert body["columns"] == ["收件人", "mobile", "order"] and body["phone_column"] == "收件人"
    assert body["preview"] == [{"收件人": phone, "mobile": "ignored", "order": "1234567"}]
    assert body["filename"] == "list.xlsx"
    # The same file through the API (multipart) reads the same: one service behind both.
    via_api = tenant.client.post(tenant.api(f"pnp/setting/{setting['id']}/upload/"), data={"phone_column": "收件人"},
                                 files={"file": ("list.xlsx", path.read_bytes(), "application/octet-stream")})
    assert via_api.status_code == 201, via_api.text
    assert {k: v for k, v in via_api.json().items() if k != "id"} == {k: v for k, v in body.items() if k != "id"}

    # A PNP scenario maps its PNP parameters (--pnp); no SMS, so no points needed.
    assert failed(cli("upload-send", str(body["id"]), "--org", tenant.name, check=False)) == (
        "mapping.pnp.order_number: This field is required.")
    sent = cli("upload-send", str(body["id"]), "--org", tenant.name, "--pnp", "order_number=order")
    assert json.loads(sent.stdout)["sent"] == 1
    wait_for(lambda: [r["status"] for r in records(tenant, setting["id"])] == ["pnp_delivered"],
             timeout=30, interval=0.2)
    inbox = httpx.get(line_sim + f"/_admin/users/{uid}/messages").json()
    assert "Order 1234567 arrived" in json.dumps(inbox, ensure_ascii=False)


def test_rejected_files_store_nothing(tenant: Any, database: Any, tmp_path: Path) -> None:
    setting = str(scenario(tenant)["id"])
    no_phone = tmp_path / "no-phone.csv"
    no_phone.write_text("name,order\nx,1\n", encoding="utf-8")
    assert failed(cli("upload", str(no_phone), "--org", tenant.name, "--setting", setting, check=False)) == (
        "file: The file has no phone column (phone_number, phone or mobile); name it with phone_column.")
    assert failed(cli("upload", str(no_phone), "--org", tenant.name, "--setting", setting,
                      "--phone-column", "tel", check=False)) == 'phone_column: "tel" is not a column of the file.'
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert failed(cli("upload", str(empty), "--org", tenant.name, "--setting", setting,
                      check=False)) == "file: The file has no header row."
    big = tmp_path / "big.csv"
    with big.open("wb") as handle:
        handle.write(b"phone\n")
        handle.write(b"0" * (25 * 1024 * 1024))
    assert failed(cli("upload", str(big), "--org", tenant.name, "--setting", setting,
                      check=False)) == "file: The file is larger than 25 MB."
    assert upload_count(database, tenant.id) == 0
    # An unknown scenario, an unknown organisation, a missing file.
    ok = tmp_path / "ok.csv"
    ok.write_text("phone\n0918000091\n", encoding="utf-8")
    assert failed(cli("upload", str(ok), "--org", tenant.name, "--setting", "999999999", check=False)) == (
        f"no scenario (pnp_setting_id) 999999999 in organisation '{tenant.name}'")
    assert "no organisation named 'no-such-org-xyz'" in failed(
        cli("upload", str(ok), "--org", "no-such-org-xyz", "--setting", setting, check=False))
    assert cli("upload", str(tmp_path / "missing.csv"), "--org", tenant.name, "--setting", setting,
               check=False).returncode == 2
    assert upload_count(database, tenant.id) == 0
    # A malformed mapping is a usage error.
    uploaded = json.loads(cli("upload", str(ok), "--org", tenant.name, "--setting", setting, "--json").stdout)
    bad = cli("upload-send", str(uploaded["id"]), "--org", tenant.name, "--sms", "order_number", check=False)
    assert bad.returncode == 2 and "PARAMETER=COLUMN" in bad.stderr
    assert tenant.client.get(tenant.api(f"pnp/upload/{uploaded['id']}/")).json()["status"] == "uploaded"


def test_another_organisations_upload_is_not_found(tenant: Any, make_tenant: Any, tmp_path: Path) -> None:
    other = make_tenant()
    setting = scenario(tenant)
    source = tmp_path / "list.csv"
    source.write_text("phone_number,order_number,arrival_date\n0918000101,B1,today\n", encoding="utf-8")
    upload_id = upload_id_of(cli("upload", str(source), "--org", tenant.name, "--setting", str(setting["id"])).stdout)
    # The other organisation cannot upload to this scenario, see, send or delete this list.
    assert failed(cli("upload", str(source), "--org", other.name, "--setting", str(setting["id"]),
                      check=False)) == f"no scenario (pnp_setting_id) {setting['id']} in organisation '{other.name}'"
    assert failed(cli("upload-show", str(upload_id), "--org", other.name, check=False)) == no_upload(upload_id, other)
    assert failed(cli("upload-send", str(upload_id), "--org", other.name, "--sms", "order_number=order_number",
                      "--sms", "arrival_date=arrival_date", check=False)) == no_upload(upload_id, other)
    assert failed(cli("upload-delete", str(upload_id), "--org", other.name, check=False)) == no_upload(upload_id, other)
    assert other.client.get(other.api(f"pnp/upload/{upload_id}/")).status_code == 404
    mine = tenant.client.get(tenant.api(f"pnp/upload/{upload_id}/")).json()
    assert (mine["status"], mine["imported_rows"]) == ("uploaded", 1)


def test_a_big5_list_is_read_and_a_malformed_one_refused_on_one_line(tenant: Any, database: Any,
                                                                     tmp_path: Path) -> None:
    setting = str(scenario(tenant)["id"])
    big5 = tmp_path / "excel-taiwan.csv"
    big5.write_bytes("手機,姓名\r\n0918000201,王小明\r\n".encode("big5"))
    uploaded = json.loads(cli("upload", str(big5), "--org", tenant.name, "--setting", setting, "--json").stdout)
    assert uploaded["preview"] == [{"手機": "0918000201", "姓名": "王小明"}]
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b'phone,name\n0918000202,"a\n0918000203,b\n')
    message = failed(cli("upload", str(broken), "--org", tenant.name, "--setting", setting, check=False))
    assert message == "file: The file is not a valid CSV file: the quoted cell starting on line 2 is never closed."
    assert "Traceback" not in message and upload_count(database, tenant.id) == 1
