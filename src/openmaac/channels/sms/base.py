"""The provider-neutral side of outbound text channels: what a send answers, what a callback says.

Every adapter (Twilio, Mitake, WhatsApp) maps its own codes onto these few categories, so the
code that decides "retry, give up, or fall back" never looks at a provider's raw codes; the raw
codes are kept beside them for logs and reports.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx

from openmaac.channels.guarded_http import DestinationRefused

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


class ErrorCategory(enum.StrEnum):
    """Why a message was not (or will not be) delivered, as the caller must act on it."""

    INVALID_NUMBER = "invalid_number"  # never retry this number on this channel
    BLOCKED = "blocked"  # the recipient opted out / blocked / SMS disabled
    CONTENT_REJECTED = "content_rejected"  # the text was refused (filtered words, bad content)
    TEMPORARY = "temporary"  # retry later with backoff (5xx, throttling, network, handset off)
    AUTH_OR_CONFIG = "auth_or_config"  # credentials or account settings: alert, do not retry
    INSUFFICIENT_BALANCE = "insufficient_balance"  # out of credit / points
    INVALID_REQUEST = "invalid_request"  # a bug on our side: the request itself was wrong
    UNKNOWN = "unknown"


class DeliveryStatus(enum.StrEnum):
    """A delivery report's status, normalised."""

    SENT = "sent"  # progress only: queued / accepted / handed to the carrier; more will follow
    DELIVERED = "delivered"  # final: on the handset (WhatsApp ``read`` is also delivered)
    FAILED = "failed"  # final: will not be delivered; do not retry the same message
    TEMPORARY_ERROR = "temporary_error"  # final for this attempt: not delivered, a retry may work

    @property
    def final(self) -> bool:
        return self is not DeliveryStatus.SENT


@dataclass(frozen=True)
class SendResult:
    """What the provider answered to one send.

    ``accepted`` True means the provider took the message and ``provider_message_id`` is set.
    Otherwise ``error_category`` says what to do. ``outcome_unknown`` is True when the request
    may have reached the provider but no answer came back (read timeout, connection dropped
    mid-request): the message may or may not have been accepted.
    """

    accepted: bool
    provider_message_id: str | None = None
    error_category: ErrorCategory | None = None
    error_code: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    duplicate: bool = False  # the provider de-duplicated it against an earlier accepted send
    outcome_unknown: bool = False
    segments: int | None = None
    raw: Any = None

    @property
    def retryable(self) -> bool:
        return not self.accepted and self.error_category is ErrorCategory.TEMPORARY


@dataclass(frozen=True)
class DeliveryReport:
    """One status callback (delivery report), normalised."""

    provider_message_id: str
    status: DeliveryStatus
    raw_status: str
    error_code: str | None = None
    error_message: str | None = None
    error_category: ErrorCategory | None = None
    reference: str | None = None  # the ``reference`` given to send(), when the provider echoes it
    recipient: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.status.final


@dataclass(frozen=True)
class InboundRequest:
    """An HTTP request as received by our callback endpoint, framework-free.

    ``url`` must be the URL the provider called, as the provider saw it (the public URL given as
    callback URL, with its query string), not one rebuilt behind a proxy: Twilio signs it.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None

    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))

    def form(self) -> dict[str, str]:
        if not self.body:
            return {}
        # a body that is not UTF-8 is nobody's delivery report: its signature cannot match either
        return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))


@dataclass(frozen=True)
class CallbackAck:
    """The answer our callback endpoint must give the provider."""

    status_code: int = 200
    media_type: str = "text/plain"
    body: str = ""


class CallbackRejected(Exception):
    """A callback that is not authentic (bad signature/token) or not understood: answer 4xx."""

    def __init__(self, reason: str, status_code: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


@runtime_checkable
class SmsProvider(Protocol):
    """An SMS gateway. Implementations: TwilioProvider, MitakeProvider."""

    name: str

    def send(self, to_e164: str, text: str, *, reference: str | None = None,
             callback_url: str | None = None) -> SendResult:
        """Submit one SMS. ``reference`` is the caller's stable id for this message (idempotency
        key where the provider has one, and echoed back in delivery reports)."""
        ...

    def parse_status_callback(self, request: InboundRequest) -> DeliveryReport:
        """Verify and parse one delivery report; raises CallbackRejected when not authentic."""
        ...

    def callback_ack(self, report: DeliveryReport | None) -> CallbackAck:
        """What to answer the provider once the report is stored (None: it was rejected)."""
        ...

    def query_status(self, provider_message_id: str) -> DeliveryReport | None:
        """Ask the provider for a message's current status (for missing callbacks)."""
        ...

    def close(self) -> None:
        ...


# --- helpers shared by adapters -------------------------------------------------------------

REFERENCE_PARAM = "omref"
SIGNATURE_PARAM = "omsig"


def path_segment(value: str) -> str:
    """``value`` as one URL path segment: an account id or message id taken from settings or
    from an answer can neither add segments (``/``), start a query (``?``) nor climb (``..``)."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted.strip(".") == "" else quoted


def add_query_params(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` appended to its query string (existing parameters kept)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.extend((key, value) for key, value in params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def reference_token(secret: str, reference: str) -> str:
    """A URL token proving a callback URL was made by us for this reference (hex HMAC-SHA256)."""
    return hmac.new(secret.encode("utf-8"), b"openmaac-callback:" + reference.encode("utf-8"),
                    hashlib.sha256).hexdigest()[:32]


def transport_failure(exc: httpx.HTTPError) -> SendResult:
    """A send that got no HTTP answer. ConnectError/ConnectTimeout: surely not sent; others: unknown.
    A destination the guard refused is a configuration error: retrying cannot help."""
    if isinstance(exc, DestinationRefused):
        return SendResult(accepted=False, error_category=ErrorCategory.AUTH_OR_CONFIG,
                          error_code="destination_refused", error_message=str(exc))
    surely_not_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return SendResult(
        accepted=False,
        error_category=ErrorCategory.TEMPORARY,
        error_code="network",
        error_message=f"{type(exc).__name__}: {exc}",
        outcome_unknown=not surely_not_sent,
    )
