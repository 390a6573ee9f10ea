"""Keyset pagination with opaque, signed page tokens.

Lists are newest first: ``ORDER BY id DESC``, the next page starts below the last id seen.
The token carries that position and an HMAC over it and its scope (organisation and list),
so a token edited by hand, or taken to another organisation's list, is a 400, never a query
over someone else's rows. ``next`` is returned percent-encoded as MAAC does; ``start``
accepts it encoded or decoded (a decoded ``+`` that arrives as a space is restored).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy import Select
from sqlalchemy.orm import Session

from openmaac.config import get_settings
from openmaac.web.errors import APIError

PAGE_SIZE = 300


def _sign(scope: str, payload: bytes) -> bytes:
    key = get_settings().secret_key.encode()
    return hmac.new(key, scope.encode() + b"\x00" + payload, hashlib.sha256).digest()[:18]


def encode_token(scope: str, position: dict[str, Any]) -> str:
    payload = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    raw = base64.b64encode(_sign(scope, payload) + payload).decode()
    return quote(raw, safe="")


def decode_token(scope: str, token: str) -> dict[str, Any]:
    # A raw "+" in a query string arrives as a space (form decoding), also at either end of
    # the token: turn spaces back into "+" before trimming anything else.
    text = token.replace(" ", "+").strip()
    if "%" in text:
        text = unquote(text).replace(" ", "+")
    try:
        raw = base64.b64decode(text, validate=True)
        signature, payload = raw[:18], raw[18:]
        if len(signature) != 18 or not hmac.compare_digest(signature, _sign(scope, payload)):
            raise ValueError("bad signature")
        position = json.loads(payload)
        if not isinstance(position, dict):
            raise ValueError("bad payload")
        return position
    except (ValueError, TypeError) as exc:
        raise APIError(400, {"detail": "Invalid cursor"}) from exc


def position_after(scope: str, start: str) -> int:
    """The id a next-page token of ``scope`` continues below (400 for anything else)."""
    last_id = decode_token(scope, start).get("id")
    if not isinstance(last_id, int):
        raise APIError(400, {"detail": "Invalid cursor"})
    return last_id


@dataclass
class Page:
    rows: list[Any]
    next: str | None


def paginate_by_id(session: Session, stmt: Select[Any], id_column: Any, *, scope: str,
                   start: str | None, page_size: int = PAGE_SIZE) -> Page:
    """Run ``stmt`` (selecting one entity with an ``id``) newest first, one page from ``start``."""
    if start:
        stmt = stmt.where(id_column < position_after(scope, start))
    rows = list(session.scalars(stmt.order_by(id_column.desc()).limit(page_size + 1)))
    if len(rows) <= page_size:
        return Page(rows=rows, next=None)
    rows = rows[:page_size]
    return Page(rows=rows, next=encode_token(scope, {"id": rows[-1].id}))
