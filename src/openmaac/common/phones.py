"""Phone numbers in E.164, local numbers (e.g. Taiwan's 09XX) read in the organisation's region."""

from __future__ import annotations

import phonenumbers


def to_e164(raw: str, region: str) -> str | None:
    """``0912345678`` in TW -> ``+886912345678``; None when the number is not a valid one."""
    text = raw.strip()
    if not text:
        return None
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
