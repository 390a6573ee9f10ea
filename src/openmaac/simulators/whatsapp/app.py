"""A WhatsApp Cloud API simulator: template messages and their status webhooks.

``POST /{version}/{phone_number_id}/messages`` (bearer token, JSON) answers 200
``{"messaging_product", "contacts", "messages": [{"id": "wamid…", "message_status": "accepted"}]}``
or a Graph error ``{"error": {"message", "type", "code", "error_data", "fbtrace_id"}}``.
Accepted messages produce status webhooks (sent → delivered → read, or failed with
``errors[]``) POSTed to the configured webhook URL, signed ``X-Hub-Signature-256``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
from typing import Any

import httpx
from fastapi import APIRouter, Body, FastAPI, Request
from fastapi.responses import JSONResponse

from openmaac.simulators._outbound import World, admin_router, canonical_number, now_utc

BASE_PATH = "/_simulators/whatsapp"
DEFAULT_PHONE_NUMBER_ID = "106540352242922"
DEFAULT_DISPLAY_NUMBER = "15550783881"
DEFAULT_ACCESS_TOKEN = "simulator-access-token"
DEFAULT_APP_SECRET = "simulator-app-secret"
DEFAULT_WABA_ID = "102290129340398"
VERSION = re.compile(r"^v\d+\.\d+$")
PHONE = re.compile(r"^\+?[1-9]\d{6,14}$")
ERROR_HREF = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"

ASYNC_ERRORS = {
    131026: ("Message undeliverable", "Message Undeliverable."),
    131050: ("Unable to deliver the message. This recipient has chosen to stop receiving marketing "
             "messages on WhatsApp from your business.", "Recipient stopped marketing messages"),
    131000: ("Something went wrong", "Message failed to send due to an unknown error."),
}


def hub_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def graph_error(status: int, code: int, message: str, *, error_type: str = "OAuthException",
                details: str | None = None, subcode: int | None = None,
                transient: bool | None = None) -> JSONResponse:
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code,
                             "fbtrace_id": base64.b64encode(secrets.token_bytes(12)).decode()}
    if subcode is not None:
        error["error_subcode"] = subcode
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    if transient is not None:
        error["is_transient"] = transient
    return JSONResponse({"error": error}, status_code=status)


def new_wamid() -> str:
    return "wamid." + base64.b64encode(b"HBgM" + secrets.token_bytes(30)).decode().rstrip("=")


def create_app(*, phone_numbers: dict[str, str] | None = None, access_tokens: set[str] | None = None,
               app_secret: str = DEFAULT_APP_SECRET, webhook_url: str | None = None,
               read_receipts: bool = True, callback_delay_ms: int = 50,
               http: httpx.Client | None = None) -> FastAPI:
    """A fresh simulator. ``phone_numbers`` maps phone-number id -> display number; status
    webhooks go to ``webhook_url`` (settable at ``POST /_admin/config``) signed with
    ``app_secret``. Suggested mount path: ``BASE_PATH``."""
    world = World("whatsapp", callback_delay_ms)
    numbers = dict(phone_numbers or {DEFAULT_PHONE_NUMBER_ID: DEFAULT_DISPLAY_NUMBER})
    tokens = set(access_tokens or {DEFAULT_ACCESS_TOKEN})
    config: dict[str, Any] = {"webhook_url": webhook_url, "app_secret": app_secret,
                              "read_receipts": read_receipts, "waba_id": DEFAULT_WABA_ID}
    templates: dict[tuple[str, str], int] = {}  # (name, language) -> body parameter count
    client = http or httpx.Client(timeout=10.0)

    app = FastAPI(title="WhatsApp Cloud API simulator", docs_url="/_admin/docs",
                  openapi_url="/_admin/openapi.json")
    app.state.world = world
    app.state.config = config

    def status_object(message: dict[str, Any], status: str) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": message["id"],
            "status": status,
            "timestamp": str(int(now_utc().timestamp())),
            "recipient_id": message["wa_id"],
        }
        if message.get("reference"):
            item["biz_opaque_callback_data"] = message["reference"]
        if status in ("sent", "delivered"):
            item["conversation"] = {"id": message["conversation_id"], "origin": {"type": "marketing"}}
            item["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "marketing",
                               "type": "regular"}
        if status == "failed":
            code = message["planned_error"]
            text, details = ASYNC_ERRORS[code]
            item["errors"] = [{"code": code, "title": text, "message": text,
                               "error_data": {"details": details}, "href": ERROR_HREF}]
        return item

    def post_status(message: dict[str, Any], status: str) -> None:
        with world.lock:
            message["status"] = status
            url = config["webhook_url"]
            secret = config["app_secret"]
            suppressed = world.faults.suppress_callback(canonical_number(message["to"]))
            document = {
                "object": "whatsapp_business_account",
                "entry": [{"id": config["waba_id"], "changes": [{"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": numbers[message["phone_number_id"]],
                                 "phone_number_id": message["phone_number_id"]},
                    "statuses": [status_object(message, status)],
                }}]}],
            }
        if not url or suppressed:
            with world.lock:
                message["callbacks"].append({"status": status, "url": url, "skipped": True})
            return
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": hub_signature(secret, body),
                   "User-Agent": "facebookexternalua"}
        entry: dict[str, Any] = {"status": status, "url": url, "document": document}
        try:
            response = client.post(url, content=body, headers=headers)
            entry["response_status"] = response.status_code
        except httpx.HTTPError as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        with world.lock:
            message["callbacks"].append(entry)

    api = APIRouter()

    @api.post("/{version}/{phone_number_id}/messages")
    async def send_message(version: str, phone_number_id: str, request: Request) -> Any:
        with world.lock:
            latency = world.faults.latency_ms
        response = await handle_send(version, phone_number_id, request)
        if latency:  # the message is already taken: only the answer is late
            await asyncio.sleep(latency / 1000)
        return response

    async def handle_send(version: str, phone_number_id: str, request: Request) -> Any:
        with world.lock:
            failure = world.faults.take_server_error()
        if failure:
            return graph_error(failure, 131000, "Something went wrong", transient=True,
                               details="Message failed to send due to an unknown error.")
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in tokens:
            return graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if not VERSION.match(version) or phone_number_id not in numbers:
            return graph_error(400, 100, f"Unsupported post request. Object with ID '{phone_number_id}' does "
                               "not exist, cannot be loaded due to missing permissions, or does not support "
                               "this operation.", error_type="GraphMethodException", subcode=33)
        try:
            payload = json.loads(await request.body())
        except ValueError:
            return graph_error(400, 100, "(#100) Invalid parameter", details="Request body is not valid JSON")
        if not isinstance(payload, dict):
            return graph_error(400, 100, "(#100) Invalid parameter")
        if payload.get("messaging_product") != "whatsapp":
            return graph_error(400, 100, "(#100) The parameter messaging_product is required.")
        to = str(payload.get("to") or "")
        if not to:
            return graph_error(400, 100, "(#100) The parameter to is required.")
        if payload.get("type") != "template":
            return graph_error(400, 131009, "(#131009) Parameter value is not valid",
                               details="this simulator accepts template messages only")
        template = payload.get("template")
        if not isinstance(template, dict) or not template.get("name") or not isinstance(
                template.get("language"), dict) or not template["language"].get("code"):
            return graph_error(400, 131008, "(#131008) Required parameter is missing",
                               details="template.name and template.language.code are required")
        opaque = payload.get("biz_opaque_callback_data")
        if opaque is not None and (not isinstance(opaque, str) or len(opaque) > 512):
            return graph_error(400, 100, "(#100) Invalid parameter",
                               details="biz_opaque_callback_data must be a string of at most 512 characters")
        if not PHONE.match(to.replace(" ", "").replace("-", "")):
            return graph_error(400, 100, "(#100) Invalid parameter", details="Invalid phone number")
        name, language = str(template["name"]), str(template["language"]["code"])
        texts: list[str] = []
        body_params = 0
        for component in template.get("components") or []:
            for parameter in component.get("parameters") or []:
                if parameter.get("type") == "text":
                    texts.append(str(parameter.get("text", "")))
            if component.get("type") == "body":
                body_params = len(component.get("parameters") or [])
        with world.lock:
            if templates:
                if (name, language) not in templates:
                    return graph_error(404, 132001, "(#132001) Template name does not exist in the translation",
                                       details=f"template name ({name}) does not exist in {language}")
                if templates[(name, language)] != body_params:
                    return graph_error(400, 132000, "(#132000) Number of parameters does not match the "
                                       "expected number of params",
                                       details=f"body: number of localizable_params ({body_params}) does not "
                                       f"match the expected number of params ({templates[(name, language)]})")
            faults = world.faults
            number = canonical_number(to)
            if faults.take_temporary(number, "send"):
                return graph_error(429, 130429, "(#130429) Rate limit hit",
                                   details="Cloud API message throughput has been reached.")
            if faults.sensitive_word_in(" ".join(texts)):
                return graph_error(400, 132018, "(#132018) There was an issue with the parameters in your "
                                   "template.", details="A template parameter was refused.")
            if number in faults.invalid:
                planned: int | None = 131026
            elif number in faults.blocked:
                planned = 131050
            elif faults.take_temporary(number, "callback"):
                planned = 131000
            else:
                planned = None
        wa_id = number
        message = world.record({
            "id": new_wamid(),
            "phone_number_id": phone_number_id,
            "to": to,
            "wa_id": wa_id,
            "template": name,
            "language": language,
            "components": template.get("components") or [],
            "text": " ".join(texts),
            "reference": opaque,
            "status": "accepted",
            "planned_error": planned,
            "conversation_id": secrets.token_hex(16),
            "created": now_utc(),
        })
        delay = world.callback_delay()
        if planned is not None:
            world.dispatcher.schedule(delay, lambda: post_status(message, "failed"), key=message["id"])
        else:
            world.dispatcher.schedule(delay, lambda: post_status(message, "sent"), key=message["id"])
            world.dispatcher.schedule(delay * 2, lambda: post_status(message, "delivered"), key=message["id"])
            if config["read_receipts"]:
                world.dispatcher.schedule(delay * 3, lambda: post_status(message, "read"), key=message["id"])
        return JSONResponse({"messaging_product": "whatsapp",
                             "contacts": [{"input": to, "wa_id": wa_id}],
                             "messages": [{"id": message["id"], "message_status": "accepted"}]})

    def extra(router: APIRouter) -> None:
        @router.get("/config")
        def get_config() -> dict[str, Any]:
            return {**config, "phone_numbers": numbers, "access_tokens": sorted(tokens),
                    "templates": [{"name": n, "language": lang, "body_parameters": count}
                                  for (n, lang), count in templates.items()]}

        @router.post("/config")
        def set_config(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
            for key in ("webhook_url", "app_secret", "read_receipts"):
                if key in body:
                    config[key] = body[key]
            for token in body.get("access_tokens") or []:
                tokens.add(str(token))
            for phone_id, display in (body.get("phone_numbers") or {}).items():
                numbers[str(phone_id)] = str(display)
            if "templates" in body:
                templates.clear()
                for item in body["templates"] or []:
                    templates[(str(item["name"]), str(item.get("language", "en_US")))] = int(
                        item.get("body_parameters", 0))
            return get_config()

    app.include_router(api)
    app.include_router(admin_router(world, extra))
    return app
