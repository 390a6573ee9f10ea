"""An organisation's SMS gateway (and WhatsApp number) for SMS+.

Without a stored configuration an organisation sends through the built-in Twilio simulator
(``{public base URL}/_simulators/twilio`` with the simulator's demo account), so a fresh
install works offline. ``PUT /openapi/v1/pnp/sms_provider/`` (extension) chooses Twilio or
Mitake, their credentials and base URL. Delivery reports come back to
``/sms_plus/callbacks/{twilio|mitake}/{organization_id}``, verified by the adapter
(Twilio's signature; an HMAC token in Mitake's callback URL).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaac.channels.sms.base import SmsProvider
from openmaac.channels.sms.mitake import MitakeProvider
from openmaac.channels.sms.twilio import TwilioProvider
from openmaac.config import get_settings
from openmaac.db.base import utcnow
from openmaac.sms_plus.models import SmsProviderConfig
from openmaac.web.errors import field_errors

PROVIDERS = ("twilio", "mitake")
# the built-in simulators' demo accounts (src/openmaac/simulators/{twilio,mitake,whatsapp})
SIMULATOR_DEFAULTS: dict[str, dict[str, str]] = {
    "twilio": {"account_sid": "AC" + "0" * 31 + "1", "auth_token": "0123456789abcdef0123456789abcdef",
               "from_number": "+15005550006"},
    "mitake": {"username": "simulator", "password": "simulator-password"},
}
WHATSAPP_DEFAULTS = {"phone_number_id": "106540352242922", "access_token": "simulator-access-token",
                     "app_secret": "simulator-app-secret"}
SECRET_KEYS = ("auth_token", "password", "access_token", "app_secret")
DEFAULT_CALLBACK_TIMEOUT_MINUTES = 1440
DEFAULT_RETRY_WINDOW_MINUTES = 60


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


def simulator_url(name: str) -> str:
    return get_settings().public_base_url.rstrip("/") + f"/_simulators/{name}"


def config_of(session: Session, organization_id: int) -> ProviderConfig:
    row = session.get(SmsProviderConfig, organization_id)
    if row is None:
        return ProviderConfig(organization_id, "twilio", simulator_url("twilio"), dict(SIMULATOR_DEFAULTS["twilio"]),
                              whatsapp={**WHATSAPP_DEFAULTS, "base_url": simulator_url("whatsapp")})
    credentials = {**SIMULATOR_DEFAULTS.get(row.provider, {}), **(row.credentials or {})}
    whatsapp = {**WHATSAPP_DEFAULTS, "base_url": simulator_url("whatsapp"), **(row.whatsapp or {})}
    return ProviderConfig(organization_id, row.provider, row.base_url or simulator_url(row.provider), credentials,
                          whatsapp=whatsapp, callback_timeout_minutes=row.callback_timeout_minutes,
                          retry_window_minutes=row.retry_window_minutes, stored=True)


def callback_secret(organization_id: int) -> str:
    key = get_settings().secret_key.encode()
    return hmac.new(key, f"sms-callback:{organization_id}".encode(), hashlib.sha256).hexdigest()


def callback_url(config: ProviderConfig) -> str:
    base = get_settings().public_base_url.rstrip("/")
    return f"{base}/sms_plus/callbacks/{config.provider}/{config.organization_id}"


def build_provider(config: ProviderConfig) -> SmsProvider:
    creds = config.credentials
    if config.provider == "mitake":
        return MitakeProvider(creds.get("username", ""), creds.get("password", ""), base_url=config.base_url,
                              callback_secret=callback_secret(config.organization_id))
    return TwilioProvider(creds.get("account_sid", ""), creds.get("auth_token", ""),
                          from_number=creds.get("from_number") or None,
                          messaging_service_sid=creds.get("messaging_service_sid") or None,
                          base_url=config.base_url)


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
        "callback_url": callback_url(config),
    }


def save(session: Session, organization_id: int, body: dict[str, Any]) -> ProviderConfig:
    provider = body.get("provider", "twilio")
    errors: dict[str, list[str]] = {}
    if provider not in PROVIDERS:
        errors["provider"] = [f'"{provider}" is not a valid choice.']
    credentials = body.get("credentials") or {}
    whatsapp = body.get("whatsapp") or {}
    for name, value in (("credentials", credentials), ("whatsapp", whatsapp)):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            errors[name] = ["Expected an object of strings."]
    for name in ("callback_timeout_minutes", "retry_window_minutes"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            errors[name] = ["A valid integer is required."]
    base_url = body.get("base_url")
    if base_url is not None and (not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))):
        errors["base_url"] = ["Enter a valid URL."]
    if provider == "twilio" and credentials and not (credentials.get("from_number")
                                                     or credentials.get("messaging_service_sid")):
        errors.setdefault("credentials", []).append("Twilio needs from_number or messaging_service_sid.")
    if errors:
        raise field_errors(errors)
    row = session.scalar(select(SmsProviderConfig).where(SmsProviderConfig.organization_id == organization_id))
    if row is None:
        row = SmsProviderConfig(organization_id=organization_id)
        session.add(row)
    row.provider = provider
    row.base_url = base_url or None
    row.credentials = dict(credentials)
    row.whatsapp = dict(whatsapp)
    row.callback_timeout_minutes = body.get("callback_timeout_minutes") or DEFAULT_CALLBACK_TIMEOUT_MINUTES
    row.retry_window_minutes = body.get("retry_window_minutes") if body.get("retry_window_minutes") is not None \
        else DEFAULT_RETRY_WINDOW_MINUTES
    row.updated_at = utcnow()
    session.flush()
    return config_of(session, organization_id)
