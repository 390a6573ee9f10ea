"""The LINE simulator's world: channels (Official Accounts), users and who follows whom.

Kept in memory, guarded by one lock: the simulator is a sandbox and a test double, and a
restart of it is a restart of "LINE". Nothing here imports openmaac: a fake that shares code
with what it checks hides both bugs.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

log = logging.getLogger("openmaac.simulators.line")


class ChannelDirectory(Protocol):
    """Where the simulator finds Official Accounts it was not told about (optional).

    A host that keeps channels elsewhere (openmaac: its database) passes one to
    ``SimulatorState``; each answer is a mapping with ``channel_id``, ``channel_secret``,
    ``access_token`` and ``webhook_url``. The simulator asks on a miss (an unknown channel id or
    access token) and when it lists its channels, so a channel created by another process is
    known the first time anyone uses it, without registration or a race."""

    def by_id(self, channel_id: str) -> Mapping[str, Any] | None: ...

    def by_token(self, access_token: str) -> Mapping[str, Any] | None: ...

    def all(self) -> Sequence[Mapping[str, Any]]: ...


# LINE counts a month's messages in Japan time (the Messaging API reference: "the current month")
LINE_TIME = timezone(timedelta(hours=9))


def current_month() -> str:
    return datetime.now(LINE_TIME).strftime("%Y-%m")


# what LINE's user ids look like; a send to anything else fails
LINE_USER_ID = re.compile(r"^U[0-9a-f]{32}$")


def new_user_id() -> str:
    """A LINE user id: ``U`` and 32 lowercase hex digits."""
    return "U" + secrets.token_hex(16)


_ULID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_webhook_event_id() -> str:
    """A ULID, as LINE's ``webhookEventId`` is: 48-bit ms time + 80 random bits, Crockford base32."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_ULID_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


@dataclass
class Channel:
    channel_id: str
    channel_secret: str
    access_token: str
    webhook_url: str | None = None
    bot_user_id: str = field(default_factory=new_user_id)
    display_name: str = "openmaac OA"
    # user id -> "follow" | "blocked"; a user never seen is absent
    friendships: dict[str, str] = field(default_factory=dict)
    # --- messaging ---
    # endpoint ("push", "multicast", "pnp") -> token bucket; LINE's limits by default
    buckets: dict[str, TokenBucket] = field(default_factory=lambda: {
        endpoint: TokenBucket(rate) for endpoint, rate in DEFAULT_RATES.items()})
    monthly_quota: int | None = None  # messages (recipients) a month; None = unlimited
    quota_used: int = 0  # messages delivered in quota_month (or set through the admin API)
    quota_month: str = field(default_factory=current_month)
    # X-Line-Retry-Key -> (accepted request id, sentMessages, accepted at (monotonic))
    retry_keys: dict[str, tuple[str, list[dict[str, Any]], float]] = field(default_factory=dict)
    pnp_delivery_delay: float = 0.2  # seconds between an accepted PNP push and its delivery webhook
    # running totals of the Messaging API calls answered ("push 200": n, ...) and messages delivered
    counters: dict[str, int] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "webhook_url": self.webhook_url,
            "bot_user_id": self.bot_user_id,
            "friends": sum(1 for status in self.friendships.values() if status == "follow"),
            "blocked": sum(1 for status in self.friendships.values() if status == "blocked"),
        }


class SharedDelivery:
    """One message object of one multicast, as each of its recipients received it: kept once for
    the call, and each recipient's inbox holds a reference to it until the inbox is read, when
    it becomes that recipient's own entry (its message id drawn then; a multicast answers no
    ids, so nobody saw one before). 500 recipients then cost 500 list appends, not 500 entries,
    ids and their lists; what the inbox shows is the same."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields  # an entry's fields but its message id, opens and clicks

    @property
    def channel_id(self) -> str:
        return str(self.fields["channel_id"])


@dataclass
class User:
    user_id: str
    display_name: str
    picture_url: str | None = None
    status_message: str | None = None
    language: str = "zh-TW"
    phone: str | None = None  # E.164, for LINE notification messages (PNP)
    # every message the user received, in order: entries (dicts, see messaging.deliver) or
    # SharedDelivery references, which ``entries()`` turns into entries; read it through that
    inbox: list[Any] = field(default_factory=list)

    def entries(self, new_message_id: Callable[[], str]) -> list[dict[str, Any]]:
        """The inbox, every message an entry of its own (call under the lock): a multicast's
        shared record becomes this user's entry, with an id of ``new_message_id()``, once."""
        inbox = self.inbox
        for index, entry in enumerate(inbox):
            if type(entry) is SharedDelivery:
                inbox[index] = {"message_id": new_message_id(), **entry.fields, "opens": [], "clicks": []}
        return inbox

    def received_from(self, channel_id: str) -> int:
        """How many messages of the channel the user received (without turning shared records
        into entries)."""
        return sum(1 for entry in self.inbox
                   if (entry.channel_id if type(entry) is SharedDelivery else entry["channel_id"]) == channel_id)

    def public(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "display_name": self.display_name,
            "picture_url": self.picture_url,
            "status_message": self.status_message,
            "language": self.language,
            "phone": self.phone,
        }

    def profile(self) -> dict[str, Any]:
        """The body of LINE's ``GET /v2/bot/profile/{userId}``."""
        body: dict[str, Any] = {"userId": self.user_id, "displayName": self.display_name, "language": self.language}
        if self.picture_url:
            body["pictureUrl"] = self.picture_url
        if self.status_message:
            body["statusMessage"] = self.status_message
        return body


# LINE's per-channel rate limits, requests per second (the LINE Messaging API reference, "Rate limits")
DEFAULT_RATES: dict[str, float] = {"push": 2000.0, "multicast": 200.0, "pnp": 2000.0}


class TokenBucket:
    """``rate`` requests/second with bursts up to ``burst`` (one second's worth by default)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self.tokens = self.burst
        self.updated = time.monotonic()

    def take(self, cost: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def public(self) -> dict[str, float]:
        return {"rate": self.rate, "burst": self.burst}


@dataclass
class Fault:
    """An injected failure for the next ``count`` matching requests (see faults.py)."""

    kind: str
    endpoint: str = "*"
    channel_id: str | None = None
    count: int = 1
    seconds: float = 0.0

    def public(self) -> dict[str, Any]:
        return {"kind": self.kind, "endpoint": self.endpoint, "channel_id": self.channel_id,
                "count": self.count, "seconds": self.seconds}


class SimulatorState:
    def __init__(self, directory: ChannelDirectory | None = None) -> None:
        self.directory = directory
        self.lock = threading.RLock()
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, User] = {}
        # every webhook the simulator sent: channel, event types, status answered
        self.webhook_log: list[dict[str, Any]] = []
        # --- messaging ---
        self.faults: list[Fault] = []
        # every Messaging API call answered: endpoint, status, retry key, recipients, ...
        self.request_log: list[dict[str, Any]] = []
        # message id -> (user id, index in the user's inbox)
        self.message_index: dict[str, tuple[str, int]] = {}
        # users made with an id LINE would never issue (an admin's choice): no send reaches them
        self.unaddressable: set[str] = set()

    def upsert_channel(self, channel_id: str, channel_secret: str, access_token: str,
                       webhook_url: str | None) -> Channel:
        with self.lock:
            channel = self.channels.get(channel_id)
            if channel is None:
                channel = Channel(channel_id, channel_secret, access_token, webhook_url)
                self.channels[channel_id] = channel
            else:
                channel.channel_secret = channel_secret
                channel.access_token = access_token
                channel.webhook_url = webhook_url
            return channel

    def channel_by_token(self, access_token: str) -> Channel | None:
        with self.lock:
            for channel in self.channels.values():
                if secrets.compare_digest(channel.access_token, access_token):
                    return channel
        if self.directory is None:
            return None
        return self._learn(self._ask(self.directory.by_token, access_token))

    def known_channel(self, channel_id: str) -> Channel | None:
        """The channel if the simulator holds it already (no directory look-up)."""
        with self.lock:
            return self.channels.get(channel_id)

    def channel(self, channel_id: str) -> Channel | None:
        """The channel ``channel_id``: held, or found in the directory (call without the lock:
        the directory may be a database)."""
        found = self.known_channel(channel_id)
        if found is not None or self.directory is None:
            return found
        return self._learn(self._ask(self.directory.by_id, channel_id))

    def sync_directory(self) -> int:
        """Take in every channel of the directory the simulator does not hold; how many."""
        if self.directory is None:
            return 0
        records = self._ask(self.directory.all) or []
        with self.lock:
            fresh = [record for record in records if str(record["channel_id"]) not in self.channels]
            for record in fresh:
                self._learn(record)
        return len(fresh)

    @staticmethod
    def _ask(question: Callable[..., Any], *args: Any) -> Any:
        try:
            return question(*args)
        except Exception:  # an unreachable directory is "not found", never an error of LINE's API
            log.warning("the channel directory failed", exc_info=True)
            return None

    def _learn(self, record: Mapping[str, Any] | None) -> Channel | None:
        """Hold a channel the directory gave. A channel already held keeps its friendships and the
        webhook URL set through the admin API; its secret and token follow the directory."""
        if record is None:
            return None
        with self.lock:
            channel = self.channels.get(str(record["channel_id"]))
            if channel is None:
                return self.upsert_channel(str(record["channel_id"]), str(record["channel_secret"]),
                                           str(record["access_token"]), record.get("webhook_url"))
            channel.channel_secret = str(record["channel_secret"])
            channel.access_token = str(record["access_token"])
            return channel

    def add_user(self, display_name: str | None = None, **attributes: Any) -> User:
        with self.lock:
            user_id = attributes.pop("user_id", None) or new_user_id()
            user = User(user_id=user_id, display_name=display_name or f"Simulated {user_id[1:7]}", **attributes)
            self.users[user.user_id] = user
            if not LINE_USER_ID.match(user.user_id):
                self.unaddressable.add(user.user_id)
            return user

    def reset(self) -> None:
        with self.lock:
            self.channels.clear()
            self.users.clear()
            self.webhook_log.clear()
            self.faults.clear()
            self.request_log.clear()
            self.message_index.clear()
            self.unaddressable.clear()
