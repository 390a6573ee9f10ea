"""SMS providers behind one interface (see base.SmsProvider); no knowledge of contacts or SMS+."""

from openmaac.channels.sms.base import (
    CallbackAck,
    CallbackRejected,
    DeliveryReport,
    DeliveryStatus,
    ErrorCategory,
    InboundRequest,
    SendResult,
    SmsProvider,
)
from openmaac.channels.sms.mitake import MitakeProvider
from openmaac.channels.sms.segments import sms_encoding, sms_length, sms_segments
from openmaac.channels.sms.twilio import TwilioProvider, twilio_signature, verify_twilio_signature

__all__ = [
    "CallbackAck",
    "CallbackRejected",
    "DeliveryReport",
    "DeliveryStatus",
    "ErrorCategory",
    "InboundRequest",
    "MitakeProvider",
    "SendResult",
    "SmsProvider",
    "TwilioProvider",
    "sms_encoding",
    "sms_length",
    "sms_segments",
    "twilio_signature",
    "verify_twilio_signature",
]
