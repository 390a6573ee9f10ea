"""``openmaac user create|list|set-password`` as real processes on the test server's database,
and the first console administrator ``openmaac serve`` makes on an empty database."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from helpers import free_port, serve_at_a_terminal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "console"))
from console_helpers import csrf_of, http_sign_in  # noqa: E402

OPENMAAC = str(Path(sys.executable).with_name("openmaac"))


def user_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``openmaac user ...`` on the test server's database (the environment conftest set)."""
    return subprocess.run([OPENMAAC, "user", *args], env=dict(os.environ), input=stdin, capture_output=True,
                          text=True, timeout=120)


def _signs_in(base_url: str, email: str, password: str) -> bool:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        token = csrf_of(client.get("/console/sign-in").text)
        answer = client.post("/console/sign-in", data={"email": email, "password": password, "csrf_token": token})
        return answer.status_code == 303


def test_create_list_and_set_password(tenant, make_tenant, base_url):
    email = f"Marketer-{uuid.uuid4().hex[:8]}@Example.com"
    created = user_cli("create", email, "--org", tenant.name, "--role", "marketer", "--password-stdin",
                       stdin="first password 1\n")
    assert created.returncode == 0, created.stderr
    assert created.stderr.strip() == f"created console user {email.lower()}: marketer of {tenant.name!r}"
    assert _signs_in(base_url, email.lower(), "first password 1")
    # the same address again: a membership in another organisation, the password untouched
    other = make_tenant()
    again = user_cli("create", email.lower(), "--org", other.name, "--role", "viewer")
    assert again.returncode == 0, again.stderr
    listing = user_cli("list", "--org", tenant.name)
    row = next(line for line in listing.stdout.splitlines() if email.lower() in line)
    assert f"{tenant.name} (marketer)" in row and f"{other.name} (viewer)" in row
    assert email.lower() not in user_cli("list", "--org", make_tenant().name).stdout
    with http_sign_in(base_url, email.lower(), "first password 1") as session:
        changed = user_cli("set-password", email, "--password-stdin", stdin="second password 2\n")
        assert changed.returncode == 0, changed.stderr
        # every session of the user is signed out
        assert session.get("/console/", follow_redirects=False).status_code == 303
    assert not _signs_in(base_url, email.lower(), "first password 1")
    assert _signs_in(base_url, email.lower(), "second password 2")


@pytest.mark.parametrize(("args", "stdin", "code", "message"), [
    (["create", "x@example.com", "--org", "no-such-org", "--role", "admin", "--password-stdin"], "long enough 1\n",
     1, "no organisation named 'no-such-org'"),
    (["create", "x@example.com", "--org", "{org}", "--role", "owner", "--password-stdin"], "long enough 1\n",
     2, "Invalid value for '--role'"),
    (["create", "x@example.com", "--org", "{org}", "--role", "admin", "--password-stdin"], "short\n",
     1, "password: Use at least 10 characters."),
    (["create", "not-an-address", "--org", "{org}", "--role", "admin", "--password-stdin"], "long enough 1\n",
     1, "email: Enter a valid email address."),
    (["create", "x@example.com", "--org", "{org}", "--role", "admin"], "",
     1, "no terminal to ask for the password: pass --password-stdin"),
    (["set-password", "nobody-here@example.com", "--password-stdin"], "long enough 1\n",
     1, "no console user 'nobody-here@example.com'"),
])
def test_refusals_are_sentences_and_change_nothing(tenant, args, stdin, code, message):
    result = user_cli(*[arg.replace("{org}", tenant.name) for arg in args], stdin=stdin)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "x@example.com" not in user_cli("list").stdout


def test_create_prompts_for_the_password_twice_at_a_terminal(tenant, base_url):
    import pty

    email = f"prompted-{uuid.uuid4().hex[:8]}@example.com"
    # pty.fork: the pty is the child's controlling terminal, where getpass asks with echo off
    pid, primary = pty.fork()
    if pid == 0:  # the child
        os.execve(OPENMAAC, [OPENMAAC, "user", "create", email, "--org", tenant.name, "--role", "viewer"],
                  dict(os.environ))
    seen = b""
    try:
        # click writes the prompt, then getpass (echo off, pending input discarded) writes the
        # space after it: answer only once the space is there
        for expected in (b"Password: ", b"Repeat for confirmation: "):
            deadline = time.monotonic() + 60
            while expected not in seen and time.monotonic() < deadline:
                seen += os.read(primary, 1024)
            os.write(primary, b"typed at a terminal\n")
        while b"created console user" not in seen:
            seen += os.read(primary, 1024)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, seen
    finally:
        os.close(primary)
    assert b"typed at a terminal" not in seen  # not echoed
    assert _signs_in(base_url, email, "typed at a terminal")


def _fresh_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMAAC_")}
    env["OPENMAAC_DATA_DIR"] = str(data_dir)
    return env


def _wait_healthy(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)


def test_serve_makes_a_first_admin_whose_password_only_a_terminal_sees(tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as handle:
        process = subprocess.Popen([OPENMAAC, "serve", "--port", str(port), "--no-worker"], env=_fresh_env(tmp_path),
                                   stdout=subprocess.DEVNULL, stderr=handle)
    try:
        _wait_healthy(port, process)
        banner = log.read_text()
        secrets_file = tmp_path / "console-admin.txt"
        line = next(line for line in banner.splitlines() if line.strip().startswith("Console"))
        assert re.search(rf"Console\s+: http://127\.0\.0\.1:{port}/console/  \(sign in as admin@localhost, "
                         rf"password in {re.escape(str(secrets_file))}\)", line), banner
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        saved = dict(row.split("=", 1) for row in secrets_file.read_text().splitlines() if "=" in row)
        assert saved["email"] == "admin@localhost" and saved["password"] not in banner
        base = f"http://127.0.0.1:{port}"
        # the banner's pages answer; the console's leads to its sign-in page
        for path in ("/", "/docs", "/console/"):
            assert re.search(rf"{re.escape(base + path)}(\s|$)", banner, re.M), path
            assert httpx.get(base + path, timeout=10, follow_redirects=True).status_code == 200, path
        assert "/console/" in httpx.get(base + "/", timeout=10).text  # the start page links the console
        assert _signs_in(base, "admin@localhost", saved["password"])
    finally:
        process.terminate()
        process.wait(20)
    # a second start: no second admin, and the same way in
    _, shown = serve_at_a_terminal(_fresh_env(tmp_path), until="LINE simulator")
    assert saved["password"] in shown and str(tmp_path / "console-admin.txt") in shown
    listing = subprocess.run([OPENMAAC, "user", "list"], env=_fresh_env(tmp_path), capture_output=True, text=True,
                             timeout=60).stdout
    assert listing.count("@") == 1
