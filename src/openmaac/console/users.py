"""Console users and their memberships: the service the sign-in page, the account page and
the ``openmaac user`` commands share. Knows nothing of HTTP except ``APIError``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from openmaac.auth.models import Organization
from openmaac.auth.service import ROLES
from openmaac.console import throttle
from openmaac.console.models import ConsoleMembership, ConsoleSession, ConsoleUser
from openmaac.console.passwords import dummy_hash, hash_password, password_problem, verify_password
from openmaac.db.base import utcnow
from openmaac.web.errors import APIError, field_errors


def normalise_email(email: str) -> str:
    return email.strip().lower()


def email_problem(email: str) -> str | None:
    local, at, domain = email.partition("@")
    if not at or not local or not domain or "@" in domain or any(c.isspace() for c in email):
        return "Enter a valid email address."
    if len(email) > 254:
        return "Ensure this field has no more than 254 characters."
    return None


def get_user(session: Session, email: str) -> ConsoleUser | None:
    return session.scalar(select(ConsoleUser).where(ConsoleUser.email == normalise_email(email)))


def create_user(session: Session, email: str, password: str) -> ConsoleUser:
    email = normalise_email(email)
    problem = email_problem(email)
    if problem:
        raise field_errors({"email": [problem]})
    if get_user(session, email) is not None:
        raise field_errors({"email": ["A user with this email address already exists."]})
    problem = password_problem(password)
    if problem:
        raise field_errors({"password": [problem]})
    now = utcnow()
    user = ConsoleUser(email=email, password_hash=hash_password(password), created_at=now,
                       password_changed_at=now)
    session.add(user)
    session.flush()
    return user


def set_membership(session: Session, user: ConsoleUser, organization_id: int, role: str) -> bool:
    """Give ``user`` ``role`` in the organisation; returns True when the membership is new."""
    if role not in ROLES:
        raise field_errors({"role": [f'"{role}" is not a valid choice.']})
    membership = session.scalar(select(ConsoleMembership).where(
        ConsoleMembership.user_id == user.id, ConsoleMembership.organization_id == organization_id))
    if membership is not None:
        membership.role = role
        return False
    session.add(ConsoleMembership(user_id=user.id, organization_id=organization_id, role=role, created_at=utcnow()))
    session.flush()
    return True


def memberships(session: Session, user_id: int) -> list[tuple[int, str, str]]:
    """(organisation id, name, role) of every organisation the user belongs to, by name."""
    rows = session.execute(
        select(Organization.id, Organization.name, ConsoleMembership.role)
        .join(ConsoleMembership, ConsoleMembership.organization_id == Organization.id)
        .where(ConsoleMembership.user_id == user_id)
        .order_by(Organization.name, Organization.id)
    ).all()
    return [(int(row[0]), str(row[1]), str(row[2])) for row in rows]


@dataclass(frozen=True)
class SignInResult:
    user: ConsoleUser | None
    wait_seconds: int = 0  # > 0: refused unread because of the throttle


def sign_in(session: Session, email: str, password: str, address: str, now: datetime | None = None) -> SignInResult:
    """Check a sign-in attempt under the throttle. While a wait runs the attempt is refused
    without looking at the password (a right password too), so guessing gains nothing."""
    now = now or utcnow()
    email = normalise_email(email)
    keys = [throttle.key(throttle.ACCOUNT, email), throttle.key(throttle.ADDRESS, address)]
    wait = throttle.wait_seconds(session, keys, now)
    if wait:
        return SignInResult(None, wait)
    user = get_user(session, email) if email and len(email) <= 254 else None
    ok = verify_password(password[:1024], user.password_hash if user else dummy_hash())
    if user is None or not ok:
        throttle.record_failure(session, throttle.ACCOUNT, email, now)
        throttle.record_failure(session, throttle.ADDRESS, address, now)
        throttle.forget_stale(session, now)
        return SignInResult(None, throttle.wait_seconds(session, keys, now))
    if not memberships(session, user.id):
        return SignInResult(None)  # an account of no organisation signs in to nothing
    throttle.clear(session, throttle.ACCOUNT, email)
    user.last_sign_in_at = now
    return SignInResult(user)


def change_password(session: Session, user_id: int, current: str | None, new: str, confirm: str | None = None,
                    *, keep_session_id: str | None = None) -> None:
    """Set a new password and sign out every other session of the user. ``current`` is checked
    when given (the account page); the command line passes None."""
    user = session.get(ConsoleUser, user_id)
    if user is None:
        raise APIError(404, {"detail": "Not found."})
    errors: dict[str, list[str]] = {}
    if current is not None and not verify_password(current[:1024], user.password_hash):
        errors["current_password"] = ["Your current password is not correct."]
    problem = password_problem(new)
    if problem:
        errors["new_password"] = [problem]
    elif confirm is not None and confirm != new:
        errors["confirm_password"] = ["The two passwords do not match."]
    if errors:
        raise field_errors(errors)
    user.password_hash = hash_password(new)
    user.password_changed_at = utcnow()
    condition = ConsoleSession.user_id == user.id
    if keep_session_id is not None:
        condition = condition & (ConsoleSession.id != keep_session_id)
    session.execute(delete(ConsoleSession).where(condition))


def set_locale(session: Session, user_id: int, locale: str | None) -> None:
    from openmaac.console.i18n import LOCALES

    if locale is not None and locale not in LOCALES:
        raise field_errors({"locale": [f'"{locale}" is not a valid choice.']})
    user = session.get(ConsoleUser, user_id)
    if user is None:
        raise APIError(404, {"detail": "Not found."})
    user.locale = locale


def list_users(session: Session, organization_id: int | None = None) -> list[tuple[ConsoleUser, list[tuple[int, str, str]]]]:
    query = select(ConsoleUser).order_by(ConsoleUser.email)
    if organization_id is not None:
        query = query.join(ConsoleMembership, ConsoleMembership.user_id == ConsoleUser.id).where(
            ConsoleMembership.organization_id == organization_id)
    return [(user, memberships(session, user.id)) for user in session.scalars(query).all()]


def count_users(session: Session) -> int:
    from sqlalchemy import func

    return int(session.scalar(select(func.count()).select_from(ConsoleUser)) or 0)
