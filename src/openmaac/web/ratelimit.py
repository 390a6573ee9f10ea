"""Per-organisation API rate limits (MAAC OpenAPI v1.1.48), answered with 429 and ``Retry-After``.

A sliding one-second (or one-minute) window per (organisation, endpoint) in this process.
With several API processes behind a balancer each enforces the limit on its own share;
see docs/decisions.md.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from openmaac.web.errors import APIError

# name: (requests, per seconds)
LIMITS: dict[str, tuple[int, float]] = {
    "member_import": (15, 60.0),
    "push": (170, 1.0),
    "multicast": (10, 1.0),
    "enhanced_multicast": (170, 1.0),
    "pnp_push": (170, 1.0),
    "pnp_multicast": (10, 1.0),
}


class RateLimiter:
    def __init__(self) -> None:
        self._hits: dict[tuple[int, str], deque[float]] = {}
        self._lock = threading.Lock()
        self.overrides: dict[str, tuple[int, float]] = {}

    def check(self, organization_id: int, name: str) -> None:
        limit, period = self.overrides.get(name) or LIMITS[name]
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault((organization_id, name), deque())
            while hits and hits[0] <= now - period:
                hits.popleft()
            if len(hits) >= limit:
                wait = max(1, math.ceil(hits[0] + period - now))
                unit = "second" if wait == 1 else "seconds"
                raise APIError(
                    429,
                    {"detail": f"Request was throttled. Expected available in {wait} {unit}."},
                    headers={"Retry-After": str(wait)},
                )
            hits.append(now)

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


limiter = RateLimiter()


def _configured_overrides(value: str | None) -> dict[str, tuple[int, float]]:
    """``OPENMAAC_API_RATE_LIMITS="push=500/1,enhanced_multicast=1000/1"``: an operator (or a
    benchmark measuring the engine behind an endpoint) loosening or tightening limits by name."""
    overrides: dict[str, tuple[int, float]] = {}
    for part in (value or "").split(","):
        name, _, rule = part.strip().partition("=")
        if not name or not rule:
            continue
        count, _, period = rule.partition("/")
        if name.strip() in LIMITS:
            overrides[name.strip()] = (int(count), float(period or 1))
    return overrides


def _load_overrides() -> None:
    import os

    limiter.overrides.update(_configured_overrides(os.environ.get("OPENMAAC_API_RATE_LIMITS")))


_load_overrides()
