"""Imports every domain module that registers job handlers. Wiring only."""

from __future__ import annotations


def load_domains() -> None:
    import openmaac.cdh.tasks  # noqa: F401  (cdh.import_member / cdh.export_member)
    import openmaac.contacts.imports  # noqa: F401  (member.import)
    import openmaac.line_inbound.service  # noqa: F401  (contact.fetch_line_profile)
    import openmaac.messaging.sending  # noqa: F401  (direct_message.send)
    import openmaac.segments.service  # noqa: F401  (segment.build)
    import openmaac.sms_plus.engine  # noqa: F401  (sms_plus.dispatch / fallback / sms_timeout)
    import openmaac.tags.service  # noqa: F401  (tag.expire_sweep)
    import openmaac.webhooks.delivery  # noqa: F401  (webhook.dispatch)
