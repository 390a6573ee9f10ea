"""First-run setup for ``openmaac serve``: a default organisation and a token to try it with."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from openmaac.auth.models import AccessToken, Organization
from openmaac.auth.service import create_organization, create_token, hash_token
from openmaac.channels.models import LineChannel
from openmaac.channels.service import BUILTIN_LINE_SIMULATOR
from openmaac.config import Settings
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


class BuiltinLineChannels:
    """The LINE channels that use the built-in simulator (``api_base_url`` NULL), as the mounted
    simulator's channel directory (``simulators/line/state.py``): it finds a channel by id or
    access token when it is first used, whichever process created it (``openmaac token
    create`` while the server runs), and lists them all. Webhooks go to this server's public
    address, as it is now."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _record(self, channel: LineChannel) -> dict[str, Any]:
        return {"channel_id": channel.channel_id, "channel_secret": channel.channel_secret,
                "access_token": channel.access_token,
                "webhook_url": f"{self.settings.public_base_url.rstrip('/')}/line/webhook/{channel.channel_id}"}

    def _find(self, *conditions: Any) -> list[dict[str, Any]]:
        with get_database(self.settings.database_url).read() as session:
            return [self._record(channel) for channel in session.scalars(
                select(LineChannel).where(LineChannel.api_base_url.is_(BUILTIN_LINE_SIMULATOR), *conditions)
                .order_by(LineChannel.id))]

    def by_id(self, channel_id: str) -> dict[str, Any] | None:
        found = self._find(LineChannel.channel_id == channel_id)
        return found[0] if found else None

    def by_token(self, access_token: str) -> dict[str, Any] | None:
        found = self._find(LineChannel.access_token == access_token)
        return found[0] if found else None

    def all(self) -> list[dict[str, Any]]:
        return self._find()
