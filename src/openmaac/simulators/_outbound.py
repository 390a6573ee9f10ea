"""What the SMS and WhatsApp simulators share: fault injection, the message record, the
delayed callback sender and segment counting.

Imports nothing from openmaac outside openmaac.simulators (a fake that shares code with what
it checks hides both bugs), so segment counting is written again here.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Query

# --- numbers and segments -------------------------------------------------------------------


def canonical_number(number: str) -> str:
    """Digits only, Taiwan's local ``09XXXXXXXX`` as ``8869XXXXXXXX``: so that a fault set for
    ``+886912345678`` also matches Mitake's ``0912345678``."""
    digits = "".join(char for char in number if char.isdigit())
    if len(digits) == 10 and digits.startswith("09"):
        return "886" + digits[1:]
    return digits


_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXT = set("\f^{}\\[~]|€")


def count_segments(text: str) -> tuple[str, int]:
    gsm = all(char in _GSM_BASIC or char in _GSM_EXT for char in text)
    if gsm:
        sizes = [2 if char in _GSM_EXT else 1 for char in text]
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        sizes = [2 if ord(char) > 0xFFFF else 1 for char in text]
        single, multi, encoding = 70, 67, "UCS-2"
    if sum(sizes) <= single:
        return encoding, 1
    parts, used = 1, 0
    for size in sizes:
        if used + size > multi:
            parts, used = parts + 1, 0
        used += size
    return encoding, parts


def now_utc() -> datetime:
    return datetime.now(UTC)


# --- faults ---------------------------------------------------------------------------------


@dataclass
class TemporaryRule:
    count: int
    to: str | None = None  # canonical number, or None for any
    stage: str = "send"  # "send": the API answers a temporary error; "callback": the report does

    def public(self) -> dict[str, Any]:
        return {"count": self.count, "to": self.to, "stage": self.stage}


@dataclass
class Faults:
    blocked: set[str] = field(default_factory=set)
    invalid: set[str] = field(default_factory=set)
    sensitive_words: list[str] = field(default_factory=list)
    temporary_errors: list[TemporaryRule] = field(default_factory=list)
    no_callback: bool = False
    no_callback_numbers: set[str] = field(default_factory=set)
    latency_ms: int = 0
    server_errors: int = 0
    server_error_status: int = 500
    callback_delay_ms: int = 50

    def public(self) -> dict[str, Any]:
        return {
            "blocked_numbers": sorted(self.blocked),
            "invalid_numbers": sorted(self.invalid),
            "sensitive_words": list(self.sensitive_words),
            "temporary_errors": [rule.public() for rule in self.temporary_errors],
            "no_callback": self.no_callback,
            "no_callback_numbers": sorted(self.no_callback_numbers),
            "latency_ms": self.latency_ms,
            "server_errors": self.server_errors,
            "server_error_status": self.server_error_status,
            "callback_delay_ms": self.callback_delay_ms,
        }

    def update(self, changes: dict[str, Any]) -> None:
        """Apply an admin request: each key given replaces that fault (lists are whole lists)."""
        if "blocked_numbers" in changes:
            self.blocked = {canonical_number(n) for n in changes["blocked_numbers"] or []}
        if "invalid_numbers" in changes:
            self.invalid = {canonical_number(n) for n in changes["invalid_numbers"] or []}
        if "sensitive_words" in changes:
            self.sensitive_words = [str(word) for word in changes["sensitive_words"] or [] if str(word)]
        if "temporary_errors" in changes:
            rules = changes["temporary_errors"] or []
            if isinstance(rules, int):
                rules = [{"count": rules}]
            if isinstance(rules, dict):
                rules = [rules]
            self.temporary_errors = [
                TemporaryRule(count=int(rule.get("count", 1)),
                              to=canonical_number(rule["to"]) if rule.get("to") else None,
                              stage=str(rule.get("stage", "send")))
                for rule in rules
            ]
        if "no_callback" in changes:
            self.no_callback = bool(changes["no_callback"])
        if "no_callback_numbers" in changes:
            self.no_callback_numbers = {canonical_number(n) for n in changes["no_callback_numbers"] or []}
        if "latency_ms" in changes:
            self.latency_ms = max(0, int(changes["latency_ms"] or 0))
        if "server_errors" in changes:
            self.server_errors = max(0, int(changes["server_errors"] or 0))
        if "server_error_status" in changes:
            self.server_error_status = int(changes["server_error_status"] or 500)
        if "callback_delay_ms" in changes:
            self.callback_delay_ms = max(0, int(changes["callback_delay_ms"] or 0))

    def sensitive_word_in(self, text: str) -> str | None:
        lowered = text.lower()
        for word in self.sensitive_words:
            if word.lower() in lowered:
                return word
        return None

    def take_temporary(self, number: str, stage: str) -> bool:
        """Consume one temporary failure for this number at this stage, if a rule has one left."""
        for rule in self.temporary_errors:
            if rule.stage == stage and rule.count > 0 and rule.to in (None, number):
                rule.count -= 1
                return True
        return False

    def take_server_error(self) -> int | None:
        if self.server_errors > 0:
            self.server_errors -= 1
            return self.server_error_status
        return None

    def suppress_callback(self, number: str) -> bool:
        return self.no_callback or number in self.no_callback_numbers


# --- the simulator's world ------------------------------------------------------------------


class Dispatcher:
    """Runs callables (the callbacks) at their due time on ``lanes`` daemon threads, as a
    gateway posts many callbacks at once. Callables scheduled with the same ``key`` (one
    message's statuses) share a lane, so they run one after the other, in due order; a single
    thread posting one callback at a time capped a campaign at ~44 callbacks/s (each waits for
    the receiver's answer)."""

    def __init__(self, name: str, lanes: int = 8) -> None:
        self._lanes = [_Lane(f"{name}-{index}") for index in range(max(1, lanes))]
        self._next = itertools.count()

    def schedule(self, delay: float, fn: Callable[[], None], key: object = None) -> None:
        index = hash(key) if key is not None else next(self._next)
        self._lanes[index % len(self._lanes)].schedule(delay, fn)

    def pending(self) -> int:
        return sum(lane.pending() for lane in self._lanes)

    def stop(self) -> None:
        for lane in self._lanes:
            lane.stop()


class _Lane:
    """One daemon thread running callables at their due time, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._queue, (time.monotonic() + max(0.0, delay), next(self._counter), fn))
            if self._thread is None or not self._thread.is_alive():
                self._stopped = False
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._queue or self._queue[0][0] > time.monotonic()):
                    timeout = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._queue)
            try:
                fn()
            except Exception:  # noqa: BLE001 - a callback failure must not kill the sender
                pass


class World:
    """State of one simulator instance: faults, messages received, callbacks sent."""

    def __init__(self, name: str, callback_delay_ms: int = 50) -> None:
        self.lock = threading.RLock()
        self.callback_delay_ms = callback_delay_ms  # what a reset goes back to
        self.faults = self.fresh_faults()
        self.messages: list[dict[str, Any]] = []
        self.by_id: dict[str, dict[str, Any]] = {}
        self.dispatcher = Dispatcher(f"{name}-callbacks")

    def fresh_faults(self) -> Faults:
        return Faults(callback_delay_ms=self.callback_delay_ms)

    def record(self, message: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            message.setdefault("callbacks", [])
            message.setdefault("received_at", now_utc().isoformat())
            self.messages.append(message)
            if message.get("id"):
                self.by_id[str(message["id"])] = message
        return message

    def find(self, to: str | None = None, reference: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            rows = list(self.messages)
        if to:
            wanted = canonical_number(to)
            rows = [row for row in rows if canonical_number(str(row.get("to", ""))) == wanted]
        if reference:
            rows = [row for row in rows if row.get("reference") == reference]
        return rows

    def reset(self) -> None:
        with self.lock:
            self.faults = self.fresh_faults()
            self.messages.clear()
            self.by_id.clear()

    def callback_delay(self) -> float:
        return self.faults.callback_delay_ms / 1000.0


def admin_router(world: World, extra: Callable[[APIRouter], None] | None = None) -> APIRouter:
    """``/_admin/…``: fault injection and the record of received messages."""
    router = APIRouter(prefix="/_admin", tags=["simulator admin"])

    @router.get("/faults")
    def get_faults() -> dict[str, Any]:
        with world.lock:
            return world.faults.public()

    @router.post("/faults")
    def set_faults(changes: dict[str, Any] = Body(...)) -> dict[str, Any]:
        with world.lock:
            world.faults.update(changes)
            return world.faults.public()

    @router.delete("/faults")
    def clear_faults() -> dict[str, Any]:
        with world.lock:
            world.faults = world.fresh_faults()
            return world.faults.public()

    @router.get("/messages")
    def list_messages(to: str | None = Query(None), reference: str | None = Query(None)) -> dict[str, Any]:
        rows = world.find(to, reference)
        with world.lock:
            return {"count": len(rows), "results": [dict(row, callbacks=list(row["callbacks"])) for row in rows]}

    @router.post("/reset")
    def reset() -> dict[str, Any]:
        world.reset()
        return {"ok": True}

    if extra:
        extra(router)
    return router
