"""Every refusal of the command line is sentences on stderr and exit code 1 (2 for usage),
never a traceback or the repr of a dict."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from openmaac.cli_errors import in_words

OPENMAAC = str(Path(sys.executable).with_name("openmaac"))


def run(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAAC_")}
    environment.update(OPENMAAC_DATA_DIR=str(data_dir), **env)
    result = subprocess.run([OPENMAAC, *args], env=environment, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "{'" not in result.stderr, result.stderr
    return result


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory with the organisation 'default' (as `openmaac serve` leaves it)."""
    assert run("token", "create", data_dir=tmp_path).returncode == 0
    return tmp_path


def refused(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stdout == ""
    # the progress bar of a file's first pass may come first
    lines = result.stderr.splitlines()
    return lines[next((i for i, line in enumerate(lines) if "nothing was imported" in line), 0):]


def test_api_error_bodies_in_words() -> None:
    assert in_words({"detail": "Not found."}) == ["Not found."]
    assert in_words({"url": ["Enter a valid URL."], "topics": {"0": ['"x" is not a valid choice.']}}) == [
        "url: Enter a valid URL.", 'topics[0]: "x" is not a valid choice.']
    assert in_words({"data": {"1": {"mobile": ["Enter a valid phone number.", "Too long."]}},
                     "non_field_errors": ["Give one of a or b."]}) == [
        "data[1].mobile: Enter a valid phone number.", "data[1].mobile: Too long.", "Give one of a or b."]


def test_contact_import_names_each_row_and_why(data_dir: Path) -> None:
    tmp_path = data_dir
    source = tmp_path / "crm.csv"
    source.write_text("customer_id,email,mobile,birthday,gender\n"
                      "A,nope,12,1990-13-01,robot\n"
                      "B,b@example.com,0912345678,,\n"
                      "B,c@example.com,,,\n"
                      ",d@example.com,,,\n", encoding="utf-8")
    lines = refused(run("contacts", "import", str(source), "--key", "customer_id", data_dir=tmp_path))
    assert lines == [
        "crm.csv: nothing was imported:",
        '  line 2: gender: "robot" is not one of male, female, unknown',
        '  line 2: mobile: "12" is not a valid phone number',
        '  line 2: birthday: "1990-13-01" is not a date (YYYY-MM-DD)',
        '  line 2: email: "nope" is not a valid email address',
        '  line 4: customer_id: "B" appears twice in the file (as on line 3)',
        "  line 5: customer_id: empty, but contacts are matched on it (the import key)",
    ]
    assert run("contacts", "export", data_dir=tmp_path).stdout.count("\n") == 1  # the header: nothing imported


def test_contact_import_names_columns_and_stops_listing_after_twenty_rows(data_dir: Path) -> None:
    tmp_path = data_dir
    no_key = tmp_path / "no-key.csv"
    no_key.write_text("email,colour\nx@example.com,red\n", encoding="utf-8")
    assert refused(run("contacts", "import", str(no_key), "--key", "customer_id", data_dir=tmp_path)) == [
        "no-key.csv: nothing was imported:",
        '  column "colour" is not a field of a contact (fields: line_uid, line_display_name, display_name, email, '
        "mobile, customer_id, gender, birthday, tags)",
        '  there is no "customer_id" column, the field contacts are matched on (--key customer_id)',
    ]
    many = tmp_path / "many.csv"
    many.write_text("email\n" + "".join(f"not-an-email-{i}\n" for i in range(50)), encoding="utf-8")
    lines = refused(run("contacts", "import", str(many), "--key", "email", data_dir=tmp_path))
    assert lines[1] == '  line 2: email: "not-an-email-0" is not a valid email address'
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == "  (the first 20 lines with problems; the rest of the file was not checked)"


def test_export_refusals(data_dir: Path) -> None:
    tmp_path = data_dir
    assert refused(run("contacts", "export", "-o", str(tmp_path / "no" / "such" / "dir.csv"),
                       data_dir=tmp_path)) == [f"cannot write {tmp_path}/no/such/dir.csv: No such file or directory"]
    assert refused(run("contacts", "export", "--segment", "42", data_dir=tmp_path)) == [
        "no segment 42 in organisation 'default'"]
    assert refused(run("contacts", "export", "--org", "nobody", data_dir=tmp_path)) == [
        "no organisation named 'nobody' (see `openmaac org list`)"]


@pytest.mark.parametrize("command", [("org", "list"), ("points", "show"), ("token", "create")])
def test_unreachable_database_is_one_sentence(tmp_path: Path, command: tuple[str, ...]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = run(*command, data_dir=tmp_path,
                 OPENMAAC_DATABASE_URL=f"postgresql://openmaac:secret@127.0.0.1:{port}/openmaac")
    [line] = refused(result)
    assert line.startswith("the database refused or could not be reached: connection failed:")
    assert "secret" not in line


def test_unusable_data_directory_is_one_sentence(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert refused(run("migrate", "--data-dir", str(blocker / "data"), data_dir=tmp_path)) == [
        f"{blocker}/data: Not a directory"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for args in (("token", "create", "--org", "  "), ("worker", "--concurrency", "0"),
                 ("contacts", "import", str(tmp_path / "missing.csv"), "--key", "email"), ("no-such-command",)):
        result = run(*args, data_dir=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert "Usage: openmaac" in result.stderr


def test_webhook_header_without_a_value_is_a_usage_error(data_dir: Path) -> None:
    result = run("webhook", "add", "--url", "https://example.com/hook", "--topic", "contact.tag.add",
                 "--header", "X-Team", data_dir=data_dir)
    assert (result.returncode, result.stderr) == (2, "--header takes NAME=VALUE, got 'X-Team'\n")
    assert run("webhook", "list", "--json", data_dir=data_dir).stdout == ""
