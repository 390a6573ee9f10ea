"""Settings read from the environment (``OPENMAAC_*``).

Every command (serve, worker, migrate, token, ...) resolves the same database from these
settings, so they all work on the same data without further flags.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

SIMULATOR_ADMIN_HEADER = "X-Simulator-Admin-Secret"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"OPENMAAC_{name}")
    return value if value not in (None, "") else default


def derived_secret(secret_key: str, purpose: str) -> str:
    """A secret for one ``purpose``, derived from the server secret (hex HMAC-SHA256): the same
    across restarts and processes of one server, different on every other server, and revealing
    neither the server secret nor the secrets derived for other purposes."""
    return hmac.new(secret_key.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def metrics_enabled() -> bool:
    """``OPENMAAC_METRICS`` (default on): read straight from the environment, so code that records
    metrics need not load the settings (and the server secret) to know."""
    return (_env("METRICS", "1") or "1").lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    secret_key: str
    default_timezone: str = "Asia/Taipei"
    default_region: str = "TW"
    public_base_url: str = "http://127.0.0.1:8000"
    simulators_enabled: bool = True
    outbound_allow_hosts: tuple[str, ...] = field(default_factory=tuple)
    embedded_worker: bool = True
    simulator_admin_secret: str | None = None
    log_format: str = "text"  # text | json (one JSON object per line), telemetry/logs.py
    log_level: str = "INFO"
    access_log: bool = True
    # Prometheus /metrics (docs/metrics.md): OPENMAAC_METRICS=0 turns metrics off entirely;
    # OPENMAAC_METRICS_TOKEN, when set, is the bearer token /metrics requires
    metrics_enabled: bool = True
    metrics_token: str | None = None
    # health and stopping (docs/health.md)
    drain_seconds: float = 20.0
    readyz_require_worker: bool = True

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def simulator_base_url(self) -> str:
        """Where the built-in LINE simulator answers when hosted inside `serve`."""
        return self.public_base_url.rstrip("/") + "/_simulators/line"

    @property
    def simulator_admin_key(self) -> str:
        """What ``X-Simulator-Admin-Secret`` must carry for a non-loopback client to reach the
        built-in simulators' admin API: ``OPENMAAC_SIMULATOR_ADMIN_SECRET``, else a key derived
        from the server secret that only this server's own calls to its simulators send."""
        if self.simulator_admin_secret:
            return self.simulator_admin_secret
        return derived_secret(self.secret_key, "openmaac-simulator-admin")


def _load_secret(data_dir: Path) -> str:
    """A server secret that survives restarts: from the environment, else a file in data_dir."""
    configured = _env("SECRET_KEY")
    if configured:
        return configured
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # Exclusive create: two processes starting together agree on one key.
    try:
        with open(path, "x") as handle:
            handle.write(key)
        os.chmod(path, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    return key


def _seconds(name: str, default: float) -> float:
    value = _env(name)
    if value is None:
        return default
    try:
        return max(float(value), 0.0)
    except ValueError:
        raise ValueError(f"OPENMAAC_{name} must be a number of seconds, not {value!r}") from None


def load_settings() -> Settings:
    data_dir = Path(_env("DATA_DIR", "./data") or "./data").resolve()
    database_url = _env("DATABASE_URL") or f"sqlite:///{data_dir / 'openmaac.sqlite3'}"
    if database_url.startswith("postgres://"):
        database_url = "postgresql://" + database_url[len("postgres://") :]
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]
    # OPENMAAC_WEBHOOK_ALLOW_HOSTS is the former name (webhooks were the first tenant-set URLs):
    # still read, and its entries join the new list's
    allow: list[str] = []
    for name in ("OUTBOUND_ALLOW_HOSTS", "WEBHOOK_ALLOW_HOSTS"):
        for entry in (_env(name, "") or "").split(","):
            if entry.strip() and entry.strip() not in allow:
                allow.append(entry.strip())
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        secret_key=_load_secret(data_dir),
        default_timezone=_env("DEFAULT_TIMEZONE", "Asia/Taipei") or "Asia/Taipei",
        default_region=_env("DEFAULT_REGION", "TW") or "TW",
        public_base_url=_env("PUBLIC_BASE_URL", "http://127.0.0.1:8000") or "http://127.0.0.1:8000",
        simulators_enabled=(_env("SIMULATORS", "1") or "1") not in ("0", "false", "no"),
        outbound_allow_hosts=tuple(allow),
        embedded_worker=(_env("EMBEDDED_WORKER", "1") or "1") not in ("0", "false", "no"),
        simulator_admin_secret=_env("SIMULATOR_ADMIN_SECRET"),
        log_format=(_env("LOG_FORMAT", "text") or "text").strip().lower(),
        log_level=(_env("LOG_LEVEL", "INFO") or "INFO").strip().upper(),
        access_log=(_env("ACCESS_LOG", "1") or "1") not in ("0", "false", "no"),
        metrics_enabled=metrics_enabled(),
        metrics_token=_env("METRICS_TOKEN"),
        drain_seconds=_seconds("DRAIN_SECONDS", 20.0),
        readyz_require_worker=(_env("READYZ_REQUIRE_WORKER", "1") or "1") not in ("0", "false", "no"),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()
