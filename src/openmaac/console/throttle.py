"""The sign-in throttle: failures counted per account and per client address in the database
(every process of one installation sees the same counts), answered with a growing wait rather
than a lock-out, so an attacker cannot lock a marketer out for good and guessing stays slow.

After ``limit`` failures whose gaps are each under ``WINDOW`` the key must wait ``FIRST_WAIT``,
doubling with every further failure up to ``MAX_WAIT``; a quiet ``WINDOW`` forgets the count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from openmaac.console.models import SignInThrottle
from openmaac.db.base import insert_ignoring_conflicts

WINDOW = timedelta(minutes=15)
FIRST_WAIT = timedelta(seconds=30)
MAX_WAIT = timedelta(minutes=15)


@dataclass(frozen=True)
class Rule:
    prefix: str
    limit: int  # failures allowed in the window before a wait


ACCOUNT = Rule("account:", 5)
# many people may share one address (an office behind one NAT): more failures before a wait
ADDRESS = Rule("address:", 20)


def key(rule: Rule, value: str) -> str:
    return (rule.prefix + value)[:320]


def wait_seconds(session: Session, keys: list[str], now: datetime) -> int:
    """Seconds until every one of ``keys`` may try again (0: now)."""
    rows = session.scalars(select(SignInThrottle.blocked_until).where(SignInThrottle.key.in_(keys))).all()
    remaining = [(until - now).total_seconds() for until in rows if until is not None and until > now]
    return int(max(remaining) + 0.999) if remaining else 0


def record_failure(session: Session, rule: Rule, value: str, now: datetime) -> None:
    name = key(rule, value)
    session.execute(insert_ignoring_conflicts(session, SignInThrottle.__table__, ["key"]).values(
        key=name, failures=0, last_failure_at=now, blocked_until=None))
    row = session.scalars(select(SignInThrottle).where(SignInThrottle.key == name).with_for_update()).one()
    failures = 1 if now - row.last_failure_at > WINDOW else row.failures + 1
    row.failures = failures
    row.last_failure_at = now
    if failures >= rule.limit:
        wait = min(FIRST_WAIT * 2 ** (failures - rule.limit), MAX_WAIT)
        row.blocked_until = now + wait


def clear(session: Session, rule: Rule, value: str) -> None:
    session.execute(delete(SignInThrottle).where(SignInThrottle.key == key(rule, value)))


def forget_stale(session: Session, now: datetime) -> None:
    """Rows whose window and wait are both over count nothing any more."""
    session.execute(delete(SignInThrottle).where(
        SignInThrottle.last_failure_at < now - WINDOW - MAX_WAIT))
