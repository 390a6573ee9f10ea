"""A Twilio Programmable Messaging simulator (REST API 2010-04-01, Messages resource).

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form, HTTP Basic) answers 201 with the
Message resource as Twilio's OpenAPI document describes it, or Twilio's JSON error body
``{"code", "message", "more_info", "status"}``. Accepted messages go queued → sent →
delivered (or undelivered / failed) on a background thread, each change after
``callback_delay_ms``, and each change after the first is form-POSTed to the message's
``StatusCallback`` signed with ``X-Twilio-Signature``. ``GET …/Messages/{Sid}.json`` fetches one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets
from email.utils import format_datetime
from typing import Any

import httpx
from fastapi import APIRouter, Body, FastAPI, Request
from fastapi.responses import JSONResponse

from openmaac.simulators._outbound import World, admin_router, canonical_number, count_segments, now_utc

BASE_PATH = "/_simulators/twilio"
API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 31 + "1"
DEFAULT_AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
BODY_MAX = 1600

ERROR_TEXTS = {
    20003: "Authenticate",
    20404: "The requested resource {path} was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    21211: "The 'To' number {to} is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21609: "The StatusCallback URL {url} is not a valid URL.",
    21610: "Attempt to send to unsubscribed recipient",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    30003: "Unreachable destination handset",
    30007: "Carrier violation",
}


def signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    payload = url + "".join(key + params[key] for key in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def error(code: int, status: int, **fmt: str) -> JSONResponse:
    body: dict[str, Any] = {
        "code": code,
        "message": ERROR_TEXTS[code].format(**fmt),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    headers = {}
    if code == 20003:
        body["detail"] = "Your AccountSid or AuthToken was incorrect."
        headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return JSONResponse(body, status_code=status, headers=headers)


def _rfc2822(value: Any) -> str | None:
    return None if value is None else format_datetime(value)


def resource(message: dict[str, Any]) -> dict[str, Any]:
    """The Message resource (api.v2010.account.message) for one stored message."""
    uri = f"/{API_VERSION}/Accounts/{message['account_sid']}/Messages/{message['id']}"
    return {
        "account_sid": message["account_sid"],
        "api_version": API_VERSION,
        "body": message["text"],
        "date_created": _rfc2822(message["created"]),
        "date_sent": _rfc2822(message.get("sent")),
        "date_updated": _rfc2822(message["updated"]),
        "direction": "outbound-api",
        "error_code": message.get("error_code"),
        "error_message": message.get("error_message"),
        "from": message.get("from"),
        "messaging_service_sid": message.get("messaging_service_sid"),
        "num_media": "0",
        "num_segments": str(message["segments"]),
        "price": message.get("price"),
        "price_unit": "USD",
        "sid": message["id"],
        "status": message["status"],
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": message["to"],
        "uri": f"{uri}.json",
    }


def create_app(*, accounts: dict[str, str] | None = None, callback_delay_ms: int = 50,
               http: httpx.Client | None = None) -> FastAPI:
    """A fresh simulator. ``accounts`` maps AccountSid -> AuthToken (default: one demo account,
    DEFAULT_ACCOUNT_SID / DEFAULT_AUTH_TOKEN). Suggested mount path: ``BASE_PATH``."""
    world = World("twilio", callback_delay_ms)
    known: dict[str, str] = dict(accounts or {DEFAULT_ACCOUNT_SID: DEFAULT_AUTH_TOKEN})
    client = http or httpx.Client(timeout=10.0)

    app = FastAPI(title="Twilio simulator", docs_url="/_admin/docs", openapi_url="/_admin/openapi.json")
    app.state.world = world
    app.state.accounts = known

    def authenticated(request: Request, account_sid: str) -> bool:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        token = known.get(user)
        return token is not None and user == account_sid and hmac.compare_digest(token, password)

    def post_callback(message: dict[str, Any], status: str) -> None:
        with world.lock:
            message["status"] = status
            message["updated"] = now_utc()
            if status == "sent":
                message["sent"] = message["updated"]
                message["price"] = f"-{0.0075 * message['segments']:.5f}"
            if status in ("undelivered", "failed"):
                message["error_code"] = message["planned_error"][0]
                message["error_message"] = message["planned_error"][1]
            url = message.get("status_callback")
            suppressed = world.faults.suppress_callback(canonical_number(message["to"]))
        if not url or suppressed:
            with world.lock:
                message["callbacks"].append({"status": status, "url": url, "skipped": True})
            return
        params = {
            "AccountSid": message["account_sid"],
            "ApiVersion": API_VERSION,
            "MessageSid": message["id"],
            "MessageStatus": status,
            "SmsSid": message["id"],
            "SmsStatus": status,
            "To": message["to"],
        }
        if message.get("from"):
            params["From"] = message["from"]
        if message.get("messaging_service_sid"):
            params["MessagingServiceSid"] = message["messaging_service_sid"]
        if status in ("undelivered", "failed"):
            params["ErrorCode"] = str(message["planned_error"][0])
            params["ErrorMessage"] = message["planned_error"][1]
        if status == "delivered":
            params["RawDlrDoneDate"] = now_utc().strftime("%y%m%d%H%M")
        headers = {
            "X-Twilio-Signature": signature(known[message["account_sid"]], url, params),
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": f"{message['id']}-{status}",
        }
        entry: dict[str, Any] = {"status": status, "url": url, "params": params}
        try:
            response = client.post(url, data=params, headers=headers)
            entry["response_status"] = response.status_code
        except httpx.HTTPError as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        with world.lock:
            message["callbacks"].append(entry)

    def plan(message: dict[str, Any], final: str) -> None:
        delay = world.callback_delay()
        if final != "failed":
            world.dispatcher.schedule(delay, lambda: post_callback(message, "sent"), key=message["id"])
        world.dispatcher.schedule(delay * 2, lambda: post_callback(message, final), key=message["id"])

    api = APIRouter()

    @api.post(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json", status_code=201)
    async def create_message(account_sid: str, request: Request) -> Any:
        with world.lock:
            latency = world.faults.latency_ms
        response = await handle_create(account_sid, request)
        if latency:  # the message is already taken: only the answer is late
            await asyncio.sleep(latency / 1000)
        return response

    async def handle_create(account_sid: str, request: Request) -> Any:
        with world.lock:
            failure = world.faults.take_server_error()
        if failure:
            return error(20500, failure)
        if not authenticated(request, account_sid):
            return error(20003, 401)
        form = await request.form()
        to = str(form.get("To") or "")
        sender = str(form.get("From") or "") or None
        service = str(form.get("MessagingServiceSid") or "") or None
        text = str(form.get("Body") or "")
        callback = str(form.get("StatusCallback") or "") or None
        if not to:
            return error(21604, 400)
        if not sender and not service:
            return error(21603, 400)
        if not text and not form.getlist("MediaUrl"):
            return error(21602, 400)
        if len(text) > BODY_MAX:
            return error(21617, 400)
        if callback and not re.match(r"^https?://[^/\s]+", callback):
            return error(21609, 400, url=callback)
        number = canonical_number(to)
        with world.lock:
            faults = world.faults
            if not E164.match(to) or number in faults.invalid:
                return error(21211, 400, to=to)
            if number in faults.blocked:
                return error(21610, 400)
            if faults.take_temporary(number, "send"):
                return error(20429, 429)
            word = faults.sensitive_word_in(text)
            temporary_report = faults.take_temporary(number, "callback")
        encoding, segments = count_segments(text)
        created = now_utc()
        message = world.record({
            "id": "SM" + secrets.token_hex(16),
            "account_sid": account_sid,
            "to": to,
            "from": sender,
            "messaging_service_sid": service,
            "text": text,
            "encoding": encoding,
            "segments": segments,
            "status": "accepted" if service and not sender else "queued",
            "status_callback": callback,
            "created": created,
            "updated": created,
            "reference": None,
        })
        if word:
            message["planned_error"] = (30007, ERROR_TEXTS[30007])
            final = "undelivered"
        elif temporary_report:
            message["planned_error"] = (30003, ERROR_TEXTS[30003])
            final = "undelivered"
        else:
            final = "delivered"
        with world.lock:
            body = resource(message)
        plan(message, final)
        return JSONResponse(body, status_code=201)

    @api.get(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json")
    async def list_messages(account_sid: str, request: Request) -> Any:
        """Twilio's list (newest first) with its ``To``/``From`` filters and ``PageSize``; one page."""
        if not authenticated(request, account_sid):
            return error(20003, 401)
        query = request.query_params
        try:
            size = max(1, min(int(query.get("PageSize", "50")), 1000))
        except ValueError:
            size = 50
        with world.lock:
            rows = [m for m in world.messages if m["account_sid"] == account_sid
                    and (not query.get("To") or m["to"] == query["To"])
                    and (not query.get("From") or m.get("from") == query["From"])]
            rows.sort(key=lambda m: m["created"], reverse=True)
            page = [resource(m) for m in rows[:size]]
        uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages.json?PageSize={size}&Page=0"
        return JSONResponse({"messages": page, "end": max(len(page) - 1, 0), "first_page_uri": uri,
                             "next_page_uri": None, "page": 0, "page_size": size, "previous_page_uri": None,
                             "start": 0, "uri": uri})

    @api.get(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages/{{sid}}.json")
    async def fetch_message(account_sid: str, sid: str, request: Request) -> Any:
        if not authenticated(request, account_sid):
            return error(20003, 401)
        with world.lock:
            message = world.by_id.get(sid)
            if message is None or message["account_sid"] != account_sid:
                return error(20404, 404, path=request.url.path)
            return JSONResponse(resource(message))

    def extra(router: APIRouter) -> None:
        @router.get("/accounts")
        def list_accounts() -> dict[str, Any]:
            return {"accounts": [{"account_sid": sid, "auth_token": token} for sid, token in known.items()]}

        @router.post("/accounts")
        def add_account(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
            sid = str(body.get("account_sid") or "AC" + secrets.token_hex(16))
            token = str(body.get("auth_token") or secrets.token_hex(16))
            known[sid] = token
            return {"account_sid": sid, "auth_token": token}

    app.include_router(api)
    app.include_router(admin_router(world, extra))

    return app
