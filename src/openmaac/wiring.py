"""Imports every domain module that registers job handlers. Wiring only."""

from __future__ import annotations


def load_domains() -> None:
    import openmaac.line_inbound.service  # noqa: F401  (contact.fetch_line_profile)
    import openmaac.tags.service  # noqa: F401  (tag.expire_sweep)
