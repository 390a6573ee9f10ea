"""Who is signed in: server-side sessions named by a cookie, the ``Actor`` every console view
receives, and the CSRF check every state-changing console request passes.

A session row is created at each sign-in (the browser's previous one is deleted: rotation),
ends after ``IDLE_TIMEOUT`` without a request or ``ABSOLUTE_TIMEOUT`` after the sign-in, and is
deleted by sign-out or by a password change (the other sessions of that user). The cookie is
HttpOnly, SameSite=Lax, path ``/console``, and Secure when the request came over HTTPS (as
uvicorn reports it, ``X-Forwarded-Proto`` included from the proxies it trusts) or the
server's public address is https.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from openmaac.auth.models import Organization
from openmaac.auth.service import OrgContext, org_context
from openmaac.config import get_settings
from openmaac.console.i18n import negotiate
from openmaac.console.models import ConsoleSession, ConsoleUser
from openmaac.console.users import memberships
from openmaac.db.base import utcnow
from openmaac.db.engine import get_database
from openmaac.web.errors import APIError

SESSION_COOKIE = "openmaac_session"
PRE_SESSION_CSRF_COOKIE = "openmaac_csrf"  # the sign-in form's CSRF token, before any session
COOKIE_PATH = "/console"
IDLE_TIMEOUT = timedelta(hours=12)
ABSOLUTE_TIMEOUT = timedelta(days=7)
# last_seen_at is written at most this often (not a write per request); the idle timeout is
# therefore exact to within this much
TOUCH_INTERVAL = timedelta(minutes=5)
CSRF_FORM_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Actor:
    """The signed-in user acting for one organisation, with their role there."""

    user_id: int
    email: str
    role: str
    org: OrgContext
    locale: str
    csrf_token: str
    memberships: list[tuple[int, str, str]] = field(default_factory=list)
    session_id: str = ""


class SignInRequired(Exception):
    """No valid session: answered with a redirect to the sign-in page (console/__init__.py)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def is_https(request: Request) -> bool:
    return request.url.scheme == "https" or get_settings().public_base_url.startswith("https://")


def set_session_cookie(request: Request, response: Response, secret: str) -> None:
    response.set_cookie(SESSION_COOKIE, secret, max_age=int(ABSOLUTE_TIMEOUT.total_seconds()), path=COOKIE_PATH,
                        httponly=True, samesite="lax", secure=is_https(request))


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax", secure=is_https(request))


def pre_session_csrf(request: Request, response: Response | None = None) -> str:
    """The sign-in form's CSRF token (double-submit cookie), created when missing."""
    token = request.cookies.get(PRE_SESSION_CSRF_COOKIE) or getattr(request.state, "pre_session_csrf", None)
    if not token:
        token = secrets.token_urlsafe(32)
        request.state.pre_session_csrf = token
    if response is not None and request.cookies.get(PRE_SESSION_CSRF_COOKIE) != token:
        response.set_cookie(PRE_SESSION_CSRF_COOKIE, token, path=COOKIE_PATH, httponly=True, samesite="strict",
                            secure=is_https(request))
    return str(token)


def start_session(session: Session, user_id: int, organization_id: int, previous_secret: str | None) -> str:
    """A new session for a sign-in; the browser's previous session, if any, is deleted (a
    session id planted before the sign-in is worth nothing after it). Returns the cookie value."""
    now = utcnow()
    if previous_secret:
        session.execute(delete(ConsoleSession).where(ConsoleSession.id == _digest(previous_secret)))
    purge_expired(session, now)  # sessions whose browsers never came back (a small table)
    secret = secrets.token_urlsafe(32)
    session.add(ConsoleSession(id=_digest(secret), user_id=user_id, organization_id=organization_id,
                               csrf_token=secrets.token_urlsafe(32), created_at=now, last_seen_at=now,
                               expires_at=now + ABSOLUTE_TIMEOUT))
    session.flush()
    return secret


def end_session(session: Session, secret: str | None) -> None:
    if secret:
        session.execute(delete(ConsoleSession).where(ConsoleSession.id == _digest(secret)))


def switch_organization(session: Session, actor: Actor, organization_id: int) -> None:
    """Act for another organisation the user belongs to; any other id is not found (404)."""
    if organization_id not in {org_id for org_id, _, _ in memberships(session, actor.user_id)}:
        raise APIError(404, {"detail": "Not found."})
    session.execute(update(ConsoleSession).where(ConsoleSession.id == actor.session_id)
                    .values(organization_id=organization_id))


def _load(request: Request) -> Actor | None:
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret or len(secret) > 128:
        return None
    session_id = _digest(secret)
    now = utcnow()
    database = get_database()
    with database.read() as db:
        row = db.get(ConsoleSession, session_id)
        if row is None:
            return None
        if row.expires_at <= now or row.last_seen_at + IDLE_TIMEOUT <= now:
            expired = True
        else:
            expired = False
            user = db.get(ConsoleUser, row.user_id)
            belongs = memberships(db, row.user_id)
            if user is None or not belongs:
                return None
            current = next((m for m in belongs if m[0] == row.organization_id), belongs[0])
            org = db.get(Organization, current[0])
            if org is None:
                return None
            touch = now - row.last_seen_at >= TOUCH_INTERVAL
            actor = Actor(user_id=user.id, email=user.email, role=current[2], org=org_context(org, current[2]),
                          locale=user.locale or negotiate(request.headers.get("accept-language")),
                          csrf_token=row.csrf_token, memberships=belongs, session_id=session_id)
    if expired:
        with database.write() as db:
            db.execute(delete(ConsoleSession).where(ConsoleSession.id == session_id))
        return None
    if touch:
        with database.write() as db:
            db.execute(update(ConsoleSession).where(ConsoleSession.id == session_id).values(last_seen_at=now))
    return actor


def optional_actor(request: Request) -> Actor | None:
    """The signed-in actor, or None; loaded once per request."""
    if not hasattr(request.state, "console_actor"):
        request.state.console_actor = _load(request)
    actor: Actor | None = request.state.console_actor
    return actor


def safe_next(path: str | None) -> str:
    """Where to go after signing in: only a path of the console itself (no open redirect)."""
    if not path or not path.startswith("/console/") or path.startswith("//") or "\\" in path:
        return "/console/"
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        return "/console/"
    return path


def current_actor(request: Request) -> Actor:
    actor = optional_actor(request)
    if actor is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target)
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]


def sign_in_url(next_path: str) -> str:
    return "/console/sign-in?next=" + quote(safe_next(next_path), safe="/")


async def csrf_protect(request: Request) -> None:
    """Every console request that may change something must come from our own pages: not
    cross-site (``Sec-Fetch-Site``, ``Origin``) and carrying the session's CSRF token (the
    sign-in form: the pre-session cookie's) in ``X-CSRF-Token`` or the ``csrf_token`` field."""
    if request.method in SAFE_METHODS:
        return
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise _refused()
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = urlsplit(origin).netloc
        if host.lower() != (request.headers.get("host") or "").lower():
            raise _refused()
    actor = optional_actor(request)
    expected = actor.csrf_token if actor is not None else request.cookies.get(PRE_SESSION_CSRF_COOKIE)
    given = request.headers.get(CSRF_HEADER)
    if not given:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FORM_FIELD)
            given = value if isinstance(value, str) else None
    if not expected or not given or not hmac.compare_digest(expected.encode(), given.encode()):
        raise _refused()


def _refused() -> APIError:
    return APIError(403, {"detail": "CSRF Failed: CSRF token missing or incorrect."})


def purge_expired(session: Session, now: datetime | None = None) -> int:
    now = now or utcnow()
    result = session.execute(delete(ConsoleSession).where(
        (ConsoleSession.expires_at <= now) | (ConsoleSession.last_seen_at <= now - IDLE_TIMEOUT)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def session_rows(session: Session, user_id: int) -> list[str]:
    return list(session.scalars(select(ConsoleSession.id).where(ConsoleSession.user_id == user_id)).all())
