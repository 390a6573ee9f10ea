"""WhatsApp Cloud API: template messages and their status webhooks, over httpx.

Send: ``POST {base}/{version}/{phone_number_id}/messages`` with a bearer token and a JSON body
``{"messaging_product": "whatsapp", "recipient_type": "individual", "to", "type": "template",
"template": {"name", "language": {"code"}, "components": [...]}, "biz_opaque_callback_data"}``;
answers ``{"messages": [{"id": "wamid…", "message_status": "accepted"}]}`` or a Graph error
``{"error": {"message", "type", "code", "error_subcode", "error_data", "fbtrace_id"}}``.
Status webhooks are JSON POSTs (``entry[].changes[].value.statuses[]``: sent / delivered /
read / failed with ``errors[]``) signed ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app
secret, raw body)>``. The caller's ``reference`` travels as ``biz_opaque_callback_data`` and
comes back in each status. Results use the SMS types (SendResult, DeliveryReport).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from openmaac import __version__
from openmaac.channels.signature import same_signature
from openmaac.channels.sms.base import (
    DEFAULT_TIMEOUT,
    CallbackRejected,
    DeliveryReport,
    DeliveryStatus,
    ErrorCategory,
    InboundRequest,
    SendResult,
    path_segment,
    transport_failure,
)
from openmaac.common.validation import has_nul
from openmaac.telemetry.metrics import timed_upstream

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v23.0"
# endpoint label of the upstream metrics (docs/metrics.md)
MESSAGES_ENDPOINT = "/{Version}/{Phone-Number-ID}/messages"
OPAQUE_DATA_MAX = 512
STATUS_ID_MAX = 128  # a wamid is about 60 characters; what openmaac stores of it

_CATEGORIES: dict[int, ErrorCategory] = {
    0: ErrorCategory.AUTH_OR_CONFIG,
    3: ErrorCategory.AUTH_OR_CONFIG,
    10: ErrorCategory.AUTH_OR_CONFIG,
    190: ErrorCategory.AUTH_OR_CONFIG,
    200: ErrorCategory.AUTH_OR_CONFIG,
    131005: ErrorCategory.AUTH_OR_CONFIG,
    131031: ErrorCategory.AUTH_OR_CONFIG,
    133010: ErrorCategory.AUTH_OR_CONFIG,
    1: ErrorCategory.TEMPORARY,
    2: ErrorCategory.TEMPORARY,
    4: ErrorCategory.TEMPORARY,
    80007: ErrorCategory.TEMPORARY,
    130429: ErrorCategory.TEMPORARY,
    131000: ErrorCategory.TEMPORARY,
    131016: ErrorCategory.TEMPORARY,
    131049: ErrorCategory.TEMPORARY,  # held back for ecosystem engagement: retry much later
    131056: ErrorCategory.TEMPORARY,
    131026: ErrorCategory.INVALID_NUMBER,  # not a WhatsApp user / cannot receive
    131050: ErrorCategory.BLOCKED,  # the user stopped marketing messages from this business
    131042: ErrorCategory.INSUFFICIENT_BALANCE,  # payment problem
    132018: ErrorCategory.CONTENT_REJECTED,  # template parameter content refused
    100: ErrorCategory.INVALID_REQUEST,
    131008: ErrorCategory.INVALID_REQUEST,
    131009: ErrorCategory.INVALID_REQUEST,
    131047: ErrorCategory.INVALID_REQUEST,
    132000: ErrorCategory.INVALID_REQUEST,
    132001: ErrorCategory.INVALID_REQUEST,
    132005: ErrorCategory.INVALID_REQUEST,
    132007: ErrorCategory.INVALID_REQUEST,
    132012: ErrorCategory.INVALID_REQUEST,
}


class _Shape(BaseModel):
    # strict: a number is not a string; extra fields are Meta's to add
    model_config = ConfigDict(strict=True, extra="allow")


class _ErrorData(_Shape):
    details: str | None = None


class _StatusError(_Shape):
    code: int | str | None = None
    title: str | None = None
    message: str | None = None
    error_data: _ErrorData | None = None


class _Status(_Shape):
    id: Annotated[str, Field(max_length=STATUS_ID_MAX)] | None = None
    status: str | None = None
    biz_opaque_callback_data: Annotated[str, Field(max_length=OPAQUE_DATA_MAX)] | None = None
    recipient_id: str | None = None
    errors: list[_StatusError] | None = None


class _Metadata(_Shape):
    phone_number_id: str | None = None


class _Value(_Shape):
    metadata: _Metadata | None = None
    statuses: list[_Status] | None = None


class _Change(_Shape):
    value: _Value | None = None


class _Entry(_Shape):
    changes: list[_Change] | None = None


class _StatusWebhook(_Shape):
    entry: list[_Entry] | None = None


_EXPECTED = {"model_type": "expected an object", "dict_type": "expected an object", "list_type": "expected a list",
             "string_type": "expected a string", "string_too_long": "too long"}


def status_webhook_statuses(body: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    """The statuses of a webhook body (``entry[].changes[].value.statuses[]``), each with its
    ``metadata.phone_number_id``, once the body has the shape Meta documents for the fields read
    here. Raises ``CallbackRejected`` (400) otherwise, and for a NUL character anywhere (no
    database can look one up). Does not verify the signature."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise CallbackRejected("body is not JSON", 400) from exc
    if has_nul(document):
        raise CallbackRejected("body holds a NUL character", 400)
    try:
        _StatusWebhook.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        expected = _EXPECTED.get(first.get("type", ""), first.get("msg", "invalid"))
        raise CallbackRejected(f"not a WhatsApp status webhook: {where}: {expected}", 400) from exc
    found: list[tuple[str | None, dict[str, Any]]] = []
    for entry in document.get("entry") or []:
        for change in entry.get("changes") or []:
            value = change.get("value") or {}
            phone_number_id = (value.get("metadata") or {}).get("phone_number_id")
            found.extend((phone_number_id, status) for status in value.get("statuses") or [])
    return found


def classify_whatsapp_error(code: int | str | None, http_status: int | None = None,
                            transient: bool = False) -> ErrorCategory:
    try:
        number = int(code) if code is not None and str(code) != "" else None
    except ValueError:
        number = None
    if number is not None and number in _CATEGORIES:
        return _CATEGORIES[number]
    if transient:
        return ErrorCategory.TEMPORARY
    if http_status is not None:
        if http_status in (401, 403):
            return ErrorCategory.AUTH_OR_CONFIG
        if http_status == 429 or http_status >= 500:
            return ErrorCategory.TEMPORARY
        if 400 <= http_status < 500:
            return ErrorCategory.INVALID_REQUEST
    return ErrorCategory.UNKNOWN


def hub_signature(app_secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256`` value: ``sha256=`` + hex HMAC-SHA256(app secret, raw body)."""
    return "sha256=" + hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_hub_signature(app_secret: str, body: bytes, header: str | None) -> bool:
    return same_signature(hub_signature(app_secret, body), header)


def verify_subscription(params: Mapping[str, str], verify_token: str) -> str | None:
    """The GET handshake (``hub.mode=subscribe&hub.verify_token=…&hub.challenge=…``): the
    challenge to echo back, or None when the token does not match."""
    if params.get("hub.mode") == "subscribe" and same_signature(verify_token, params.get("hub.verify_token")):
        return params.get("hub.challenge", "")
    return None


# --- template components --------------------------------------------------------------------

def body_component(*values: str) -> dict[str, Any]:
    """``{"type": "body", "parameters": [{"type": "text", "text": v}, …]}``."""
    return {"type": "body", "parameters": [{"type": "text", "text": value} for value in values]}


def header_text_component(value: str) -> dict[str, Any]:
    return {"type": "header", "parameters": [{"type": "text", "text": value}]}


def header_media_component(kind: str, link: str, *, filename: str | None = None) -> dict[str, Any]:
    """``kind`` is image, video or document (PDF only)."""
    media: dict[str, Any] = {"link": link}
    if filename and kind == "document":
        media["filename"] = filename
    return {"type": "header", "parameters": [{"type": kind, kind: media}]}


def url_button_component(index: int, text: str) -> dict[str, Any]:
    return {"type": "button", "sub_type": "url", "index": str(index),
            "parameters": [{"type": "text", "text": text}]}


def quick_reply_component(index: int, payload: str) -> dict[str, Any]:
    return {"type": "button", "sub_type": "quick_reply", "index": str(index),
            "parameters": [{"type": "payload", "payload": payload}]}


# --- the client -----------------------------------------------------------------------------

def _status(raw_status: str, category: ErrorCategory | None) -> DeliveryStatus:
    if raw_status in ("delivered", "read"):
        return DeliveryStatus.DELIVERED
    if raw_status == "failed":
        return DeliveryStatus.TEMPORARY_ERROR if category is ErrorCategory.TEMPORARY else DeliveryStatus.FAILED
    return DeliveryStatus.SENT  # sent, accepted, held_for_quality_assessment, …


class WhatsAppClient:
    """One WhatsApp Business phone number on the Cloud API."""

    name = "whatsapp"

    def __init__(self, phone_number_id: str, access_token: str, *, app_secret: str | None = None,
                 base_url: str = DEFAULT_BASE_URL, api_version: str = DEFAULT_API_VERSION,
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, http: httpx.Client | None = None) -> None:
        self.phone_number_id = phone_number_id
        self.configured = bool(phone_number_id and access_token)
        self.app_secret = app_secret
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        self._http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None
        self._headers = {"Authorization": f"Bearer {access_token}", "User-Agent": f"openmaac/{__version__}"}

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> WhatsAppClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/{path_segment(self.api_version)}/{path_segment(self.phone_number_id)}/messages"

    @staticmethod
    def template_payload(to_e164: str, template_name: str, language_code: str,
                         components: Sequence[Mapping[str, Any]] | None = None, *,
                         reference: str | None = None) -> dict[str, Any]:
        template: dict[str, Any] = {"name": template_name, "language": {"code": language_code}}
        if components:
            template["components"] = [dict(component) for component in components]
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to_e164,
            "type": "template",
            "template": template,
        }
        if reference:
            if len(reference) > OPAQUE_DATA_MAX:
                raise ValueError(f"reference longer than {OPAQUE_DATA_MAX} characters")
            payload["biz_opaque_callback_data"] = reference
        return payload

    def send_template(self, to_e164: str, template_name: str, language_code: str,
                      components: Sequence[Mapping[str, Any]] | None = None, *,
                      reference: str | None = None) -> SendResult:
        payload = self.template_payload(to_e164, template_name, language_code, components, reference=reference)
        if not self.configured:  # nothing to send with: a configuration error, not a request
            return SendResult(accepted=False, error_category=ErrorCategory.AUTH_OR_CONFIG,
                              error_code="missing_credentials", error_message="phone_number_id or access_token missing")
        try:
            response = timed_upstream("whatsapp", MESSAGES_ENDPOINT, lambda: self._http.post(
                self.messages_url, json=payload, headers=self._headers))
        except httpx.HTTPError as exc:
            return transport_failure(exc)
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        if response.status_code == 200 and isinstance(body, dict) and body.get("messages"):
            message = body["messages"][0]
            return SendResult(accepted=True, provider_message_id=str(message["id"]),
                              http_status=200, raw=body)
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        code = error.get("code")
        details = (error.get("error_data") or {}).get("details") if isinstance(error.get("error_data"), dict) else None
        return SendResult(
            accepted=False,
            error_category=classify_whatsapp_error(code, response.status_code, bool(error.get("is_transient"))),
            error_code=str(code) if code is not None else f"http_{response.status_code}",
            error_message=details or error.get("message") or (body if isinstance(body, str) else None),
            http_status=response.status_code, raw=body,
        )

    def parse_status_webhook(self, request: InboundRequest) -> list[DeliveryReport]:
        """Verify ``X-Hub-Signature-256`` and return the message statuses it carries (a webhook
        without statuses, e.g. an inbound message, gives an empty list)."""
        if not self.app_secret:
            raise ValueError("app_secret is required to verify WhatsApp webhooks")
        if not verify_hub_signature(self.app_secret, request.body, request.header("X-Hub-Signature-256")):
            raise CallbackRejected("invalid X-Hub-Signature-256")
        return [self._report(status) for phone_number_id, status in status_webhook_statuses(request.body)
                if phone_number_id in (None, self.phone_number_id)]

    @staticmethod
    def _report(status: Mapping[str, Any]) -> DeliveryReport:
        raw_status = str(status.get("status", ""))
        errors = status.get("errors") or []
        first = errors[0] if errors else {}
        code = first.get("code")
        category = classify_whatsapp_error(code) if raw_status == "failed" else None
        if raw_status == "failed" and category is None:
            category = ErrorCategory.UNKNOWN
        details = (first.get("error_data") or {}).get("details") if isinstance(first.get("error_data"), dict) else None
        return DeliveryReport(
            provider_message_id=str(status.get("id", "")),
            status=_status(raw_status, category),
            raw_status=raw_status,
            error_code=None if code is None else str(code),
            error_message=details or first.get("message") or first.get("title"),
            error_category=category,
            reference=status.get("biz_opaque_callback_data"),
            recipient=status.get("recipient_id"),
            raw=dict(status),
        )
