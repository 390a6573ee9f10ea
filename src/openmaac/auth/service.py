"""Organisations and their access tokens.

A token is ``om_`` + 43 random URL-safe characters. Only its SHA-256 is stored; a lookup
finds the row by hash and confirms with a constant-time comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from openmaac.auth.models import AccessToken, Organization
from openmaac.channels.models import LineChannel
from openmaac.channels.service import BUILTIN_LINE_SIMULATOR
from openmaac.config import get_settings
from openmaac.db.base import utcnow
from openmaac.web.errors import APIError
from openmaac.web.times import zone

TOKEN_PREFIX = "om_"


@dataclass(frozen=True)
class OrgContext:
    """What a request knows about the organisation it acts for, and with which role: an API
    token acts as ``admin``; a console user as their membership's role (``require_role``)."""

    id: int
    name: str
    timezone: str
    region: str
    role: str = "admin"

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)


ROLES = ("viewer", "marketer", "admin")  # each may do everything the ones before it may


def require_role(org: OrgContext, minimum: str) -> None:
    """Refuse (403, Django REST framework's words) unless ``org.role`` is at least ``minimum``.
    Service functions that change state call it first, so a console viewer is refused however
    the request was made; the API's token contexts are ``admin`` and pass."""
    if ROLES.index(org.role if org.role in ROLES else "viewer") < ROLES.index(minimum):
        raise APIError(403, {"detail": "You do not have permission to perform this action."})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def org_context(org: Organization, role: str = "admin") -> OrgContext:
    return OrgContext(id=org.id, name=org.name, timezone=org.timezone, region=org.region, role=role)


def get_org_by_name(session: Session, name: str) -> Organization | None:
    return session.scalar(select(Organization).where(Organization.name == name))


def create_organization(session: Session, name: str, *, timezone: str | None = None,
                        region: str | None = None, line_api_base_url: str | None = None) -> Organization:
    """A new organisation with its LINE channel (pointing at the built-in simulator by default)."""
    settings = get_settings()
    org = Organization(
        name=name,
        timezone=timezone or settings.default_timezone,
        region=region or settings.default_region,
        created_at=utcnow(),
    )
    session.add(org)
    session.flush()
    session.add(
        LineChannel(
            organization_id=org.id,
            channel_id=str(2_000_000_000 + secrets.randbelow(10**8) * 10 + org.id % 10),
            channel_secret=secrets.token_hex(16),
            access_token=secrets.token_urlsafe(64),
            api_base_url=line_api_base_url or BUILTIN_LINE_SIMULATOR,
            created_at=utcnow(),
        )
    )
    session.flush()
    return org


def get_or_create_organization(session: Session, name: str) -> tuple[Organization, bool]:
    org = get_org_by_name(session, name)
    if org is not None:
        return org, False
    return create_organization(session, name), True


def create_token(session: Session, organization_id: int, label: str | None = None) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        AccessToken(
            organization_id=organization_id,
            token_hash=hash_token(token),
            prefix=token[:10],
            label=label,
            created_at=utcnow(),
        )
    )
    session.flush()
    return token


def revoke_token(session: Session, token_or_prefix: str) -> int:
    """Revoke by the whole token or its displayed prefix. Returns how many were revoked."""
    condition = (
        AccessToken.token_hash == hash_token(token_or_prefix)
        if len(token_or_prefix) > 16
        else AccessToken.prefix == token_or_prefix
    )
    result = session.execute(
        update(AccessToken).where(condition, AccessToken.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    _cache.clear()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


class _TokenCache:
    """Remembers recent successful look-ups for a few seconds (revocation applies within TTL)."""

    TTL = 2.0

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, OrgContext]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> OrgContext | None:
        with self._lock:
            entry = self._entries.get(digest)
        if entry and entry[0] > time.monotonic():
            return entry[1]
        return None

    def put(self, digest: str, org: OrgContext) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[digest] = (time.monotonic() + self.TTL, org)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache = _TokenCache()


def authenticate(session: Session, token: str) -> OrgContext | None:
    digest = hash_token(token)
    cached = _cache.get(digest)
    if cached is not None:
        return cached
    row = session.execute(
        select(AccessToken.token_hash, Organization)
        .join(Organization, Organization.id == AccessToken.organization_id)
        .where(AccessToken.token_hash == digest, AccessToken.revoked_at.is_(None))
    ).first()
    if row is None or not hmac.compare_digest(row[0], digest):
        return None
    context = org_context(row[1])
    _cache.put(digest, context)
    return context


def list_organizations(session: Session) -> list[tuple[Organization, int]]:
    from sqlalchemy import func

    rows = session.execute(
        select(Organization, func.count(AccessToken.id))
        .outerjoin(
            AccessToken,
            (AccessToken.organization_id == Organization.id) & AccessToken.revoked_at.is_(None),
        )
        .group_by(Organization.id)
        .order_by(Organization.id)
    ).all()
    return [(row[0], int(row[1])) for row in rows]
