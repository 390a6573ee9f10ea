"""A Mitake (三竹資訊) SMS HTTP API simulator.

``SmSend`` (GET or POST, parameters in the query or a form body, ``CharsetURL=UTF-8``) answers
200 with the INI-like text block (``[1]`` / ``msgid=`` / ``statuscode=`` / ``AccountPoint=``,
``Duplicate=Y`` for a repeated ``clientid``); errors are the same block with an error
``statuscode`` and ``Error=`` text. Accepted messages get one delivery report, an HTTP GET to
their ``response`` URL with ``msgid``, ``dstaddr``, ``dlvtime``, ``donetime``, ``statusstr``,
``statuscode`` and ``StatusFlag`` appended to its query string, after ``callback_delay_ms``; the receiver should answer
``magicid=sms_gateway_rpack`` / ``msgid=…``. ``SmQuery`` answers ``msgid<TAB>status<TAB>time`` lines.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
from fastapi import APIRouter, Body, FastAPI, Request
from fastapi.responses import PlainTextResponse

from openmaac.simulators._outbound import World, admin_router, canonical_number, count_segments, now_utc

BASE_PATH = "/_simulators/mitake"
DEFAULT_USERNAME = "simulator"
DEFAULT_PASSWORD = "simulator-password"
DEFAULT_POINTS = 1_000_000
DUPLICATE_WINDOW = 12 * 3600
NUMBER = re.compile(r"^(09\d{8}|\+?[1-9]\d{7,14})$")
MITAKE_NEWLINE = "\x06"

ERRORS = {
    "*": "系統發生錯誤，請聯絡三竹資訊窗口人員",
    "a": "簡訊發送功能暫時停止服務，請稍候再試",
    "c": "請輸入帳號",
    "d": "請輸入密碼",
    "e": "帳號、密碼錯誤",
    "s": "帳務處理失敗，無法發送簡訊",
    "u": "簡訊內容不得為空白",
    "v": "無效的手機號碼",
    "5": "內容有錯誤",
}
STATUSSTR = {"4": "DELIVRD", "5": "REJECTD", "6": "UNDELIV", "7": "UNDELIV", "8": "EXPIRED"}


def block(**fields: Any) -> PlainTextResponse:
    lines = ["[1]"] + [f"{key}={value}" for key, value in fields.items() if value is not None]
    return PlainTextResponse("\r\n".join(lines) + "\r\n", media_type="text/plain; charset=utf-8")


TAIPEI = ZoneInfo("Asia/Taipei")


def _stamp(moment: Any) -> str:
    """Mitake's ``YYYYMMDDHHMMSS``, in Taiwan time."""
    return moment.astimezone(TAIPEI).strftime("%Y%m%d%H%M%S")


def create_app(*, accounts: dict[str, str] | None = None, points: int = DEFAULT_POINTS,
               callback_delay_ms: int = 50, http: httpx.Client | None = None) -> FastAPI:
    """A fresh simulator. ``accounts`` maps username -> password (default one demo account,
    DEFAULT_USERNAME / DEFAULT_PASSWORD), each with ``points`` of credit (one per segment).
    Suggested mount path: ``BASE_PATH``."""
    world = World("mitake", callback_delay_ms)
    known: dict[str, str] = dict(accounts or {DEFAULT_USERNAME: DEFAULT_PASSWORD})
    balance: dict[str, int] = {name: points for name in known}
    seen_clientids: dict[tuple[str, str], tuple[str, float]] = {}
    ids = itertools.count(int(time.time()) % 1_000_000 * 1000 + 1_000_000_000)
    client = http or httpx.Client(timeout=10.0)

    app = FastAPI(title="Mitake simulator", docs_url="/_admin/docs", openapi_url="/_admin/openapi.json")
    app.state.world = world
    app.state.accounts = known
    app.state.balance = balance

    async def params_of(request: Request) -> dict[str, str]:
        params = dict(request.query_params)
        if request.method == "POST":
            form = await request.form()
            params.update({key: str(value) for key, value in form.items()})
        return params

    def check_account(params: dict[str, str]) -> str | None:
        if not params.get("username"):
            return "c"
        if not params.get("password"):
            return "d"
        if known.get(params["username"]) != params["password"]:
            return "e"
        return None

    def report(message: dict[str, Any], code: str) -> None:
        done = now_utc()
        with world.lock:
            message["status"] = code
            message["status_time"] = done
            url = message.get("response")
            suppressed = world.faults.suppress_callback(canonical_number(message["to"]))
        if not url or suppressed:
            with world.lock:
                message["callbacks"].append({"status": code, "url": url, "skipped": True})
            return
        params = {
            "msgid": message["id"],
            "dstaddr": message["to"],
            "dlvtime": _stamp(message["created"]),
            "donetime": _stamp(done),
            "statusstr": STATUSSTR.get(code, "UNKNOWN"),
            "statuscode": code,
            "StatusFlag": code,
        }
        entry: dict[str, Any] = {"status": code, "url": url, "params": params}
        try:
            separator = "&" if "?" in url else "?"
            response = client.get(url + separator + urlencode(params))
            entry["response_status"] = response.status_code
            entry["ack_ok"] = ("magicid=sms_gateway_rpack" in response.text
                               and f"msgid={message['id']}" in response.text)
        except httpx.HTTPError as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        with world.lock:
            message["callbacks"].append(entry)

    api = APIRouter()

    async def sm_send(request: Request) -> Any:
        with world.lock:
            latency = world.faults.latency_ms
        response = await handle_send(request)
        if latency:  # the message is already taken: only the answer is late
            await asyncio.sleep(latency / 1000)
        return response

    async def handle_send(request: Request) -> Any:
        with world.lock:
            failure = world.faults.take_server_error()
        if failure:
            return PlainTextResponse("Internal Server Error", status_code=failure)
        params = await params_of(request)
        problem = check_account(params)
        if problem:
            return block(statuscode=problem, Error=ERRORS[problem])
        username = params["username"]
        to = params.get("dstaddr", "").strip()
        text = params.get("smbody", "").replace(MITAKE_NEWLINE, "\n")
        clientid = params.get("clientid") or None
        if clientid:
            with world.lock:
                previous = seen_clientids.get((username, clientid))
            if previous and time.time() - previous[1] < DUPLICATE_WINDOW:
                return block(msgid=previous[0], statuscode="1", AccountPoint=balance[username], Duplicate="Y")
        number = canonical_number(to)
        encoding, segments = count_segments(text)
        with world.lock:
            faults = world.faults
            if not NUMBER.match(to) or number in faults.invalid:
                return block(statuscode="v", Error=ERRORS["v"])
            if not text.strip():
                return block(statuscode="u", Error=ERRORS["u"])
            if faults.take_temporary(number, "send"):
                return block(statuscode="a", Error=ERRORS["a"])
            if faults.sensitive_word_in(text):
                return block(statuscode="5", Error=ERRORS["5"])
            if balance[username] < segments:
                return block(statuscode="s", Error=ERRORS["s"])
            balance[username] -= segments
            if number in faults.blocked:
                final = "7"
            elif faults.take_temporary(number, "callback"):
                final = "8"
            else:
                final = "4"
            msgid = str(next(ids))
            if clientid:
                seen_clientids[(username, clientid)] = (msgid, time.time())
        message = world.record({
            "id": msgid,
            "account": username,
            "to": to,
            "text": text,
            "smbody": params.get("smbody", ""),
            "encoding": encoding,
            "segments": segments,
            "status": "1",
            "response": params.get("response") or None,
            "reference": clientid,
            "created": now_utc(),
        })
        world.dispatcher.schedule(world.callback_delay(), lambda: report(message, final), key=id(message))
        return block(msgid=msgid, statuscode="1", AccountPoint=balance[username])

    async def sm_query(request: Request) -> Any:
        params = await params_of(request)
        problem = check_account(params)
        if problem:
            return block(statuscode=problem, Error=ERRORS[problem])
        wanted = [item.strip() for item in params.get("msgid", "").split(",") if item.strip()]
        if not wanted:
            return block(AccountPoint=balance[params["username"]])
        lines = []
        with world.lock:
            for msgid in wanted:
                message = world.by_id.get(msgid)
                if message is None or message["account"] != params["username"]:
                    continue
                lines.append(f"{msgid}\t{message['status']}\t{_stamp(message.get('status_time') or message['created'])}")
        return PlainTextResponse("\r\n".join(lines) + ("\r\n" if lines else ""),
                                 media_type="text/plain; charset=utf-8")

    for prefix in ("/api/mtk", "/b2c/mtk"):
        api.add_api_route(f"{prefix}/SmSend", sm_send, methods=["GET", "POST"])
        api.add_api_route(f"{prefix}/SmQuery", sm_query, methods=["GET", "POST"])

    def extra(router: APIRouter) -> None:
        @router.get("/accounts")
        def list_accounts() -> dict[str, Any]:
            return {"accounts": [{"username": name, "password": password, "points": balance.get(name, 0)}
                                 for name, password in known.items()]}

        @router.post("/accounts")
        def set_account(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
            name = str(body.get("username") or DEFAULT_USERNAME)
            known[name] = str(body.get("password") or known.get(name) or DEFAULT_PASSWORD)
            balance[name] = int(body.get("points", balance.get(name, points)))
            return {"username": name, "password": known[name], "points": balance[name]}

    app.include_router(api)
    app.include_router(admin_router(world, extra))
    return app
