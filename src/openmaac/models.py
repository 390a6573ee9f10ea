"""Imports every domain's models so the metadata (and Alembic) sees all tables. Wiring only."""

from openmaac.auth.models import AccessToken, Organization
from openmaac.channels.models import LineChannel
from openmaac.contacts.models import Contact
from openmaac.db.base import Base
from openmaac.jobs.models import Job
from openmaac.line_inbound.models import LineWebhookEvent
from openmaac.messaging.models import MessageEvent
from openmaac.tags.models import ContactTag, Tag
from openmaac.templates.models import MessageTemplate

metadata = Base.metadata

__all__ = [
    "AccessToken",
    "Contact",
    "ContactTag",
    "Job",
    "LineChannel",
    "LineWebhookEvent",
    "MessageEvent",
    "MessageTemplate",
    "Organization",
    "Tag",
    "metadata",
]
