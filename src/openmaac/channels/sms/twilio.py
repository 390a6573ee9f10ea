"""Twilio Programmable Messaging (REST API 2010-04-01) over httpx.

Send: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded, HTTP Basic with
``AccountSid:AuthToken``; answers 201 with the Message resource (``sid``, ``status``) or a JSON
error ``{"code", "message", "more_info", "status"}``. Status callbacks are form POSTs to the
``StatusCallback`` URL with ``MessageSid``, ``MessageStatus``, ``ErrorCode``…, signed with
``X-Twilio-Signature`` = base64(HMAC-SHA1(AuthToken, URL + sorted key+value pairs)).
Twilio has no server-side idempotency key: the caller's ``reference`` only travels in the
callback URL (``omref``) so reports can be matched even before the sid is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from openmaac import __version__
from openmaac.channels.signature import same_signature
from openmaac.channels.sms.base import (
    DEFAULT_TIMEOUT,
    REFERENCE_PARAM,
    CallbackAck,
    CallbackRejected,
    DeliveryReport,
    DeliveryStatus,
    ErrorCategory,
    InboundRequest,
    SendResult,
    add_query_params,
    path_segment,
    transport_failure,
)
from openmaac.telemetry.metrics import timed_upstream

DEFAULT_BASE_URL = "https://api.twilio.com"
# endpoint labels of the upstream metrics (docs/metrics.md)
MESSAGES_ENDPOINT = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
MESSAGE_ENDPOINT = "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"

_CATEGORIES: dict[int, ErrorCategory] = {
    # the number
    21211: ErrorCategory.INVALID_NUMBER,  # invalid 'To'
    21612: ErrorCategory.INVALID_NUMBER,  # 'To' not reachable via SMS (unroutable)
    21614: ErrorCategory.INVALID_NUMBER,  # 'To' not a mobile number
    21635: ErrorCategory.INVALID_NUMBER,  # landline
    30005: ErrorCategory.INVALID_NUMBER,  # unknown destination handset
    30006: ErrorCategory.INVALID_NUMBER,  # landline or unreachable carrier
    # the recipient
    21610: ErrorCategory.BLOCKED,  # unsubscribed (STOP)
    30004: ErrorCategory.BLOCKED,  # message blocked (by the recipient)
    # the content
    30007: ErrorCategory.CONTENT_REJECTED,  # carrier filtered
    # retry later
    20429: ErrorCategory.TEMPORARY,
    20500: ErrorCategory.TEMPORARY,
    20503: ErrorCategory.TEMPORARY,
    30001: ErrorCategory.TEMPORARY,  # queue overflow
    30003: ErrorCategory.TEMPORARY,  # unreachable handset
    30008: ErrorCategory.TEMPORARY,  # unknown error
    63017: ErrorCategory.TEMPORARY,  # rate limit
    # our account / settings
    20003: ErrorCategory.AUTH_OR_CONFIG,
    20404: ErrorCategory.AUTH_OR_CONFIG,
    21212: ErrorCategory.AUTH_OR_CONFIG,  # invalid 'From'
    21408: ErrorCategory.AUTH_OR_CONFIG,  # region permission not enabled
    21606: ErrorCategory.AUTH_OR_CONFIG,  # 'From' not SMS-capable
    21608: ErrorCategory.AUTH_OR_CONFIG,  # unverified 'To' on a trial account
    21659: ErrorCategory.AUTH_OR_CONFIG,  # 'From' is not a Twilio number
    30002: ErrorCategory.AUTH_OR_CONFIG,  # account suspended
    # the request
    21602: ErrorCategory.INVALID_REQUEST,  # body required
    21603: ErrorCategory.INVALID_REQUEST,  # 'From' required
    21604: ErrorCategory.INVALID_REQUEST,  # 'To' required
    21617: ErrorCategory.INVALID_REQUEST,  # body over 1,600 characters
}

_PROGRESS = {"queued", "accepted", "scheduled", "sending", "sent"}


def classify_twilio_error(code: int | str | None, http_status: int | None = None) -> ErrorCategory:
    """The category of a Twilio error code (or of a bare HTTP status when there is no code)."""
    try:
        number = int(code) if code is not None and str(code) != "" else None
    except ValueError:
        number = None
    if number is not None and number in _CATEGORIES:
        return _CATEGORIES[number]
    if http_status is not None:
        if http_status in (401, 403):
            return ErrorCategory.AUTH_OR_CONFIG
        if http_status == 429 or http_status >= 500:
            return ErrorCategory.TEMPORARY
        if 400 <= http_status < 500:
            return ErrorCategory.INVALID_REQUEST
    return ErrorCategory.UNKNOWN


def _sorted_pairs(params: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    items = list(params.items()) if isinstance(params, Mapping) else list(params)
    return sorted(items)


def twilio_signature(auth_token: str, url: str,
                     params: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """``X-Twilio-Signature``: base64(HMAC-SHA1(auth token, url + k1v1k2v2… sorted by key))."""
    payload = url + "".join(key + value for key, value in _sorted_pairs(params))
    digest = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """The URL as given, and with the default port removed or added (Twilio's validators do too)."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    variants = [url]
    if default is None or parts.hostname is None:
        return variants
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    if parts.port == default:
        variants.append(urlunsplit(parts._replace(netloc=f"{userinfo}{host}")))
    elif parts.port is None:
        variants.append(urlunsplit(parts._replace(netloc=f"{userinfo}{host}:{default}")))
    return variants


def verify_twilio_signature(auth_token: str, url: str,
                            params: Mapping[str, str] | Iterable[tuple[str, str]],
                            signature: str | None) -> bool:
    if not signature:
        return False
    pairs = _sorted_pairs(params)
    return any(same_signature(twilio_signature(auth_token, candidate, pairs), signature)
               for candidate in _url_variants(url))


def _report_status(raw_status: str, category: ErrorCategory | None) -> DeliveryStatus:
    if raw_status in _PROGRESS:
        return DeliveryStatus.SENT
    if raw_status in ("delivered", "read"):
        return DeliveryStatus.DELIVERED
    if category is ErrorCategory.TEMPORARY:
        return DeliveryStatus.TEMPORARY_ERROR
    if raw_status == "undelivered" and category in (None, ErrorCategory.UNKNOWN):
        return DeliveryStatus.TEMPORARY_ERROR
    return DeliveryStatus.FAILED


class TwilioProvider:
    """Twilio as an SmsProvider. Give ``from_number`` or ``messaging_service_sid`` (or both)."""

    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str, *, from_number: str | None = None,
                 messaging_service_sid: str | None = None, base_url: str = DEFAULT_BASE_URL,
                 validity_period: int | None = None, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
                 http: httpx.Client | None = None) -> None:
        if not from_number and not messaging_service_sid:
            raise ValueError("Twilio needs from_number or messaging_service_sid")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.base_url = base_url.rstrip("/")
        self.validity_period = validity_period
        self._http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._headers = {"User-Agent": f"openmaac/{__version__}", "Accept": "application/json"}

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> TwilioProvider:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def messages_url(self) -> str:
        return f"{self.base_url}/2010-04-01/Accounts/{path_segment(self.account_sid)}/Messages.json"

    def send(self, to_e164: str, text: str, *, reference: str | None = None,
             callback_url: str | None = None) -> SendResult:
        form: dict[str, str] = {"To": to_e164, "Body": text}
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        if self.from_number:
            form["From"] = self.from_number
        if callback_url:
            form["StatusCallback"] = (add_query_params(callback_url, {REFERENCE_PARAM: reference})
                                      if reference else callback_url)
        if self.validity_period:
            form["ValidityPeriod"] = str(self.validity_period)
        try:
            response = timed_upstream("twilio", MESSAGES_ENDPOINT, lambda: self._http.post(
                self.messages_url, data=form, auth=self._auth, headers=self._headers))
        except httpx.HTTPError as exc:
            return transport_failure(exc)
        body = _json(response)
        if response.status_code in (200, 201) and isinstance(body, dict) and body.get("sid"):
            segments = body.get("num_segments")
            status = str(body.get("status") or "")
            if status in ("failed", "canceled"):
                code = body.get("error_code")
                return SendResult(accepted=False, provider_message_id=str(body["sid"]),
                                  error_category=classify_twilio_error(code, None),
                                  error_code=None if code is None else str(code),
                                  error_message=body.get("error_message"), http_status=response.status_code,
                                  raw=body)
            return SendResult(accepted=True, provider_message_id=str(body["sid"]),
                              http_status=response.status_code,
                              segments=int(segments) if segments and str(segments).isdigit() else None,
                              raw=body)
        code = body.get("code") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else (body or None)
        return SendResult(accepted=False, error_category=classify_twilio_error(code, response.status_code),
                          error_code=str(code) if code is not None else f"http_{response.status_code}",
                          error_message=message, http_status=response.status_code, raw=body)

    def parse_status_callback(self, request: InboundRequest) -> DeliveryReport:
        params = request.form()
        # an empty auth token would make the signature anyone's to compute
        if not self.auth_token or not verify_twilio_signature(
                self.auth_token, request.url, params, request.header("X-Twilio-Signature")):
            raise CallbackRejected("invalid X-Twilio-Signature")
        sid = params.get("MessageSid") or params.get("SmsSid")
        raw_status = params.get("MessageStatus") or params.get("SmsStatus")
        if not sid or not raw_status:
            raise CallbackRejected("not a message status callback", 400)
        if params.get("AccountSid") and params["AccountSid"] != self.account_sid:
            raise CallbackRejected("callback for another account")
        return self._report(sid, raw_status, params.get("ErrorCode") or None, params.get("ErrorMessage"),
                            request.query().get(REFERENCE_PARAM), params.get("To"), params)

    def callback_ack(self, report: DeliveryReport | None) -> CallbackAck:
        return CallbackAck(status_code=200 if report is not None else 403)

    def query_status(self, provider_message_id: str) -> DeliveryReport | None:
        url = (f"{self.base_url}/2010-04-01/Accounts/{path_segment(self.account_sid)}/Messages/"
               f"{path_segment(provider_message_id)}.json")
        response = timed_upstream("twilio", MESSAGE_ENDPOINT, lambda: self._http.get(
            url, auth=self._auth, headers=self._headers))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body = response.json()
        code = body.get("error_code")
        return self._report(str(body["sid"]), str(body.get("status")), None if code is None else str(code),
                            body.get("error_message"), None, body.get("to"), body)

    def list_messages(self, to: str | None = None, page_size: int = 50) -> list[dict[str, Any]]:
        """The newest page of the account's Message resources (``GET …/Messages.json``, Twilio's
        list with its ``To`` filter): used to find a message whose send died mid-call."""
        params: dict[str, str] = {"PageSize": str(page_size)}
        if to:
            params["To"] = to
        response = timed_upstream("twilio", MESSAGES_ENDPOINT, lambda: self._http.get(
            self.messages_url, params=params, auth=self._auth, headers=self._headers))
        response.raise_for_status()
        body = response.json()
        return [dict(item) for item in body.get("messages") or []]

    @staticmethod
    def _report(sid: str, raw_status: str, error_code: str | None, error_message: str | None,
                reference: str | None, recipient: str | None, raw: Mapping[str, Any]) -> DeliveryReport:
        category = classify_twilio_error(error_code) if error_code else None
        status = _report_status(raw_status, category)
        if status is not DeliveryStatus.DELIVERED and status is not DeliveryStatus.SENT and category is None:
            category = ErrorCategory.TEMPORARY if status is DeliveryStatus.TEMPORARY_ERROR else ErrorCategory.UNKNOWN
        if status in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED):
            category = None
        return DeliveryReport(provider_message_id=sid, status=status, raw_status=raw_status,
                              error_code=error_code, error_message=error_message, error_category=category,
                              reference=reference, recipient=recipient, raw=dict(raw))


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
