"""Imports every domain's models so the metadata (and Alembic) sees all tables. Wiring only."""

from openmaac.auth.models import AccessToken, Organization
from openmaac.cdh.models import (
    CdhApiKey,
    CdhTask,
    ChannelIdentity,
    CommerceRecord,
    CustomField,
    EngagementEvent,
)
from openmaac.channels.models import LineChannel
from openmaac.console.models import ConsoleMembership, ConsoleSession, ConsoleUser, SignInThrottle
from openmaac.contacts.import_models import ImportTask
from openmaac.contacts.models import Contact
from openmaac.db.base import Base
from openmaac.jobs.models import Job
from openmaac.line_inbound.models import LineWebhookEvent
from openmaac.links.models import ShortLink, TrackedAction, TrackedLink, TrackingEvent, TrackingSetting
from openmaac.messaging.models import DirectMessage, DirectMessageRecipient, DirectMessageSend, MessageEvent
from openmaac.segments.models import Segment, SegmentMemberList, SegmentUpload
from openmaac.sms_plus.models import (
    PnpJoinLink,
    PnpMessage,
    PnpSetting,
    PnpUpload,
    PnpUploadRow,
    SmsPointBalance,
    SmsPointEntry,
    SmsProviderConfig,
)
from openmaac.tags.models import ContactTag, Tag
from openmaac.templates.models import MessageTemplate
from openmaac.webhooks.models import WebhookDelivery, WebhookEndpoint

metadata = Base.metadata

__all__ = [
    "AccessToken",
    "ConsoleMembership",
    "ConsoleSession",
    "ConsoleUser",
    "CdhApiKey",
    "CdhTask",
    "ChannelIdentity",
    "CommerceRecord",
    "CustomField",
    "EngagementEvent",
    "Contact",
    "ContactTag",
    "ImportTask",
    "Job",
    "LineChannel",
    "LineWebhookEvent",
    "DirectMessage",
    "DirectMessageRecipient",
    "DirectMessageSend",
    "MessageEvent",
    "ShortLink",
    "TrackedAction",
    "TrackedLink",
    "TrackingEvent",
    "TrackingSetting",
    "MessageTemplate",
    "Organization",
    "PnpJoinLink",
    "PnpMessage",
    "PnpSetting",
    "PnpUpload",
    "PnpUploadRow",
    "Segment",
    "SegmentMemberList",
    "SegmentUpload",
    "SmsPointBalance",
    "SmsPointEntry",
    "SignInThrottle",
    "SmsProviderConfig",
    "Tag",
    "WebhookDelivery",
    "WebhookEndpoint",
    "metadata",
]
