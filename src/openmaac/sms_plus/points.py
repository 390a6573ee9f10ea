"""SMS points: a balance per organisation, debited atomically, with a ledger.

Sending a message that may end as an SMS holds the points of its SMS (its segment count) at
request time; the hold becomes a charge when the SMS provider accepts the SMS, and is released
when the message ends without one (delivered through LINE, or the SMS was never accepted).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from openmaac.db.base import UTCDateTime, insert_ignoring_conflicts, utcnow
from openmaac.db.driver import DriverStatement
from openmaac.sms_plus.models import SmsPointBalance, SmsPointEntry

# The balance is an INTEGER column (at most 2,147,483,647 on PostgreSQL). Top-ups stop at
# BALANCE_MAX, leaving the rest as room for the releases of points held meanwhile (a release
# gives back what a hold took, and may come after a top-up).
TOP_UP_MAX = 1_000_000_000
BALANCE_MAX = 2_000_000_000


class BalanceFull(ValueError):
    """A top-up that would take the balance over BALANCE_MAX; ``room`` is what may still be added."""

    def __init__(self, room: int) -> None:
        super().__init__(f"the balance may not exceed {BALANCE_MAX} points: at most {room} more")
        self.room = room


def _ensure_row(session: Session, organization_id: int) -> None:
    session.execute(insert_ignoring_conflicts(session, SmsPointBalance, ["organization_id"])
                    .values(organization_id=organization_id, balance=0, updated_at=utcnow()))


def balance(session: Session, organization_id: int) -> int:
    value = session.scalar(
        select(SmsPointBalance.balance).where(SmsPointBalance.organization_id == organization_id)
    )
    return int(value or 0)


_BALANCES = SmsPointBalance.__table__.c
_ENTRIES = SmsPointEntry.__table__


def _balance_update(*, funds: bool, limit: bool) -> Any:
    amount = bindparam("amount", type_=Integer())
    condition = [_BALANCES.organization_id == bindparam("org")]
    if funds:
        condition.append(_BALANCES.balance >= -amount)
    if limit:
        condition.append(_BALANCES.balance <= bindparam("limit", type_=Integer()) - amount)
    return (update(SmsPointBalance.__table__).where(*condition)
            .values(balance=_BALANCES.balance + amount, updated_at=bindparam("now", type_=UTCDateTime()))
            .returning(_BALANCES.balance))


# Built once with bound parameters: every SMS+ request holds points and every ended message
# releases them (building the statement cost more than running it); run on the driver's cursor
# (db/driver.py: SQLAlchemy's per-statement machinery cost more than SQLite's own work)
_BALANCE_UPDATES = {(funds, limit): DriverStatement(_balance_update(funds=funds, limit=limit))
                    for funds in (False, True) for limit in (False, True)}
_INSERT_ENTRY = DriverStatement(insert(_ENTRIES))


def _apply(session: Session, organization_id: int, amount: int, *, require_funds: bool,
           limit: int | None = None) -> int | None:
    """Add ``amount`` (negative: debit) to the balance in one atomic statement. Returns the new
    balance, or None when funds are short or the new balance would exceed ``limit``."""
    statement = _BALANCE_UPDATES[(require_funds and amount < 0, limit is not None)]
    params = {"org": organization_id, "amount": amount, "now": utcnow()}
    if limit is not None:
        params["limit"] = limit
    connection = session.connection()
    row = statement.execute(connection, params).first()
    if row is None:
        if require_funds and amount < 0:
            return None  # too few points (or no balance at all: zero)
        _ensure_row(session, organization_id)  # the organisation's first top-up or release
        row = statement.execute(connection, params).first()
        if row is None:
            return None  # over the limit
    return int(row[0])


def _change(session: Session, organization_id: int, amount: int, *, kind: str, require_funds: bool,
            pnp_message_id: int | None = None, note: str | None = None, limit: int | None = None) -> int | None:
    """Add ``amount`` (negative: debit) with its ledger row. Returns the new balance, or None
    when funds are short or the balance would exceed ``limit``."""
    new_balance = _apply(session, organization_id, amount, require_funds=require_funds, limit=limit)
    if new_balance is None:
        return None
    _INSERT_ENTRY.execute(session.connection(), {
        "organization_id": organization_id, "kind": kind, "amount": amount, "balance_after": new_balance,
        "pnp_message_id": pnp_message_id, "note": note, "created_at": utcnow()})
    return new_balance


def top_up(session: Session, organization_id: int, amount: int, note: str | None = None) -> int:
    if not 0 < amount <= TOP_UP_MAX:
        raise ValueError(f"amount must be between 1 and {TOP_UP_MAX}")
    result = _change(session, organization_id, amount, kind="topup", require_funds=False, note=note,
                     limit=BALANCE_MAX)
    if result is None:
        raise BalanceFull(max(BALANCE_MAX - balance(session, organization_id), 0))
    return result


# PostgreSQL: a hold's debit and its ledger row in one statement (one round trip, not two); no
# row comes back when the funds are short (or the organisation has no balance yet)
_PG_HOLD = DriverStatement(text("""
WITH bal AS (UPDATE sms_point_balances SET balance = balance - :amount, updated_at = :now
             WHERE organization_id = :org AND balance >= :amount RETURNING balance)
INSERT INTO sms_point_entries (organization_id, kind, amount, balance_after, pnp_message_id, note, created_at)
SELECT :org, 'hold', -:amount, bal.balance, NULL, :note, :now FROM bal
RETURNING balance_after""").bindparams(bindparam("now", type_=UTCDateTime())))


def hold(session: Session, organization_id: int, amount: int, note: str | None = None) -> bool:
    """Reserve ``amount`` points; False (nothing changed) when the balance is too low."""
    if amount <= 0:
        return True
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        return _PG_HOLD.execute(connection, {"org": organization_id, "amount": amount, "now": utcnow(),
                                             "note": note}).first() is not None
    return _change(session, organization_id, -amount, kind="hold", require_funds=True, note=note) is not None


def release_many(session: Session, organization_id: int, releases: list[tuple[int | None, int]]) -> None:
    """Release the holds ``(pnp_message_id, amount)`` of one or many messages: one balance
    update, one ledger row per message (with the balance as it stood after it, in the order given)."""
    releases = [(message_id, amount) for message_id, amount in releases if amount > 0]
    if not releases:
        return
    total = sum(amount for _message_id, amount in releases)
    new_balance = _apply(session, organization_id, total, require_funds=False)
    assert new_balance is not None
    running = new_balance - total
    now = utcnow()
    entries = []
    for message_id, amount in releases:
        running += amount
        entries.append({"organization_id": organization_id, "kind": "release", "amount": amount,
                        "balance_after": running, "pnp_message_id": message_id, "note": None, "created_at": now})
    _INSERT_ENTRY.execute_many(session.connection(), entries)
