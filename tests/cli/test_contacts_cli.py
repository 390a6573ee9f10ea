"""``openmaac contacts import|export`` as real processes on their own data directory."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

OPENMAAC = str(Path(sys.executable).with_name("openmaac"))


def _run(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAAC_")}
    env["OPENMAAC_DATA_DIR"] = str(data_dir)
    return subprocess.run([OPENMAAC, *args], env=env, capture_output=True, text=True, timeout=120, check=check)


def _export(data_dir: Path) -> list[dict[str, str]]:
    out = _run("contacts", "export", "--org", "acme", data_dir=data_dir).stdout
    assert out.startswith("\ufeffline_uid,")  # UTF-8 with BOM, for Excel
    return list(csv.DictReader(io.StringIO(out.removeprefix("\ufeff"))))


def test_import_csv_then_export(tmp_path):
    _run("token", "create", "--org", "acme", data_dir=tmp_path)
    source = tmp_path / "crm.csv"
    lines = ["\ufeffcustomer_id,email,mobile,gender,birthday,tags"]
    lines += [f"C{i},c{i}@example.com,09{i:08d},female,1990-01-02,\"vip,crm\"" for i in range(12_345)]
    source.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    result = _run("contacts", "import", str(source), "--key", "customer_id", "--tag", "2024import",
                  "--org", "acme", data_dir=tmp_path)
    assert "12345 rows: 12345 created, 0 updated" in result.stderr
    rows = _export(tmp_path)
    assert len(rows) == 12_345
    first = rows[0]
    assert first["customer_id"] == "C0" and first["mobile"] == "+886900000000"
    assert first["birthday"] == "1990-01-02" and first["gender"] == "female"
    assert sorted(first["tags"].split(",")) == ["2024import", "crm", "vip"]
    # Again: every row now matches.
    again = _run("contacts", "import", str(source), "--key", "customer_id", "--org", "acme", data_dir=tmp_path)
    assert "12345 rows: 0 created, 12345 updated" in again.stderr
    assert len(_export(tmp_path)) == 12_345
    out = tmp_path / "out.csv"
    _run("contacts", "export", "--org", "acme", "-o", str(out), data_dir=tmp_path)
    assert out.read_text(encoding="utf-8").count("\n") == 12_346


def test_import_xlsx(tmp_path):
    from datetime import datetime

    from openpyxl import Workbook

    _run("token", "create", "--org", "acme", data_dir=tmp_path)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append(["email", "customer_id", "birthday", "gender"])
    sheet.append(["x@example.com", 1234567, datetime(2000, 5, 17), "male"])
    sheet.append(["y@example.com", None, None, None])
    path = tmp_path / "crm.xlsx"
    workbook.save(path)
    result = _run("contacts", "import", str(path), "--key", "email", "--org", "acme", data_dir=tmp_path)
    assert "2 rows: 2 created" in result.stderr
    rows = {r["email"]: r for r in _export(tmp_path)}
    assert rows["x@example.com"]["customer_id"] == "1234567"
    assert rows["x@example.com"]["birthday"] == "2000-05-17"
    assert rows["y@example.com"]["customer_id"] == ""


def test_invalid_file_changes_nothing(tmp_path):
    _run("token", "create", "--org", "acme", data_dir=tmp_path)
    source = tmp_path / "bad.csv"
    source.write_text("customer_id,gender,colour\nA,male,red\nB,robot,blue\n", encoding="utf-8")
    result = _run("contacts", "import", str(source), "--key", "customer_id", "--org", "acme", data_dir=tmp_path,
                  check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-3:] == [
        "bad.csv: nothing was imported:",
        '  column "colour" is not a field of a contact (fields: line_uid, line_display_name, display_name, email, '
        'mobile, customer_id, gender, birthday, tags)',
        '  line 3: gender: "robot" is not one of male, female, unknown']
    assert _export(tmp_path) == []
    unknown = _run("contacts", "import", str(source), "--key", "customer_id", "--org", "nobody",
                   data_dir=tmp_path, check=False)
    assert (unknown.returncode, unknown.stderr) == (1, "no organisation named 'nobody' (see `openmaac org list`)\n")


def test_big5_and_utf16_files_import_with_their_chinese_names(tmp_path):
    _run("token", "create", "--org", "acme", data_dir=tmp_path)
    names = {"C1": "王小明", "C2": "陳大文", "C3": "林美麗", "C4": "張志明"}
    big5 = tmp_path / "excel-taiwan.csv"  # what Excel in Taiwan saves as "CSV"
    big5.write_bytes(("customer_id,display_name\r\nC1,王小明\r\nC2,陳大文\r\n").encode("big5"))
    utf16 = tmp_path / "unicode.csv"
    utf16.write_bytes(("customer_id,display_name\r\nC3,林美麗\r\nC4,張志明\r\n").encode("utf-16"))
    for source in (big5, utf16):
        result = _run("contacts", "import", str(source), "--key", "customer_id", "--org", "acme", data_dir=tmp_path)
        assert "2 rows: 2 created" in result.stderr
    assert {row["customer_id"]: row["display_name"] for row in _export(tmp_path)} == names


def test_malformed_files_are_refused_with_the_line_and_no_traceback(tmp_path):
    _run("token", "create", "--org", "acme", data_dir=tmp_path)
    cases = {
        b'customer_id,email\nA1,"a@example.com\nA2,b@example.com\n':
            "the quoted cell starting on line 2 is never closed",
        b"customer_id,email\nA1,a@example.com\nA2,b@example.com,extra\n":
            "Line 3 has 3 cells, more than the 2 columns of the header.",
        b"customer_id,email\nA1,\xff\xfe\xfa\xfb\n" + bytes(range(128, 256)) * 4:
            "save it as CSV UTF-8.",
    }
    for content, message in cases.items():
        source = tmp_path / "bad.csv"
        source.write_bytes(content)
        result = _run("contacts", "import", str(source), "--key", "customer_id", "--org", "acme",
                      data_dir=tmp_path, check=False)
        assert result.returncode == 1, result.stderr
        assert message in result.stderr and "Nothing was imported." in result.stderr
        assert "Traceback" not in result.stderr
    assert _export(tmp_path) == []
