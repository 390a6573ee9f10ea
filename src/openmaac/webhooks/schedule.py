"""When a failed webhook delivery is tried again, and when an endpoint is given up on.

MAAC OpenAPI v1.1.48 retries after 1 s, 2 s and 4 s (CDH OpenAPI 2.0.1: "up to 3 retries")
and then drops the event, so a receiver down for more than ~7 s loses events. openmaac keeps
those three retries unchanged and then goes on, like Svix and Stripe, on a schedule of
minutes to hours (Svix's: 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), over about 3 days.
"""

from __future__ import annotations

from datetime import timedelta

MINUTE = 60.0
HOUR = 60 * MINUTE

# The waits after attempts 1, 2, 3, ... (seconds). The first three are MAAC's.
FAST_RETRY_DELAYS = (1.0, 2.0, 4.0)
LONG_RETRY_DELAYS = (5 * MINUTE, 30 * MINUTE, 2 * HOUR, 5 * HOUR) + (10 * HOUR,) * 6
RETRY_DELAYS = FAST_RETRY_DELAYS + LONG_RETRY_DELAYS
MAX_ATTEMPTS = 1 + len(RETRY_DELAYS)                      # 14: the first try and 13 retries
RETRY_WINDOW = timedelta(seconds=sum(RETRY_DELAYS))      # 67 h 35 min 7 s from first to last attempt

# An endpoint every attempt to which has failed for this long (no success in between) is
# deactivated (Svix: 5 days). Longer than RETRY_WINDOW, so it takes new events failing too,
# not only the retries of old ones.
DISABLE_AFTER = timedelta(days=5)


def retry_delay(attempts: int) -> float:
    """The wait after the ``attempts``-th attempt failed (``attempts`` < MAX_ATTEMPTS)."""
    return RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]


def waits_long(attempts: int) -> bool:
    """Whether the retry after the ``attempts``-th failed attempt is in the long part of the
    schedule (the delivery then stops holding back its contact's later events)."""
    return attempts > len(FAST_RETRY_DELAYS)
