"""Outgoing webhooks: signed, retried, durable, observable (see docs/webhooks.md).

``verify(secret, body, signature)`` is the receiver-side check, importable without a
database: ``from openmaac.webhooks import verify``.
"""

from openmaac.webhooks.signing import render_body, sign, verify

__all__ = ["render_body", "sign", "verify"]
