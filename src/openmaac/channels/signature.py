"""LINE webhook signatures: base64(HMAC-SHA256(channel secret, raw body))."""

from __future__ import annotations

import base64
import hashlib
import hmac


def line_signature(channel_secret: str, body: bytes) -> str:
    digest = hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_line_signature(channel_secret: str, body: bytes, signature: str | None) -> bool:
    if not signature:
        return False
    return hmac.compare_digest(line_signature(channel_secret, body), signature.strip())
