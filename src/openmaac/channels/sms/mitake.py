"""Mitake (三竹資訊) SMS HTTP API over httpx.

Send: ``POST {base}/api/mtk/SmSend?CharsetURL=UTF-8``, form-encoded ``username``, ``password``,
``dstaddr`` (Taiwan numbers as ``09XXXXXXXX``), ``smbody`` (a newline is sent as ASCII 6),
``response`` (delivery-report URL) and ``clientid`` (the caller's key: Mitake rejects a repeat
of a clientid seen within about 12 hours and answers ``Duplicate=Y`` with the first msgid).
The answer is plain text, an INI-like block::

    [1]
    msgid=#000000013
    statuscode=1
    AccountPoint=126

Delivery reports are HTTP GETs to the ``response`` URL with ``msgid``, ``dstaddr``,
``dlvtime``, ``donetime``, ``statusstr``, ``statuscode`` and ``StatusFlag``; the endpoint must
answer ``magicid=sms_gateway_rpack\\nmsgid=<msgid>\\n``. Mitake does not sign them: with a
``callback_secret`` the adapter puts an HMAC token of the reference in the callback URL
(``omref``/``omsig``) and checks it on the way back. See docs/decisions.md for what is assumed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import httpx

from openmaac import __version__
from openmaac.channels.signature import same_signature
from openmaac.channels.sms.base import (
    DEFAULT_TIMEOUT,
    REFERENCE_PARAM,
    SIGNATURE_PARAM,
    CallbackAck,
    CallbackRejected,
    DeliveryReport,
    DeliveryStatus,
    ErrorCategory,
    InboundRequest,
    SendResult,
    add_query_params,
    reference_token,
    transport_failure,
)
from openmaac.telemetry.metrics import timed_upstream

DEFAULT_BASE_URL = "https://smsapi.mitake.com.tw"
SEND_PATH = "/api/mtk/SmSend"
QUERY_PATH = "/api/mtk/SmQuery"
CLIENTID_MAX = 36
NEWLINE = "\x06"  # Mitake's newline in smbody

STATUS_TEXT: dict[str, str] = {
    "*": "系統發生錯誤，請聯絡三竹資訊窗口人員",
    "a": "簡訊發送功能暫時停止服務，請稍候再試",
    "b": "簡訊發送功能暫時停止服務，請稍候再試",
    "c": "請輸入帳號",
    "d": "請輸入密碼",
    "e": "帳號、密碼錯誤",
    "f": "帳號已過期",
    "h": "帳號已被停用",
    "k": "無效的連線位址",
    "l": "帳號已達到同時連線數上限",
    "m": "必須變更密碼，在變更密碼前，無法使用簡訊發送服務",
    "n": "密碼已逾期，在變更密碼前，將無法使用簡訊發送服務",
    "p": "沒有權限使用外部Http程式",
    "r": "系統暫停服務，請稍後再試",
    "s": "帳務處理失敗，無法發送簡訊",
    "t": "簡訊已過期",
    "u": "簡訊內容不得為空白",
    "v": "無效的手機號碼",
    "w": "查詢筆數超過上限",
    "x": "發送檔案過大，無法發送簡訊",
    "y": "參數錯誤",
    "z": "查無資料",
    "0": "預約傳送中",
    "1": "已送達業者",
    "2": "已送達業者",
    "3": "已送達業者",
    "4": "已送達手機",
    "5": "內容有錯誤",
    "6": "門號有錯誤",
    "7": "簡訊已停用",
    "8": "逾時無送達",
    "9": "預約已取消",
}

_ACCEPTED = {"0", "1", "2", "3", "4"}
_TEMPORARY = {"*", "a", "b", "l", "r", "t", "w", "8"}
_CATEGORIES: dict[str, ErrorCategory] = {
    **{code: ErrorCategory.TEMPORARY for code in _TEMPORARY},
    **{code: ErrorCategory.AUTH_OR_CONFIG for code in "cdefhkmnp"},
    "s": ErrorCategory.INSUFFICIENT_BALANCE,
    "u": ErrorCategory.INVALID_REQUEST,
    "x": ErrorCategory.INVALID_REQUEST,
    "y": ErrorCategory.INVALID_REQUEST,
    "z": ErrorCategory.INVALID_REQUEST,
    "v": ErrorCategory.INVALID_NUMBER,
    "6": ErrorCategory.INVALID_NUMBER,
    "5": ErrorCategory.CONTENT_REJECTED,
    "7": ErrorCategory.BLOCKED,
    "9": ErrorCategory.UNKNOWN,
}
# SMPP-style ``statusstr`` values, used only when neither StatusFlag nor statuscode is given
_STATUSSTR = {"DELIVRD": "4", "EXPIRED": "8", "UNDELIV": "8", "REJECTD": "5", "DELETED": "9",
              "ACCEPTD": "1", "ENROUTE": "1", "SYNTAXE": "6"}


def classify_mitake_status(code: str) -> ErrorCategory | None:
    """None for accepted/in-progress/delivered codes, else the category of the failure."""
    if code in _ACCEPTED:
        return None
    return _CATEGORIES.get(code, ErrorCategory.UNKNOWN)


def mitake_delivery_status(code: str) -> DeliveryStatus:
    if code in ("0", "1", "2", "3"):
        return DeliveryStatus.SENT
    if code == "4":
        return DeliveryStatus.DELIVERED
    if code in _TEMPORARY:
        return DeliveryStatus.TEMPORARY_ERROR
    return DeliveryStatus.FAILED


def parse_mitake_response(text: str) -> list[dict[str, str]]:
    """The ``[n]`` sections of a Mitake answer as dicts (lines before any header form one too)."""
    sections: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = {}
            sections.append(current)
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if current is None:
            current = {}
            sections.append(current)
        current[key.strip()] = value.strip()
    return sections


def mitake_dstaddr(to_e164: str) -> str:
    """``+886912345678`` -> ``0912345678``; other numbers are passed as given (E.164)."""
    if to_e164.startswith("+886"):
        return "0" + to_e164[4:]
    return to_e164


def mitake_clientid(reference: str) -> str:
    """The reference itself when it fits Mitake's 36 characters, else a stable 36-char digest."""
    if len(reference) <= CLIENTID_MAX and reference.isascii():
        return reference
    return hashlib.sha256(reference.encode("utf-8")).hexdigest()[:CLIENTID_MAX]


def _decode(content: bytes) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return content.decode("cp950", errors="replace")  # Big5, as the legacy API answers


class MitakeProvider:
    """Mitake as an SmsProvider."""

    name = "mitake"

    def __init__(self, username: str, password: str, *, base_url: str = DEFAULT_BASE_URL,
                 send_path: str = SEND_PATH, query_path: str = QUERY_PATH,
                 callback_secret: str | None = None, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
                 http: httpx.Client | None = None) -> None:
        self.username = username
        self.password = password
        self.base_url = base_url.rstrip("/")
        self.send_path = send_path
        self.query_path = query_path
        self.callback_secret = callback_secret
        self._http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None
        self._headers = {"User-Agent": f"openmaac/{__version__}"}

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> MitakeProvider:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def callback_url_for(self, callback_url: str, reference: str | None) -> str:
        """The ``response`` URL sent to Mitake: the caller's URL plus omref / omsig."""
        params: dict[str, str] = {}
        if reference:
            params[REFERENCE_PARAM] = reference
        if self.callback_secret:
            params[SIGNATURE_PARAM] = reference_token(self.callback_secret, reference or "")
        return add_query_params(callback_url, params) if params else callback_url

    def send(self, to_e164: str, text: str, *, reference: str | None = None,
             callback_url: str | None = None) -> SendResult:
        form: dict[str, str] = {
            "username": self.username,
            "password": self.password,
            "dstaddr": mitake_dstaddr(to_e164),
            "smbody": text.replace("\r\n", "\n").replace("\n", NEWLINE),
        }
        if callback_url:
            form["response"] = self.callback_url_for(callback_url, reference)
        if reference:
            form["clientid"] = mitake_clientid(reference)
        try:
            response = timed_upstream("mitake", SEND_PATH, lambda: self._http.post(
                f"{self.base_url}{self.send_path}", params={"CharsetURL": "UTF-8"}, data=form,
                headers=self._headers))
        except httpx.HTTPError as exc:
            return transport_failure(exc)
        text_body = _decode(response.content)
        if response.status_code != 200:
            category = ErrorCategory.TEMPORARY if response.status_code >= 500 or response.status_code == 429 \
                else ErrorCategory.INVALID_REQUEST
            return SendResult(accepted=False, error_category=category, error_code=f"http_{response.status_code}",
                              error_message=text_body[:500] or None, http_status=response.status_code,
                              raw=text_body)
        sections = parse_mitake_response(text_body)
        if not sections:
            return SendResult(accepted=False, error_category=ErrorCategory.UNKNOWN, error_code="unparsable",
                              error_message=text_body[:500] or None, http_status=200, raw=text_body)
        result = sections[0]
        code = result.get("statuscode", "")
        msgid = result.get("msgid") or None
        duplicate = result.get("Duplicate", "").upper() == "Y"
        if msgid and (code in _ACCEPTED or duplicate):
            return SendResult(accepted=True, provider_message_id=msgid, http_status=200, duplicate=duplicate,
                              raw=result)
        category = classify_mitake_status(code) or ErrorCategory.UNKNOWN
        return SendResult(accepted=False, provider_message_id=msgid, error_category=category,
                          error_code=code or None,
                          error_message=result.get("Error") or STATUS_TEXT.get(code), http_status=200,
                          raw=result)

    def parse_status_callback(self, request: InboundRequest) -> DeliveryReport:
        query = request.query()
        params = {**query, **request.form()}
        if self.callback_secret:
            expected = reference_token(self.callback_secret, query.get(REFERENCE_PARAM, ""))
            if not same_signature(expected, query.get(SIGNATURE_PARAM)):
                raise CallbackRejected("invalid callback token")
        msgid = params.get("msgid")
        if not msgid:
            raise CallbackRejected("not a Mitake delivery report", 400)
        code = params.get("StatusFlag") or ""
        if not code:
            code = _STATUSSTR.get(params.get("statusstr", "").upper(), "") or params.get("statuscode", "")
        if not code:
            raise CallbackRejected("delivery report without a status", 400)
        status = mitake_delivery_status(code)
        category = None if status in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED) \
            else classify_mitake_status(code)
        return DeliveryReport(
            provider_message_id=msgid, status=status, raw_status=code,
            error_code=None if category is None else code,
            error_message=None if category is None else (params.get("statusstr") or STATUS_TEXT.get(code)),
            error_category=category, reference=query.get(REFERENCE_PARAM) or None,
            recipient=params.get("dstaddr"), raw=params,
        )

    def callback_ack(self, report: DeliveryReport | None) -> CallbackAck:
        if report is None:
            return CallbackAck(status_code=403)
        return CallbackAck(body=f"magicid=sms_gateway_rpack\nmsgid={report.provider_message_id}\n")

    def query_status(self, provider_message_id: str) -> DeliveryReport | None:
        response = timed_upstream("mitake", QUERY_PATH, lambda: self._http.post(
            f"{self.base_url}{self.query_path}", params={"CharsetURL": "UTF-8"},
            data={"username": self.username, "password": self.password, "msgid": provider_message_id},
            headers=self._headers))
        response.raise_for_status()
        for line in _decode(response.content).splitlines():
            fields = line.strip().split("\t")
            if len(fields) >= 2 and fields[0] == provider_message_id:
                code = fields[1]
                status = mitake_delivery_status(code)
                category = None if status in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED) \
                    else classify_mitake_status(code)
                raw: Mapping[str, Any] = {"msgid": fields[0], "statuscode": code,
                                          "statustime": fields[2] if len(fields) > 2 else ""}
                return DeliveryReport(provider_message_id=provider_message_id, status=status, raw_status=code,
                                      error_code=None if category is None else code,
                                      error_message=None if category is None else STATUS_TEXT.get(code),
                                      error_category=category, raw=raw)
        return None
