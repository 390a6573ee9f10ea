"""Organisations and their access tokens.

A token is ``om_`` + 43 random URL-safe characters. Only its SHA-256 is stored; a lookup
finds the row by hash and confirms with a constant-time comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from openmaac.auth.cache import TTLCache
from openmaac.auth.models import AccessToken, Organization
from openmaac.channels.models import LineChannel
from openmaac.channels.service import BUILTIN_LINE_SIMULATOR
from openmaac.config import get_settings
from openmaac.db.base import utcnow
from openmaac.db.driver import DriverStatement
from openmaac.web.errors import APIError, field_errors, not_found
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


_cache: TTLCache[OrgContext] = TTLCache(ttl=2.0)  # a revocation elsewhere applies within 2 s


class _LastUse:
    """Records when tokens are used without a write on the request's path.

    A token's use is noted in memory; at most once per ``INTERVAL`` seconds per token and
    process, a background thread writes ``last_used_at`` (several tokens in one statement),
    and the statement itself skips rows written less than ``INTERVAL`` ago by another process.
    So the console's "last used" is at most a minute behind, and a busy API costs one small
    UPDATE per token per minute, off the request's thread.
    """

    INTERVAL = 60.0

    def __init__(self) -> None:
        self._noted: dict[str, float] = {}
        self._pending: dict[str, datetime] = {}
        self._scheduled = False
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def note(self, digest: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._noted.get(digest, -self.INTERVAL) < self.INTERVAL:
                return
            if len(self._noted) > 10_000:
                self._noted.clear()
            self._noted[digest] = now
            self._pending[digest] = utcnow()
            if self._scheduled:
                return
            self._scheduled = True
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="token-last-use")
            executor = self._executor
        executor.submit(self.flush)

    def flush(self) -> None:
        from openmaac.db.engine import get_database

        with self._lock:
            pending, self._pending, self._scheduled = self._pending, {}, False
        if not pending:
            return
        rows = [{"digest": digest, "used": used, "stale": used - timedelta(seconds=self.INTERVAL)}
                for digest, used in pending.items()]
        table = AccessToken.__table__
        statement = (
            table.update()  # type: ignore[attr-defined]
            .where(table.c.token_hash == bindparam("digest"))
            .where(table.c.last_used_at.is_(None) | (table.c.last_used_at < bindparam("stale")))
            .values(last_used_at=bindparam("used"))
        )
        try:
            with get_database().write() as session:
                session.connection().execute(statement, rows)
        except Exception:  # a lost "last used" must never hurt the API; the next use retries
            log.warning("could not record the last use of %d token(s)", len(rows), exc_info=True)
            with self._lock:
                for digest in pending:
                    self._noted.pop(digest, None)


_last_use = _LastUse()
log = logging.getLogger("openmaac.auth")


def authenticate_cached(token: str) -> OrgContext | None:
    """The organisation of a token looked up within the last two seconds, with no database
    session at all (most requests of a busy client); None: ask ``authenticate``."""
    digest = hash_token(token)
    cached = _cache.get(digest)
    if cached is not None:
        _last_use.note(digest)
    return cached


# a token's organisation (what a cache miss of every API request reads), on the driver's cursor
_TOKEN_ORGANIZATION = DriverStatement(
    select(AccessToken.__table__.c.token_hash, Organization.__table__.c.id, Organization.__table__.c.name,
           Organization.__table__.c.timezone, Organization.__table__.c.region)
    .join(Organization.__table__, Organization.__table__.c.id == AccessToken.__table__.c.organization_id)
    .where(AccessToken.__table__.c.token_hash == bindparam("digest"), AccessToken.__table__.c.revoked_at.is_(None)))


def authenticate(conn: Connection, token: str) -> OrgContext | None:
    """The token's organisation (``conn``: e.g. ``Database.lookup()``), or None."""
    cached = authenticate_cached(token)
    if cached is not None:
        return cached
    digest = hash_token(token)
    row = _TOKEN_ORGANIZATION.execute(conn, {"digest": digest}).first()
    if row is None or not hmac.compare_digest(row[0], digest):
        return None
    context = OrgContext(id=int(row[1]), name=row[2], timezone=row[3], region=row[4])
    _cache.put(digest, context)
    _last_use.note(digest)
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


# -- the console's API token page (admins of the organisation only) ----------------------------

TOKEN_LABEL_MAX = 255


def list_org_tokens(session: Session, org: OrgContext) -> list[AccessToken]:
    """The organisation's tokens that still work, newest first."""
    require_role(org, "admin")
    return list(session.scalars(
        select(AccessToken)
        .where(AccessToken.organization_id == org.id, AccessToken.revoked_at.is_(None))
        .order_by(AccessToken.id.desc())
    ))


def create_org_token(session: Session, org: OrgContext, label: str | None = None) -> tuple[str, AccessToken]:
    """A new token for the organisation (the same kind ``openmaac token create`` makes): the
    token itself, to show once, and its row."""
    require_role(org, "admin")
    label = (label or "").strip() or None
    if label is not None and len(label) > TOKEN_LABEL_MAX:
        raise field_errors({"label": [f"Ensure this field has no more than {TOKEN_LABEL_MAX} characters."]})
    token = create_token(session, org.id, label=label)
    row = session.scalar(select(AccessToken).where(AccessToken.token_hash == hash_token(token)))
    assert row is not None
    return token, row


def revoke_org_token(session: Session, org: OrgContext, token_id: int) -> AccessToken:
    """Revoke one of the organisation's tokens; 404 for another organisation's or a revoked one."""
    require_role(org, "admin")
    row = session.scalar(select(AccessToken).where(
        AccessToken.id == token_id, AccessToken.organization_id == org.id, AccessToken.revoked_at.is_(None)))
    if row is None:
        raise not_found()
    row.revoked_at = utcnow()
    session.flush()
    _cache.clear()
    return row


def describe_token(row: AccessToken) -> dict[str, Any]:
    return {"id": row.id, "prefix": row.prefix, "label": row.label, "created_at": row.created_at,
            "last_used_at": row.last_used_at}
