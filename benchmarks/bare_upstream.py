"""The "bare FastAPI + the same upstream work" ceiling for bench_sms_plus and bench_messaging.

``python -m benchmarks.bare_upstream PORT [LINE_BASE ACCESS_TOKEN CHANNEL_SECRET]`` (or the
environment variables ``BARE_LINE_BASE``, ``BARE_LINE_ACCESS_TOKEN``, ``BARE_LINE_CHANNEL_SECRET``)
serves, with the settings ``openmaac serve`` uses (uvicorn, uvloop, httptools, one process):

- ``POST /openapi/v1/pnp/message/push/``: the body read and parsed with orjson, ``phone_number``
  checked against E.164, its SHA-256 computed, the PNP text rendered from ``data.pnp``, then
  LINE's ``POST {LINE_BASE}/bot/pnp/push`` (``to`` = the hash, ``X-Line-Delivery-Tag``) called
  with a synchronous ``httpx.Client`` in the thread pool, as openmaac calls LINE; answered
  ``{"id", "result": "success"}`` when LINE answered 2xx (else 502 ``"result": "failed"``);
- ``POST /openapi/v1/direct_message/push/``: the same with LINE's ``POST /v2/bot/message/push``
  (``to`` = ``data.line_uid``, one text message, a fresh ``X-Line-Retry-Key``); answered with
  the push answer's four fields;
- ``POST /line/webhook/{channel_id}``: ``X-Line-Signature`` verified (base64 HMAC-SHA256 of the
  raw body with the channel secret; 401 when wrong), the body parsed, ``delivery`` events
  counted, 200. No database.
- ``POST /twilio/status``: a Twilio status callback, as openmaac's provider callback takes it:
  the form parsed, ``X-Twilio-Signature`` verified (base64 HMAC-SHA1 of the URL and the sorted
  parameters with the auth token given as the fifth argument or ``BARE_TWILIO_AUTH_TOKEN``;
  403 when wrong), the status counted, 200. No database.
- ``GET /_stats``: what it did (pushes accepted by LINE, LINE failures, webhook events, bad
  signatures), for the benchmark's checks.

No database, no authentication of the caller, no durability: what openmaac spends beyond
this is its own work; what this spends is the floor for "one LINE call and its delivery
webhook per request" on this machine. Imports nothing from openmaac.

With ``BARE_DURABLE`` set to a database (``sqlite:///PATH`` or a ``postgresql://`` URL), the
direct push is also durable as openmaac's must be ("every accepted request is durable before
we answer"), in the least a bare app can write for it: one row per push, committed before LINE
is called (its ``line_uid``, messages and retry key: what a recovery would need to make the
call again with the same key) and updated with LINE's answer, committed before the answer.
Two autocommit statements on a connection of the thread's own, in the same thread-pool call
as the LINE call; SQLite in WAL with ``synchronous=NORMAL``, as openmaac runs it. No job
table, no grouping of commits, no per-recipient rows: the floor for a push that loses nothing.
The SMS+ push the same (a ``pnp_messages`` row, its delivery tag carrying the row's id), and
each ``delivery`` event of LINE's webhook marks its row delivered, committed before the 200.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import os
import re
import sys
import threading
import urllib.parse
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
PNP_TEXT = "Order {{order}} has arrived at {{store}}"  # bench_sms_plus's PNP content
PUSH_TEXT = "Hello {{name}}, your order has shipped."  # bench_messaging's template


def _config() -> tuple[str, str, str]:
    args = sys.argv[2:5] if __name__ == "__main__" else []
    if len(args) == 3:
        return args[0].rstrip("/"), args[1], args[2]
    return (os.environ.get("BARE_LINE_BASE", "http://127.0.0.1:8100").rstrip("/"),
            os.environ.get("BARE_LINE_ACCESS_TOKEN", ""), os.environ.get("BARE_LINE_CHANNEL_SECRET", ""))


LINE_BASE, ACCESS_TOKEN, CHANNEL_SECRET = _config()
TWILIO_AUTH_TOKEN = (sys.argv[5] if __name__ == "__main__" and len(sys.argv) > 5
                     else os.environ.get("BARE_TWILIO_AUTH_TOKEN", ""))
# the settings of openmaac's shared LINE client (channels/line_client.py): its limits, and a
# connection pool per thread (channels/per_thread.py), here one client per thread, all on ONE
# TLS context as there: building one reads the CA bundle (milliseconds of CPU), and anyio ends
# idle threads, so a context per new thread cost this ceiling ~11% of its CPU (perf)
_clients = threading.local()
_TLS = httpx.create_ssl_context()


def _http() -> httpx.Client:
    client: httpx.Client | None = getattr(_clients, "client", None)
    if client is None:
        client = _clients.client = httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0), verify=_TLS,
                                                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
    return client


DURABLE = os.environ.get("BARE_DURABLE", "")
SQLITE = DURABLE.startswith("sqlite:///")
_connections = threading.local()
_SQLITE_SCHEMA = ("CREATE TABLE IF NOT EXISTS pushes (id INTEGER PRIMARY KEY, line_uid TEXT NOT NULL, "
                  "retry_key TEXT NOT NULL, messages TEXT NOT NULL, status TEXT NOT NULL, status_code INTEGER, "
                  "created_at TEXT NOT NULL, updated_at TEXT NOT NULL)")
_SQLITE_PNP_SCHEMA = ("CREATE TABLE IF NOT EXISTS pnp_messages (id INTEGER PRIMARY KEY, phone_hash TEXT NOT NULL, "
                      "messages TEXT NOT NULL, status TEXT NOT NULL, status_code INTEGER, created_at TEXT NOT NULL, "
                      "updated_at TEXT NOT NULL)")
_PG_PNP_SCHEMA = ("CREATE TABLE IF NOT EXISTS pnp_messages (id BIGSERIAL PRIMARY KEY, phone_hash TEXT NOT NULL, "
                  "messages JSONB NOT NULL, status TEXT NOT NULL, status_code INTEGER, created_at TIMESTAMPTZ NOT NULL, "
                  "updated_at TIMESTAMPTZ NOT NULL)")
_PG_SCHEMA = ("CREATE TABLE IF NOT EXISTS pushes (id BIGSERIAL PRIMARY KEY, line_uid TEXT NOT NULL, "
              "retry_key TEXT NOT NULL, messages JSONB NOT NULL, status TEXT NOT NULL, status_code INTEGER, "
              "created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)")


def _database() -> Any:
    """This thread's connection to ``BARE_DURABLE`` (autocommit: each statement commits)."""
    conn = getattr(_connections, "conn", None)
    if conn is None:
        if SQLITE:
            import sqlite3

            conn = sqlite3.connect(DURABLE.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
        else:
            import psycopg

            conn = psycopg.connect(DURABLE, autocommit=True)
        _connections.conn = conn
    return conn


if DURABLE:  # the tables, once, before any request
    for schema in (_SQLITE_SCHEMA, _SQLITE_PNP_SCHEMA) if SQLITE else (_PG_SCHEMA, _PG_PNP_SCHEMA):
        _database().execute(schema)


def _sql(statement: str) -> str:
    """``statement`` (written with ``?``) in the driver's placeholder style."""
    return statement if SQLITE else statement.replace("?", "%s")


def _stamp() -> Any:
    now = datetime.now(UTC)
    return now.isoformat() if SQLITE else now


def _record_answer(table: str, row_id: int, status: int) -> None:
    """LINE's answer to the call of ``table``'s row ``row_id``, committed."""
    _database().execute(_sql(f"UPDATE {table} SET status = ?, status_code = ?, updated_at = ? WHERE id = ?"),
                        ("sent" if 200 <= status < 300 else "failed", status, _stamp(), row_id))


def _durable_pnp_push(phone_hash: str, messages: list[dict[str, Any]]) -> tuple[int, int]:
    """The SMS+ push's floor: a committed row, LINE's PNP call tagged with its id, the answer
    committed. Its id and LINE's status."""
    conn = _database()
    stamp = _stamp()
    message_id = int(conn.execute(_sql("INSERT INTO pnp_messages (phone_hash, messages, status, created_at, updated_at) "
                                       "VALUES (?, ?, 'sending', ?, ?) RETURNING id"),
                                  (phone_hash, orjson.dumps(messages).decode(), stamp, stamp)).fetchone()[0])
    status = _line_post("/bot/pnp/push", {"to": phone_hash, "messages": messages},
                        {"X-Line-Delivery-Tag": f"bare-pnp-{message_id}-tag-padding"})
    _record_answer("pnp_messages", message_id, status)
    return message_id, status


def _durable_push(line_uid: str, messages: list[dict[str, Any]]) -> tuple[int, int]:
    """The push's floor: a committed row (what a recovery needs to call again with the same
    retry key), LINE's call, the answer committed. Its id and LINE's status."""
    conn = _database()
    retry_key = str(uuid.uuid4())
    stamp = _stamp()
    push_id = int(conn.execute(_sql("INSERT INTO pushes (line_uid, retry_key, messages, status, created_at, updated_at) "
                                    "VALUES (?, ?, ?, 'sending', ?, ?) RETURNING id"),
                               (line_uid, retry_key, orjson.dumps(messages).decode(), stamp, stamp)).fetchone()[0])
    status = _line_post("/v2/bot/message/push", {"to": line_uid, "messages": messages}, {"X-Line-Retry-Key": retry_key})
    _record_answer("pushes", push_id, status)
    return push_id, status


def _durable_deliveries(ids: list[int]) -> None:
    """The delivery events' messages marked delivered, in one committed statement."""
    conn = _database()
    if SQLITE:
        conn.execute(f"UPDATE pnp_messages SET status = 'delivered', updated_at = ? WHERE id IN "
                     f"({', '.join('?' * len(ids))})", (_stamp(), *ids))
    else:
        conn.execute("UPDATE pnp_messages SET status = 'delivered', updated_at = %s WHERE id = ANY(%s)",
                     (_stamp(), ids))


HEADERS = {"Authorization": f"Bearer {ACCESS_TOKEN}", "User-Agent": "openmaac-bare/0",
           "Content-Type": "application/json"}

_ids = itertools.count(1)
_lock = threading.Lock()
STATS = {"line_accepted": 0, "line_failed": 0, "webhook_requests": 0, "delivery_events": 0, "bad_signatures": 0,
         "twilio_callbacks": 0}


def _count(key: str, n: int = 1) -> None:
    with _lock:
        STATS[key] += n


def _render(text: str, params: Any) -> str:
    if isinstance(params, dict):
        for name, value in params.items():
            text = text.replace("{{" + str(name) + "}}", str(value))
    return text


def _line_post(path: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    """One LINE call, as openmaac makes it (JSON body, bearer token, the caller's headers)."""
    try:
        response = _http().post(LINE_BASE + path, json=body, headers={**HEADERS, **headers})
    except httpx.HTTPError:
        _count("line_failed")
        return 0
    ok = 200 <= response.status_code < 300
    if ok and response.content:
        orjson.loads(response.content)  # LINE's answer ({} or {"sentMessages": […]}), as openmaac reads it
    _count("line_accepted" if ok else "line_failed")
    return response.status_code


def _json(content: dict[str, Any], status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


app = FastAPI()


@app.post("/openapi/v1/pnp/message/push/")
async def pnp_push(request: Request) -> Response:
    body = orjson.loads(await request.body())
    data = body.get("data") if isinstance(body, dict) else None
    phone = str(data.get("phone_number", "")) if isinstance(data, dict) else ""
    if not isinstance(data, dict) or not E164.match(phone):
        return PlainTextResponse("this value does not match the required pattern", status_code=400)
    phone_hash = hashlib.sha256(phone.encode()).hexdigest()
    messages = [{"type": "text", "text": _render(PNP_TEXT, data.get("pnp"))}]
    if DURABLE:
        message_id, status = await run_in_threadpool(_durable_pnp_push, phone_hash, messages)
    else:
        message_id = next(_ids)
        tag = f"bare-pnp-{message_id}-tag-padding"
        status = await run_in_threadpool(_line_post, "/bot/pnp/push", {"to": phone_hash, "messages": messages},
                                         {"X-Line-Delivery-Tag": tag})
    if not 200 <= status < 300:
        return _json({"id": message_id, "result": "failed", "line_status": status}, 502)
    return _json({"id": message_id, "result": "success"})


@app.post("/openapi/v1/direct_message/push/")
async def direct_push(request: Request) -> Response:
    body = orjson.loads(await request.body())
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("line_uid"), str):
        return _json({"data": {"line_uid": ["This field is required."]}}, 400)
    messages = [{"type": "text", "text": _render(PUSH_TEXT, data)}]
    if DURABLE:
        message_id, status = await run_in_threadpool(_durable_push, data["line_uid"], messages)
    else:
        message_id = next(_ids)
        status = await run_in_threadpool(_line_post, "/v2/bot/message/push",
                                         {"to": data["line_uid"], "messages": messages},
                                         {"X-Line-Retry-Key": str(uuid.uuid4())})
    result = "success" if 200 <= status < 300 else "failed"
    return _json({"id": message_id, "event_id": body.get("event_id"), "event": None, "result": result},
                 200 if result == "success" else 502)


@app.post("/line/webhook/{channel_id}")
async def line_webhook(channel_id: str, request: Request) -> Response:
    raw = await request.body()
    expected = base64.b64encode(hmac.new(CHANNEL_SECRET.encode(), raw, hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected, request.headers.get("x-line-signature", "")):
        _count("bad_signatures")
        return _json({"message": "invalid signature"}, 401)
    events = orjson.loads(raw).get("events") or []
    if DURABLE:
        delivered = [int(tag.split("-")[2]) for event in events if event.get("type") == "delivery"
                     and (tag := str((event.get("delivery") or {}).get("data", ""))).startswith("bare-pnp-")]
        if delivered:
            await run_in_threadpool(_durable_deliveries, delivered)
    with _lock:
        STATS["webhook_requests"] += 1
        STATS["delivery_events"] += sum(1 for event in events if event.get("type") == "delivery")
    return _json({})


@app.post("/twilio/status")
async def twilio_status(request: Request) -> Response:
    raw = await request.body()
    params = dict(urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    payload = str(request.url) + "".join(key + params[key] for key in sorted(params))
    expected = base64.b64encode(hmac.new(TWILIO_AUTH_TOKEN.encode(), payload.encode(), hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(expected, request.headers.get("x-twilio-signature", "")):
        _count("bad_signatures")
        return Response(status_code=403)
    with _lock:
        STATS["twilio_callbacks"] += 1
        key = f"twilio_{params.get('MessageStatus', '')}"
        STATS[key] = STATS.get(key, 0) + 1
    return Response(status_code=200)


@app.get("/_stats")
async def stats() -> Response:
    with _lock:
        return _json(dict(STATS))


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                log_level="warning")
