"""Webhook signatures: LINE's base64(HMAC-SHA256(channel secret, raw body)), and the
constant-time comparison every inbound signature check (LINE, Twilio, Mitake, WhatsApp) uses."""

from __future__ import annotations

import base64
import hashlib
import hmac


def same_signature(expected: str, given: str | None) -> bool:
    """Constant-time ``expected == given`` for a signature taken from a request.

    ``hmac.compare_digest`` raises on text with non-ASCII characters, and a header or query
    value may hold any: compared as UTF-8 bytes, such a value is simply a wrong signature.
    """
    if not given:
        return False
    return hmac.compare_digest(expected.encode(), given.strip().encode("utf-8", "surrogatepass"))


def line_signature(channel_secret: str, body: bytes) -> str:
    digest = hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_line_signature(channel_secret: str, body: bytes, signature: str | None) -> bool:
    return same_signature(line_signature(channel_secret, body), signature)
