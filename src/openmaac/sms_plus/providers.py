"""An organisation's SMS gateway (and WhatsApp number) for SMS+.

Without a stored configuration an organisation sends through the built-in Twilio simulator
(``{public base URL}/_simulators/twilio`` with the simulator's demo account, whose secrets are
derived from the server secret: ``simulator_accounts``), so a fresh install works offline.
``PUT /openapi/v1/pnp/sms_provider/`` (extension) chooses Twilio or Mitake, their credentials
and base URL (the demo credentials fill in only while no base URL is stored). Delivery reports come back to
``/sms_plus/callbacks/{twilio|mitake}/{organization_id}``, verified by the adapter
(Twilio's signature; an HMAC token in Mitake's callback URL).

Where requests go: a stored ``base_url`` (and ``whatsapp.base_url``) is the tenant's choice,
checked at PUT and on every connection by ``openmaac.channels.destinations`` (the credentials
and texts sent there must not reach this server's network). No stored URL means "the built-in
simulator", resolved from the operator's ``OPENMAAC_PUBLIC_BASE_URL`` when a request is made:
the only unchecked destination, and one no tenant can aim elsewhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import Any

import httpx
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from openmaac.channels import destinations
from openmaac.channels.guarded_http import shared_guarded_client
from openmaac.channels.per_thread import per_thread_client
from openmaac.channels.sms.base import (
    DEFAULT_TIMEOUT,
    CallbackAck,
    CallbackRejected,
    DeliveryReport,
    ErrorCategory,
    InboundRequest,
    SendResult,
    SmsProvider,
)
from openmaac.channels.sms.mitake import MitakeProvider
from openmaac.channels.sms.twilio import TwilioProvider
from openmaac.channels.whatsapp import DEFAULT_API_VERSION, WhatsAppClient
from openmaac.config import SIMULATOR_ADMIN_HEADER, Settings, derived_secret, get_settings
from openmaac.db.base import insert_ignoring_conflicts, utcnow
from openmaac.db.driver import DriverStatement
from openmaac.sms_plus.models import SmsProviderConfig
from openmaac.web.errors import field_errors
from openmaac.web.limits import MAX_INT32

PROVIDERS = ("twilio", "mitake")
SECRET_KEYS = ("auth_token", "password", "access_token", "app_secret")
DEFAULT_CALLBACK_TIMEOUT_MINUTES = 1440
DEFAULT_RETRY_WINDOW_MINUTES = 60
DEFAULT_WHATSAPP_WAIT_MINUTES = 60


@dataclass(frozen=True)
class ProviderConfig:
    organization_id: int
    provider: str
    base_url: str
    credentials: dict[str, str]
    whatsapp: dict[str, str] = field(default_factory=dict)
    callback_timeout_minutes: int = DEFAULT_CALLBACK_TIMEOUT_MINUTES
    retry_window_minutes: int = DEFAULT_RETRY_WINDOW_MINUTES
    stored: bool = False
    whatsapp_wait_minutes: int = DEFAULT_WHATSAPP_WAIT_MINUTES
    builtin: bool = True            # base_url is the built-in simulator (no URL stored)
    whatsapp_builtin: bool = True   # whatsapp["base_url"] is the built-in simulator


def simulator_accounts(settings: Settings | None = None) -> dict[str, dict[str, str]]:
    """The demo accounts of the built-in simulators (src/openmaac/simulators/{twilio,mitake,
    whatsapp}) on this server, by simulator: what ``openmaac serve`` mounts them with and what an
    organisation without credentials of its own sends and verifies callbacks with. The ids are
    fixed; the secrets are derived from the server secret, since a callback signed with them
    is trusted: fixed ones, readable in the source, would let anyone forge delivery reports."""
    key = (settings or get_settings()).secret_key

    def secret(name: str) -> str:
        return derived_secret(key, f"openmaac-simulator-{name}")[:32]

    return {
        "twilio": {"account_sid": "AC" + "0" * 31 + "1", "auth_token": secret("twilio-auth-token"),
                   "from_number": "+15005550006"},
        "mitake": {"username": "simulator", "password": secret("mitake-password")},
        "whatsapp": {"phone_number_id": "106540352242922", "access_token": secret("whatsapp-access-token"),
                     "app_secret": secret("whatsapp-app-secret")},
    }


def simulator_url(name: str) -> str:
    """The built-in simulator ``name`` as mounted by ``openmaac serve`` (operator settings)."""
    return get_settings().public_base_url.rstrip("/") + f"/_simulators/{name}"


def _is_builtin(url: object, name: str) -> bool:
    """No URL, or exactly this server's simulator URL (stored before it meant "built-in")."""
    return url is None or url == "" or (isinstance(url, str) and url.strip().rstrip("/") == simulator_url(name))


# one read on the driver's cursor (every delivery report and SMS batch reads the configuration)
_CONFIG_COLUMNS = tuple(SmsProviderConfig.__table__.c)
_CONFIG = DriverStatement(select(*_CONFIG_COLUMNS).where(
    SmsProviderConfig.__table__.c.organization_id == bindparam("org")))


def config_of(session: Session | Connection, organization_id: int) -> ProviderConfig:
    """The organisation's configuration (read in a session, or on a ``Database.lookup()``
    connection). The simulators' demo credentials fill in only what it sends to the built-in
    simulators; a gateway of its own gets exactly the stored credentials."""
    demo = simulator_accounts()
    conn = session if isinstance(session, Connection) else session.connection()
    found = _CONFIG.execute(conn, {"org": organization_id}).first()
    if found is None:
        return ProviderConfig(organization_id, "twilio", simulator_url("twilio"), demo["twilio"],
                              whatsapp={**demo["whatsapp"], "base_url": simulator_url("whatsapp")})
    row = SimpleNamespace(**{column.key: value for column, value in zip(_CONFIG_COLUMNS, found, strict=True)})
    builtin = _is_builtin(row.base_url, row.provider)
    credentials = {**(demo.get(row.provider, {}) if builtin else {}), **(row.credentials or {})}
    stored_whatsapp = dict(row.whatsapp or {})
    whatsapp_builtin = _is_builtin(stored_whatsapp.pop("base_url", None), "whatsapp")
    whatsapp = {**(demo["whatsapp"] if whatsapp_builtin else {}), **stored_whatsapp,
                "base_url": simulator_url("whatsapp") if whatsapp_builtin
                else str((row.whatsapp or {})["base_url"]).strip()}
    return ProviderConfig(organization_id, row.provider, simulator_url(row.provider) if builtin else str(row.base_url),
                          credentials, whatsapp=whatsapp, callback_timeout_minutes=row.callback_timeout_minutes,
                          retry_window_minutes=row.retry_window_minutes, stored=True,
                          whatsapp_wait_minutes=row.whatsapp_wait_minutes, builtin=builtin,
                          whatsapp_builtin=whatsapp_builtin)


# --- the configuration as this process last read it (status callbacks answered on the event loop) --

RECENT_CONFIG_SECONDS = 5.0
_recent: dict[int, tuple[float, ProviderConfig]] = {}
_recent_lock = threading.Lock()


def remember(config: ProviderConfig) -> None:
    """Note the configuration a callback was just verified with (see :func:`recent_config`)."""
    with _recent_lock:
        _recent[config.organization_id] = (time.monotonic(), config)


def recent_config(organization_id: int) -> ProviderConfig | None:
    """The organisation's configuration as this process read it less than
    ``RECENT_CONFIG_SECONDS`` ago (saved since in this process: None). Only for answering a
    status callback that changes nothing without a database read: anything else, and any
    callback it does not verify, reads the configuration afresh."""
    with _recent_lock:
        found = _recent.get(organization_id)
    if found is None or time.monotonic() - found[0] >= RECENT_CONFIG_SECONDS:
        return None
    return found[1]


def _forget_recent(organization_id: int) -> None:
    with _recent_lock:
        _recent.pop(organization_id, None)


def callback_secret(organization_id: int) -> str:
    return derived_secret(get_settings().secret_key, f"sms-callback:{organization_id}")


def callback_url(config: ProviderConfig) -> str:
    base = get_settings().public_base_url.rstrip("/")
    return f"{base}/sms_plus/callbacks/{config.provider}/{config.organization_id}"


_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=32)
_simulator_http: httpx.Client | None = None
_http_lock = threading.Lock()


def simulator_http() -> httpx.Client:
    """One pooled client per process for the built-in simulators (building one costs
    milliseconds: its TLS context; keep-alive connections are reused across sends). It signs
    its requests with the simulator admin key, so this server's own status look-ups reach its
    simulators through a proxy too (see openmaac.web.simulator_access)."""
    global _simulator_http
    with _http_lock:
        if _simulator_http is None:
            # a pool per thread (openmaac.channels.per_thread): a batch's sends run on many threads
            _simulator_http = per_thread_client(DEFAULT_TIMEOUT, _LIMITS, trust_env=False,
                                                headers={SIMULATOR_ADMIN_HEADER: get_settings().simulator_admin_key})
        return _simulator_http


def tenant_http() -> httpx.Client:
    """The pooled client for gateways an organisation configured: connects only to addresses
    ``openmaac.channels.destinations`` allows, checked at every connection."""
    return shared_guarded_client(DEFAULT_TIMEOUT, _LIMITS)


REQUIRED_CREDENTIALS = {"twilio": (("account_sid",), ("auth_token",), ("from_number", "messaging_service_sid")),
                        "mitake": (("username",), ("password",))}


class UnconfiguredProvider:
    """An organisation's own gateway without the credentials it needs: nothing is sent (the
    send fails as a configuration error) and no delivery report can be authenticated."""

    def __init__(self, name: str, missing: list[str]) -> None:
        self.name = name
        self.missing = missing

    def send(self, to_e164: str, text: str, *, reference: str | None = None,
             callback_url: str | None = None) -> SendResult:
        return SendResult(accepted=False, error_category=ErrorCategory.AUTH_OR_CONFIG, error_code="missing_credentials",
                          error_message=f"{self.name} credentials lack {', '.join(self.missing)}")

    def parse_status_callback(self, request: InboundRequest) -> DeliveryReport:
        raise CallbackRejected("no credentials to verify the callback with")

    def callback_ack(self, report: DeliveryReport | None) -> CallbackAck:
        return CallbackAck(status_code=403)

    def query_status(self, provider_message_id: str) -> DeliveryReport | None:
        return None

    def close(self) -> None:
        pass


def build_provider(config: ProviderConfig) -> SmsProvider:
    creds = config.credentials
    missing = [" or ".join(names) for names in REQUIRED_CREDENTIALS.get(config.provider, ())
               if not any(creds.get(name) for name in names)]
    if missing:
        return UnconfiguredProvider(config.provider, missing)
    http = simulator_http() if config.builtin else tenant_http()
    if config.provider == "mitake":
        return MitakeProvider(creds["username"], creds["password"], base_url=config.base_url,
                              callback_secret=callback_secret(config.organization_id), http=http)
    return TwilioProvider(creds["account_sid"], creds["auth_token"],
                          from_number=creds.get("from_number") or None,
                          messaging_service_sid=creds.get("messaging_service_sid") or None,
                          base_url=config.base_url, http=http)


@contextmanager
def open_provider(config: ProviderConfig) -> Iterator[SmsProvider]:
    provider = build_provider(config)
    try:
        yield provider
    finally:
        provider.close()


def serialize(config: ProviderConfig) -> dict[str, Any]:
    def masked(values: dict[str, str]) -> dict[str, str]:
        return {key: ("********" if key in SECRET_KEYS and value else value) for key, value in values.items()}

    return {
        "provider": config.provider,
        "base_url": config.base_url,
        "credentials": masked(config.credentials),
        "whatsapp": masked(config.whatsapp),
        "callback_timeout_minutes": config.callback_timeout_minutes,
        "retry_window_minutes": config.retry_window_minutes,
        "whatsapp_wait_minutes": config.whatsapp_wait_minutes,
        "callback_url": callback_url(config),
        "whatsapp_webhook_url": whatsapp_webhook_url(config.organization_id),
    }


def _builtin_or_checked(url: object, name: str) -> tuple[str | None, str | None]:
    """(the URL to store, None) or (None, why it is refused). Empty, or exactly the built-in
    simulator's URL (what GET shows when nothing is stored), stores nothing: "the built-in
    simulator", found again from the operator's settings at each send."""
    if _is_builtin(url, name):
        return None, None
    refusal = destinations.url_refusal(url)
    if refusal is not None:
        return None, refusal
    assert isinstance(url, str)
    return url.strip(), None


def clean(body: dict[str, Any]) -> dict[str, Any]:
    """The PUT body checked (400 field errors otherwise), before any transaction: the URLs are
    resolved and refused when they lead to a private, loopback or link-local address."""
    provider = body.get("provider", "twilio")
    errors: dict[str, Any] = {}
    if provider not in PROVIDERS:
        errors["provider"] = [f'"{provider}" is not a valid choice.']
    credentials = body.get("credentials") or {}
    whatsapp = body.get("whatsapp") or {}
    for name, value in (("credentials", credentials), ("whatsapp", whatsapp)):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            errors[name] = ["Expected an object of strings."]
    for name in ("callback_timeout_minutes", "retry_window_minutes", "whatsapp_wait_minutes"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            errors[name] = ["A valid integer is required."]
        elif value is not None and value > MAX_INT32:
            errors[name] = [f"Ensure this value is less than or equal to {MAX_INT32}."]
    if isinstance(body.get("base_url"), str) and len(body["base_url"]) > 512:  # the column's width
        errors["base_url"] = ["Ensure this field has no more than 512 characters."]
        base_url = None
    else:
        base_url, refusal = _builtin_or_checked(body.get("base_url"), provider if provider in PROVIDERS else "twilio")
        if refusal:
            errors["base_url"] = [refusal]
    if "whatsapp" not in errors and "base_url" in whatsapp:
        whatsapp = dict(whatsapp)
        whatsapp_url, refusal = _builtin_or_checked(whatsapp.pop("base_url"), "whatsapp")
        if refusal:
            errors["whatsapp"] = {"base_url": [refusal]}
        elif whatsapp_url:
            whatsapp["base_url"] = whatsapp_url
    if provider == "twilio" and isinstance(credentials, dict) and credentials and not (
            credentials.get("from_number") or credentials.get("messaging_service_sid")):
        errors.setdefault("credentials", []).append("Twilio needs from_number or messaging_service_sid.")
    if errors:
        raise field_errors(errors)
    return {**body, "provider": provider, "base_url": base_url, "credentials": credentials, "whatsapp": whatsapp}


def save(session: Session, organization_id: int, cleaned: dict[str, Any]) -> ProviderConfig:
    """Store a body ``clean`` accepted."""
    # created if missing by INSERT ... ON CONFLICT DO NOTHING, then locked: two first saves at
    # once both found none and the second insert failed (PostgreSQL)
    session.execute(insert_ignoring_conflicts(session, SmsProviderConfig, ["organization_id"]).values(
        organization_id=organization_id))
    row = session.scalar(select(SmsProviderConfig).where(SmsProviderConfig.organization_id == organization_id)
                         .with_for_update())
    assert row is not None
    row.provider = cleaned["provider"]
    row.base_url = cleaned["base_url"]
    row.credentials = dict(cleaned["credentials"])
    row.whatsapp = dict(cleaned["whatsapp"])
    row.callback_timeout_minutes = int(cleaned.get("callback_timeout_minutes") or DEFAULT_CALLBACK_TIMEOUT_MINUTES)
    row.retry_window_minutes = int(cleaned["retry_window_minutes"]) \
        if cleaned.get("retry_window_minutes") is not None else DEFAULT_RETRY_WINDOW_MINUTES
    row.whatsapp_wait_minutes = int(cleaned["whatsapp_wait_minutes"]) \
        if cleaned.get("whatsapp_wait_minutes") is not None else DEFAULT_WHATSAPP_WAIT_MINUTES
    row.updated_at = utcnow()
    session.flush()
    _forget_recent(organization_id)
    return config_of(session, organization_id)


# --- WhatsApp ---------------------------------------------------------------------------------

def whatsapp_webhook_url(organization_id: int | None = None) -> str:
    """Where WhatsApp status webhooks are received. The built-in simulator posts to the URL
    without an organisation (messages are found by the reference they carry); an
    organisation's own Meta app can be pointed at the one with its id."""
    base = get_settings().public_base_url.rstrip("/") + "/sms_plus/callbacks/whatsapp"
    return base if organization_id is None else f"{base}/{organization_id}"


def open_whatsapp(config: ProviderConfig) -> WhatsAppClient:
    values = config.whatsapp
    base_url = simulator_url("whatsapp") if config.whatsapp_builtin else values["base_url"]
    return WhatsAppClient(values.get("phone_number_id", ""), values.get("access_token", ""),
                          app_secret=values.get("app_secret") or None, base_url=base_url,
                          api_version=values.get("api_version") or DEFAULT_API_VERSION,
                          http=simulator_http() if config.whatsapp_builtin else tenant_http())


# --- a send whose outcome is unknown ----------------------------------------------------------

LOOKUP_CLOCK_SKEW_SECONDS = 5.0


def find_unknown_send(provider: SmsProvider, to: str, text: str, since: datetime,
                      claimed: Callable[[list[str]], set[str]]) -> SendResult | None:
    """A send died mid-call (the process was killed): did the provider take it? Twilio has no
    idempotency key, so its message list is searched for this number and text created since the
    attempt began and not already another message's (``claimed`` answers which of the given sids
    are). Mitake de-duplicates a repeated ``clientid`` itself: None, send again."""
    if not isinstance(provider, TwilioProvider):
        return None
    found = provider.list_messages(to)  # an HTTP error propagates: the caller asks again later
    floor = since.replace(microsecond=0) - timedelta(seconds=LOOKUP_CLOCK_SKEW_SECONDS)
    candidates = []
    for item in found:
        created = item.get("date_created")
        try:
            created_at = parsedate_to_datetime(created) if created else None
        except (TypeError, ValueError):
            created_at = None
        if item.get("body") == text and created_at is not None and created_at >= floor \
                and item.get("status") not in ("failed", "canceled"):
            candidates.append((created_at, str(item["sid"])))
    if not candidates:
        return None
    taken = claimed([sid for _at, sid in candidates])
    for _at, sid in sorted(candidates):
        if sid not in taken:
            return SendResult(accepted=True, provider_message_id=sid, duplicate=True)
    return None
