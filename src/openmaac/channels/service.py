from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaac.channels.models import LineChannel


def channel_of(session: Session, organization_id: int) -> LineChannel | None:
    return session.scalar(select(LineChannel).where(LineChannel.organization_id == organization_id))


def channel_by_channel_id(session: Session, channel_id: str) -> LineChannel | None:
    return session.scalar(select(LineChannel).where(LineChannel.channel_id == channel_id))
