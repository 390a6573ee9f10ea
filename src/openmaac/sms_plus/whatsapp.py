"""SMS+ WhatsApp step: the Cloud API template a message is sent with, its reference, and how
WhatsApp's outcomes map onto SMS+ error categories.

The state transitions live in ``engine`` with the other channels'; this module only translates.
"""

from __future__ import annotations

import re
from typing import Any

from openmaac.channels.sms.base import ErrorCategory
from openmaac.common.validation import DB_ID_MAX

REFERENCE = re.compile(r"^pnp(\d+)wa$")

# whatsapp_error_category values (openmaac; MAAC OpenAPI v1.1.48 has none for WhatsApp)
INVALID_PHONE_NUMBER = "invalid_phone_number"  # not a WhatsApp user / cannot receive (131026)
BLOCKED = "blocked"  # the person stopped this business's messages (131050)
TEMPLATE_ERROR = "template_error"  # template unknown, parameters refused or not matching (132xxx)
CALLBACK_TIMEOUT = "callback_timeout"  # no delivered/read status within the WhatsApp wait
OTHERS = "others"  # credentials, throttling, server errors, anything else


def reference(message_id: int) -> str:
    """Sent as ``biz_opaque_callback_data``; every status webhook carries it back."""
    return f"pnp{message_id}wa"


def message_id_of(value: Any) -> int | None:
    match = REFERENCE.match(str(value or ""))
    number = int(match.group(1)) if match and len(match.group(1)) <= 19 else None
    return number if number is not None and 0 < number <= DB_ID_MAX else None  # no id beyond a BIGINT


def category_of(category: ErrorCategory | None) -> str:
    if category is ErrorCategory.INVALID_NUMBER:
        return INVALID_PHONE_NUMBER
    if category is ErrorCategory.BLOCKED:
        return BLOCKED
    if category in (ErrorCategory.CONTENT_REJECTED, ErrorCategory.INVALID_REQUEST):
        return TEMPLATE_ERROR
    return OTHERS


def _media(kind: str, parameter: dict[str, Any]) -> dict[str, Any]:
    media: dict[str, Any] = {"id": str(parameter["media_id"])} if parameter.get("media_id") \
        else {"link": str(parameter.get("media_url") or "")}
    if kind == "document" and parameter.get("filename"):
        media["filename"] = str(parameter["filename"])
    return {"type": kind, kind: media}


def _parameter(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {"type": "text", "text": str(value)}
    kind = value.get("type") or "text"
    if kind in ("image", "video", "document"):
        return _media(kind, value)
    if kind == "location":
        return {"type": "location", "location": {key: str(value.get(key, "")) for key in
                                                 ("latitude", "longitude", "name", "address")}}
    return {"type": "text", "text": str(value.get("text", ""))}


def components(template_data: dict[str, Any] | None) -> list[dict[str, Any]]:
    """File 003's ``template_data`` ({header, body}.parameters: strings or typed objects) as
    Cloud API template ``components``."""
    result: list[dict[str, Any]] = []
    for part in ("header", "body"):
        section = (template_data or {}).get(part)
        if not isinstance(section, dict):
            continue
        parameters = [_parameter(item) for item in section.get("parameters") or []]
        if parameters:
            result.append({"type": part, "parameters": parameters})
    return result
