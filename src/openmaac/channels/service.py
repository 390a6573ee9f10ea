from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaac.channels.models import LineChannel
from openmaac.config import get_settings

# What ``line_channels.api_base_url`` stores for "the built-in LINE simulator": no URL, as an SMS
# gateway's empty ``base_url`` means its built-in simulator. Resolved when a client is built,
# so the channel follows the server to whatever address and port it runs on.
BUILTIN_LINE_SIMULATOR = None


def line_api_base_url(stored: str | None) -> str:
    """Where a channel's Messaging API calls go: its stored URL, or this server's LINE simulator
    (``OPENMAAC_PUBLIC_BASE_URL`` + ``/_simulators/line``) when none is stored."""
    return stored or get_settings().simulator_base_url


def channel_of(session: Session, organization_id: int) -> LineChannel | None:
    return session.scalar(select(LineChannel).where(LineChannel.organization_id == organization_id))


def channel_by_channel_id(session: Session, channel_id: str) -> LineChannel | None:
    return session.scalar(select(LineChannel).where(LineChannel.channel_id == channel_id))
