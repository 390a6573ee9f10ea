"""The CDH domain's clock: UTC now, plus an offset tests move forward.

A task "still running after 3 hours fails" and an export link "is valid for 7 days": tests
prove both by advancing this clock in the server's process instead of waiting.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from openmaac.db.base import utcnow

_offset = timedelta(0)


def now() -> datetime:
    return utcnow() + _offset


def advance(delta: timedelta) -> None:
    global _offset
    _offset += delta


def reset() -> None:
    global _offset
    _offset = timedelta(0)
