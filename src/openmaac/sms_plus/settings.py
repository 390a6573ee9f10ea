"""SMS+ timing knobs read from the environment (each call reads it again, so tests and
operators can change them without a restart).

``OPENMAAC_SMS_PLUS_MINUTE_SECONDS`` (default 60): how many real seconds one API "minute"
lasts. ``fallback_period``, the SMS retry window and the SMS callback timeout are all given in
minutes; tests set this to a fraction of a second so a 1-minute fallback happens at once.
"""

from __future__ import annotations

import os
from datetime import timedelta

DEFAULT_MINUTE_SECONDS = 60.0
SMS_RETRY_INTERVAL_MINUTES = 1.0
DISPATCH_SAFETY_NET_SECONDS = 120.0


def minute_seconds() -> float:
    raw = os.environ.get("OPENMAAC_SMS_PLUS_MINUTE_SECONDS", "")
    try:
        value = float(raw) if raw else DEFAULT_MINUTE_SECONDS
    except ValueError:
        value = DEFAULT_MINUTE_SECONDS
    return max(value, 0.0)


def minutes(value: float) -> timedelta:
    """``value`` API minutes as a real duration."""
    return timedelta(seconds=value * minute_seconds())
