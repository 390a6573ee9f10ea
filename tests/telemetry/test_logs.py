"""Operators' logs of a real ``openmaac serve`` (a child process, its stderr in a file): JSON
lines with their context, one access line per request, request ids, and no secret anywhere.

The request-id header itself is checked on the harness's server (every answer carries it).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PORT
from helpers import own_postgres_database, wait_for
from openmaac.auth.service import TOKEN_PREFIX
from openmaac.telemetry import logs
from openmaac.telemetry.request_id import MAX_REQUEST_ID_LENGTH

HEX_ID = re.compile(r"[0-9a-f]{32}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    base_url: str
    data_dir: Path
    log_path: Path
    database_url: str | None
    process: subprocess.Popen[bytes]

    @property
    def token(self) -> str:
        return (self.data_dir / "default-token.txt").read_text().strip()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.log_path.read_text()

    def sql(self, statement: str) -> Any:
        from sqlalchemy import create_engine, text

        url = (self.database_url.replace("postgresql://", "postgresql+psycopg://") if self.database_url
               else f"sqlite:///{self.data_dir}/openmaac.sqlite3")
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                return conn.execute(text(statement)).one()
        finally:
            engine.dispose()


@contextmanager
def serve(**env: str) -> Iterator[Served]:
    """``openmaac serve`` in a child process with ``env`` added; its stderr goes to a file."""
    with own_postgres_database("logs") as database_url:
        root = Path(tempfile.mkdtemp(prefix="openmaac-logs-"))
        port = _free_port()
        child_env = dict(os.environ)
        child_env.pop("OPENMAAC_DATABASE_URL", None)
        child_env.update(OPENMAAC_DATA_DIR=str(root / "data"), OPENMAAC_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
                         OPENMAAC_OUTBOUND_ALLOW_HOSTS="127.0.0.1", **env)
        if database_url:
            child_env["OPENMAAC_DATABASE_URL"] = database_url
        log_path = root / "stderr.log"
        with open(log_path, "wb") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "openmaac.cli", "serve", "--port", str(port)],
                                       env=child_env, stdout=subprocess.DEVNULL, stderr=stderr)
        served = Served(f"http://127.0.0.1:{port}", root / "data", log_path, database_url, process)
        try:
            def up() -> bool:
                try:
                    return httpx.get(served.base_url + "/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    assert process.poll() is None, log_path.read_text()
                    return False

            wait_for(up, timeout=60, interval=0.1)
            yield served
        finally:
            served.stop()


@dataclass
class Receiver:
    """A webhook receiver on loopback answering from a list of statuses (then 200)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    port: int = 0

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.append({k.lower(): v for k, v in self.headers.items()} | {"_status": str(status)})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@dataclass
class JsonRun:
    text: str
    lines: list[dict[str, Any]]
    facts: dict[str, Any]

    def access(self, request_id: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["logger"] == "openmaac.access" and line.get("request_id") == request_id]


@pytest.fixture(scope="module")
def json_run() -> Iterator[JsonRun]:
    """One server logging JSON at DEBUG, driven through requests, a LINE follow and push, a
    webhook delivery (failed once, then sent) and SMS provider credentials; then stopped."""
    facts: dict[str, Any] = {}
    with Receiver(statuses=[500]) as receiver, serve(OPENMAAC_LOG_FORMAT="json", OPENMAAC_LOG_LEVEL="DEBUG") as served:
        token = served.token
        org_id, channel_id, channel_secret, access_token = served.sql(
            "SELECT o.id, c.channel_id, c.channel_secret, c.access_token FROM line_channels c "
            "JOIN organizations o ON o.id = c.organization_id WHERE o.name = 'default'")
        facts.update(token=token, org_id=org_id, channel_secret=channel_secret, access_token=access_token)
        api = served.client(headers={"Authorization": f"Bearer {token}"})
        anon = served.client()

        given = "logs-test-" + secrets.token_hex(6)
        response = api.get("/openapi/v1/member/", params={"line_uid": "private-query-value"},
                           headers={"X-Request-ID": given})
        assert response.status_code == 200 and response.headers["x-request-id"] == given
        facts["given"] = given
        facts["generated"] = anon.get("/healthz").headers["x-request-id"]
        facts["too_long"] = anon.get("/healthz", headers={"X-Request-ID": "a" * (MAX_REQUEST_ID_LENGTH + 1)}
                                     ).headers["x-request-id"]
        facts["non_ascii"] = anon.get("/healthz", headers={"X-Request-ID": b"caf\xe9"}).headers["x-request-id"]
        facts["unauthenticated"] = anon.get("/openapi/v1/member/").headers["x-request-id"]

        # a LINE user follows (a signed webhook from the simulator) and is pushed a message
        simulator = served.base_url + "/_simulators/line/_admin"
        uid = httpx.post(f"{simulator}/users", json={"display_name": "Log"}, timeout=10).json()["user_id"]
        followed = httpx.post(f"{simulator}/users/{uid}/follow", json={"channel_id": channel_id}, timeout=10)
        assert followed.status_code == 200 and followed.json()["webhook"]["status"] == 200, followed.text
        template = api.post("/openapi/v1/template/", json={"name": "t", "messages": [{"type": "text", "text": "hi"}]})
        assert template.status_code == 201, template.text
        pushed = api.post("/openapi/v1/direct_message/push/", json={"template_id": template.json()["id"],
                                                                     "data": {"line_uid": uid}})
        assert pushed.status_code == 200 and pushed.json()["result"] == "success", pushed.text

        # a webhook with its secret, one delivery: refused once (500), sent on the retry
        webhook = api.post("/openapi/v1/webhook/", json={"url": receiver.url, "topics": ["contact.tag.add"]})
        assert webhook.status_code == 201, webhook.text
        facts.update(webhook_id=webhook.json()["id"], webhook_secret=webhook.json()["secret"])
        tag = api.post("/openapi/v1/tag/", json={"name": "logged"}).json()
        assert api.post("/openapi/v1/taglinemember/", json={"tag_id": tag["id"], "line_uid": uid}).status_code == 201
        wait_for(lambda: len(receiver.requests) >= 2, timeout=60, interval=0.1)
        facts["signatures"] = [request["cresclab-signature"] for request in receiver.requests]

        facts["sms_password"] = "sms-pass-" + secrets.token_hex(12)
        provider = api.put("/openapi/v1/pnp/sms_provider/", json={
            "provider": "mitake", "credentials": {"username": "logs", "password": facts["sms_password"]}})
        assert provider.status_code == 200, provider.text
        api.close()
        anon.close()
        text = served.stop()
    yield JsonRun(text, [json.loads(line) for line in text.splitlines() if line.strip()], facts)


def test_every_line_is_a_json_object_with_time_level_logger_and_message(json_run):
    assert len(json_run.lines) > 10
    for line in json_run.lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


def test_one_access_line_per_request_with_status_duration_and_organisation(json_run):
    facts = json_run.facts
    (line,) = json_run.access(facts["given"])
    assert line["method"] == "GET" and line["path"] == "/openapi/v1/member/" and line["status"] == 200
    assert isinstance(line["duration_ms"], float | int) and line["duration_ms"] >= 0
    assert line["client"] == "127.0.0.1" and line["organization_id"] == facts["org_id"]
    assert "private-query-value" not in json_run.text  # the query string is never logged
    (anonymous,) = json_run.access(facts["unauthenticated"])
    assert anonymous["status"] == 401 and "organization_id" not in anonymous


def test_request_ids_are_echoed_or_generated_and_on_their_request_lines(json_run):
    facts = json_run.facts
    for name in ("generated", "too_long", "non_ascii"):
        assert HEX_ID.fullmatch(facts[name]), name
        (line,) = json_run.access(facts[name])
        assert line["path"] == "/healthz" and line["status"] == 200
    assert len({facts["generated"], facts["too_long"], facts["non_ascii"]}) == 3


def test_worker_lines_carry_the_job_and_delivery_lines_the_endpoint_and_attempt(json_run):
    facts = json_run.facts
    dispatcher = [line for line in json_run.lines if line.get("job_kind") == "webhook.dispatch"]
    assert dispatcher and all(isinstance(line["job_id"], int) for line in dispatcher)
    assert all(line["organization_id"] == facts["org_id"] for line in dispatcher)
    deliveries = [line for line in json_run.lines if line["message"].startswith("webhook delivery")]
    assert [(line["level"], line["attempt"]) for line in deliveries] == [("INFO", 1), ("DEBUG", 2)]
    assert all(line["webhook_endpoint"] == facts["webhook_id"] and line["job_kind"] == "webhook.dispatch"
               for line in deliveries)
    assert "HTTP 500" in deliveries[0]["message"] and "request_id" not in deliveries[0]


def test_no_token_or_secret_is_ever_logged(json_run):
    facts = json_run.facts
    secrets_used = [facts["token"], facts["channel_secret"], facts["access_token"], facts["webhook_secret"],
                    facts["sms_password"], *facts["signatures"]]
    for value in secrets_used:
        assert value and value not in json_run.text
    assert any(line["level"] == "DEBUG" for line in json_run.lines)  # the run did log at DEBUG


def test_text_format_is_human_with_the_request_id():
    with serve(OPENMAAC_LOG_FORMAT="text") as served:
        given = "text-" + secrets.token_hex(6)
        with served.client() as client:
            assert client.get("/healthz", headers={"X-Request-ID": given}).headers["x-request-id"] == given
        text = served.stop()
    (line,) = [line for line in text.splitlines() if given in line]
    assert "INFO openmaac.access: GET /healthz 200" in line and f"request_id={given}" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert served.token not in text  # not a terminal: the banner names the token's file instead
    assert "default-token.txt" in text


def test_access_log_can_be_switched_off():
    with serve(OPENMAAC_LOG_FORMAT="json", OPENMAAC_ACCESS_LOG="0") as served:
        with served.client() as client:
            assert HEX_ID.fullmatch(client.get("/healthz").headers["x-request-id"])
        text = served.stop()
    loggers = {json.loads(line)["logger"] for line in text.splitlines() if line.strip()}
    assert "openmaac.access" not in loggers and "openmaac.cli" in loggers


# -- the header on every answer (the harness's server) ----------------------------------------------

def test_request_id_header_on_404_simulator_and_413(anon, tenant):
    assert anon.get("/no-such-page", headers={"X-Request-ID": "r-404"}).headers["x-request-id"] == "r-404"
    assert anon.get("/_simulators/line/_admin/docs", headers={"X-Request-ID": "r-sim"}).headers["x-request-id"] == "r-sim"
    assert HEX_ID.fullmatch(tenant.client.get("/openapi/v1/member/", headers={"X-Request-ID": "a b"}).headers["x-request-id"])
    with socket.create_connection(("127.0.0.1", PORT), timeout=20) as sock:
        sock.sendall((f"POST /line/webhook/{tenant.channel_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "X-Request-ID: r-413\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {500 * 1024 * 1024}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                break
            head += chunk
    assert head.startswith(b"HTTP/1.1 413") and b"x-request-id: r-413" in head.lower()


def test_an_unhandled_error_answers_500_with_the_request_id():
    import asyncio

    from openmaac.telemetry.request_id import RequestIdMiddleware

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=RequestIdMiddleware(failing))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/x", headers={"X-Request-ID": "r-500"})

    response = asyncio.run(run())
    assert response.status_code == 500 and response.json() == {"detail": "A server error occurred."}
    assert response.headers["x-request-id"] == "r-500"


# -- the redaction safety net -----------------------------------------------------------------------

def test_redaction_masks_bearer_tokens_access_tokens_and_url_passwords():
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    assert logs.TOKEN_PREFIX == TOKEN_PREFIX
    line = logs.redact(f"Authorization: Bearer abc.DEF-123 then {token} at https://user:pa55@host/x")
    assert "abc.DEF-123" not in line and token not in line and "pa55" not in line
    assert "Bearer [REDACTED]" in line and "om_[REDACTED]" in line and "https://user:[REDACTED]@host/x" in line
    assert logs.redact(token[:10]) == token[:10]  # the displayed prefix stays readable


_FRAGMENTS = st.sampled_from(["Bearer ", "bEaReR\t", "om_", "OM_", "://", "u:p@", "abcDEF12345", " ", "/", "@",
                              ":", "x", "é", "\n"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_FRAGMENTS, st.text(max_size=6)), max_size=12).map("".join))
def test_redaction_skips_the_patterns_only_for_lines_none_of_them_can_match(text):
    # the one search in front of the three substitutions changes no line
    assert logs.redact(text) == logs._substitute_secrets(text)


def test_a_json_line_keeps_what_orjson_refuses_a_lone_surrogate_and_a_huge_integer():
    import logging

    record = logging.LogRecord("openmaac.test", logging.INFO, __file__, 1, "file %s", ("b\udcffd.csv",), None)
    record.rows = 2**70
    line = logs.JsonLineFormatter().format(record)
    assert line.isascii()
    document = json.loads(line)
    assert document["message"] == "file b\udcffd.csv" and document["rows"] == 2**70
    plain = logging.LogRecord("openmaac.test", logging.INFO, __file__, 1, "全家 %s", (1,), None)
    assert json.loads(logs.JsonLineFormatter().format(plain))["message"] == "全家 1"  # UTF-8 as before


def test_both_formatters_redact_whole_lines_tracebacks_included():
    import logging

    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        record = logging.LogRecord("openmaac.test", logging.ERROR, __file__, 1, "header was Bearer %s", (token,),
                                   sys.exc_info())
    for formatter in (logs.JsonLineFormatter(), logs.TextFormatter()):
        assert token not in formatter.format(record)


# -- the commands --------------------------------------------------------------------------------

def _command_env(tmp_path: Path, **env: str) -> dict[str, str]:
    child_env = dict(os.environ)
    child_env.pop("OPENMAAC_DATABASE_URL", None)  # SQLite in its own data dir
    child_env.update(OPENMAAC_DATA_DIR=str(tmp_path / "data"), **env)
    return child_env


def test_worker_command_logs_json_lines(tmp_path):
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "openmaac.cli", "worker"], stderr=stderr,
                                   stdout=subprocess.DEVNULL, env=_command_env(tmp_path, OPENMAAC_LOG_FORMAT="json"))
    try:
        wait_for(lambda: "running (concurrency" in log_path.read_text(), timeout=60, interval=0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    worker_lines = [line["message"] for line in lines if line["logger"] == "openmaac.worker"]
    # started, then (on SIGTERM, with nothing running) stopped
    assert [m.split(" ")[-1] for m in worker_lines] == ["started", "stopped"]
    assert all(m.startswith("worker ") for m in worker_lines)
    assert {line["logger"] for line in lines} == {"openmaac.worker", "openmaac.cli"}


@pytest.mark.parametrize(("name", "value"), [("OPENMAAC_LOG_FORMAT", "xml"), ("OPENMAAC_LOG_LEVEL", "loud")])
def test_a_misspelt_log_setting_stops_the_command_naming_it(tmp_path, name, value):
    result = subprocess.run([sys.executable, "-m", "openmaac.cli", "worker"], capture_output=True, text=True,
                            env=_command_env(tmp_path, **{name: value}), timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith(f"openmaac: {name} must be") and "Traceback" not in result.stderr


@pytest.mark.parametrize("public_base_url", [None, "https://maac.example.com"])
def test_a_worker_without_a_public_base_url_says_where_its_links_will_point(tmp_path, public_base_url):
    """serve knows its own address; a worker does not, and builds SMS status callbacks and
    tracked links from OPENMAAC_PUBLIC_BASE_URL: without it, it says so when it starts."""
    env = _command_env(tmp_path, OPENMAAC_LOG_FORMAT="json")
    env.pop("OPENMAAC_PUBLIC_BASE_URL", None)
    if public_base_url:
        env["OPENMAAC_PUBLIC_BASE_URL"] = public_base_url
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "openmaac.cli", "worker"], stderr=stderr,
                                   stdout=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: "running (concurrency" in log_path.read_text(), timeout=60, interval=0.1)
    finally:  # the warning is written before the worker waits for a signal, so it is in the log now
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    warned = "OPENMAAC_PUBLIC_BASE_URL is not set" in log_path.read_text()
    assert warned is (public_base_url is None)
