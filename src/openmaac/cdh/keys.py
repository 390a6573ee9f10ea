"""CDH API keys: one organisation may hold several; only their SHA-256 is stored.

A key is ``cdh_`` + 43 random URL-safe characters. The console's API token page and the
``openmaac cdh-key`` commands call these functions; the ones taking an ``OrgContext`` refuse
anyone but an admin of the organisation (the CLI acts as admin), however the request was made.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from openmaac.auth.cache import TTLCache
from openmaac.auth.models import Organization
from openmaac.auth.service import OrgContext, hash_token, org_context, require_role
from openmaac.cdh.models import CdhApiKey
from openmaac.db.base import utcnow
from openmaac.web.errors import field_errors, not_found
from openmaac.web.times import render

KEY_PREFIX = "cdh_"
PREFIX_LENGTH = 12
LABEL_MAX = 255  # the column's length


def create_cdh_key(session: Session, org: OrgContext, label: str | None = None) -> str:
    """A new key for the organisation; the only time the whole key is seen."""
    require_role(org, "admin")
    label = (label or "").strip() or None
    if label is not None and len(label) > LABEL_MAX:
        raise field_errors({"label": [f"Ensure this field has no more than {LABEL_MAX} characters."]})
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(CdhApiKey(organization_id=org.id, key_hash=hash_token(key), prefix=key[:PREFIX_LENGTH],
                          label=label, created_at=utcnow()))
    session.flush()
    return key


def list_cdh_keys(session: Session, org: OrgContext, *, active_only: bool = False) -> list[dict[str, Any]]:
    """The organisation's keys, newest first (prefix, label, times; never the key). The
    ``created`` and ``revoked`` datetimes are for the console; ``*_at`` are rendered in the
    organisation's time zone."""
    require_role(org, "admin")
    statement = select(CdhApiKey).where(CdhApiKey.organization_id == org.id)
    if active_only:
        statement = statement.where(CdhApiKey.revoked_at.is_(None))
    rows = session.scalars(statement.order_by(CdhApiKey.id.desc())).all()
    return [{"id": row.id, "prefix": row.prefix, "label": row.label, "created_at": render(row.created_at, org.tz),
             "revoked_at": render(row.revoked_at, org.tz) if row.revoked_at else None,
             "created": row.created_at, "revoked": row.revoked_at} for row in rows]


def revoke_cdh_key(session: Session, key_or_prefix: str, organization_id: int | None = None) -> int:
    """Revoke by the whole key or its shown prefix (within one organisation when given).
    Returns how many keys were revoked."""
    condition = (CdhApiKey.key_hash == hash_token(key_or_prefix) if len(key_or_prefix) > PREFIX_LENGTH
                 else CdhApiKey.prefix == key_or_prefix)
    statement = update(CdhApiKey).where(condition, CdhApiKey.revoked_at.is_(None))
    if organization_id is not None:
        statement = statement.where(CdhApiKey.organization_id == organization_id)
    result = session.execute(statement.values(revoked_at=utcnow()))
    _cache.clear()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def revoke_cdh_key_by_id(session: Session, org: OrgContext, key_id: int) -> str:
    """The console's revoke button: one key of the organisation, by its id; returns its prefix.
    404 for another organisation's key or one already revoked."""
    require_role(org, "admin")
    row = session.scalar(select(CdhApiKey).where(CdhApiKey.id == key_id, CdhApiKey.organization_id == org.id,
                                                 CdhApiKey.revoked_at.is_(None)))
    if row is None:
        raise not_found()
    row.revoked_at = utcnow()
    session.flush()
    _cache.clear()
    return row.prefix


_cache: TTLCache[OrgContext] = TTLCache(ttl=2.0)  # a revocation elsewhere applies within 2 s


def cached_cdh_key(key: str) -> OrgContext | None:
    """The organisation of a key authenticated within the last TTL seconds, if any."""
    return _cache.get(hash_token(key))


def authenticate_cdh_key(session: Session, key: str) -> OrgContext | None:
    digest = hash_token(key)
    cached = _cache.get(digest)
    if cached is not None:
        return cached
    row = session.execute(
        select(CdhApiKey.key_hash, Organization).join(Organization, Organization.id == CdhApiKey.organization_id)
        .where(CdhApiKey.key_hash == digest, CdhApiKey.revoked_at.is_(None))
    ).first()
    if row is None or not hmac.compare_digest(row[0], digest):
        return None
    context = org_context(row[1])
    _cache.put(digest, context)
    return context


__all__ = ["authenticate_cdh_key", "create_cdh_key", "list_cdh_keys", "revoke_cdh_key", "revoke_cdh_key_by_id"]
