"""First-run setup for ``openmaac serve``: a default organisation and a token to try it with."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import func, select

from openmaac.auth.models import AccessToken, Organization
from openmaac.auth.service import create_organization, create_token, hash_token
from openmaac.channels.models import LineChannel
from openmaac.config import SIMULATOR_ADMIN_HEADER, Settings
from openmaac.db.engine import get_database

log = logging.getLogger("openmaac.bootstrap")

DEFAULT_ORG = "default"


def token_file(settings: Settings) -> Path:
    return settings.data_dir / "default-token.txt"


def ensure_default_organization(settings: Settings) -> str | None:
    """On an empty database create the organisation ``default`` and a token for it.

    The token is kept in ``data/default-token.txt`` (mode 0600) so every ``make run`` can
    show it again; revoking it makes the next start issue a new one. Returns the token, or
    None when the database already had other organisations and no default token.
    """
    database = get_database(settings.database_url)
    path = token_file(settings)
    with database.write() as session:
        org = session.scalar(select(Organization).where(Organization.name == DEFAULT_ORG))
        if org is None:
            if (session.scalar(select(func.count()).select_from(Organization)) or 0) > 0:
                return None
            org = create_organization(session, DEFAULT_ORG)
        if path.exists():
            saved = path.read_text().strip()
            alive = session.scalar(
                select(AccessToken.id).where(
                    AccessToken.token_hash == hash_token(saved),
                    AccessToken.organization_id == org.id,
                    AccessToken.revoked_at.is_(None),
                )
            )
            if alive is not None:
                return saved
        token = create_token(session, org.id, label="default token (make run)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def register_channels_with_simulator(settings: Settings, timeout: float = 30.0) -> None:
    """Tell the built-in LINE simulator about every channel that points at it.

    Runs in a thread once the server answers, through the simulator's own admin API, so
    simulated users can follow the Official Account and their webhooks reach us.
    """

    def run() -> None:
        base = settings.simulator_base_url
        deadline = time.monotonic() + timeout
        # the admin key: through a proxy this server is not a loopback client of itself
        with httpx.Client(timeout=5.0, headers={SIMULATOR_ADMIN_HEADER: settings.simulator_admin_key}) as client:
            while time.monotonic() < deadline:
                try:
                    client.get(settings.public_base_url.rstrip("/") + "/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            with get_database(settings.database_url).read() as session:
                channels = list(session.scalars(select(LineChannel).where(LineChannel.api_base_url == base)))
            for channel in channels:
                try:
                    client.post(
                        f"{base}/_admin/channels",
                        json={
                            "channel_id": channel.channel_id,
                            "channel_secret": channel.channel_secret,
                            "access_token": channel.access_token,
                            "webhook_url": f"{settings.public_base_url.rstrip('/')}/line/webhook/{channel.channel_id}",
                        },
                    )
                except httpx.HTTPError as exc:
                    log.warning("could not register channel %s with the simulator: %s", channel.channel_id, exc)

    threading.Thread(target=run, name="openmaac-simulator-registration", daemon=True).start()
