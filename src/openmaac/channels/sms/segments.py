"""SMS segment counting (3GPP TS 23.038 / 23.040), as gateways bill and split messages.

GSM-7: 160 septets in one SMS, 153 per part when concatenated (the user data header takes 7);
characters of the extension table (``^{}\\[~]|€`` and form feed) take two septets (escape +
char) and are never split across parts. Anything outside the GSM-7 tables makes the whole
message UCS-2: 70 UTF-16 code units in one SMS, 67 per part; a character outside the BMP
(most emoji) is a surrogate pair, two units, never split across parts.
"""

from __future__ import annotations

from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

LIMITS: dict[str, tuple[int, int]] = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


def sms_encoding(text: str) -> Encoding:
    for char in text:
        if char not in GSM7_BASIC and char not in GSM7_EXTENSION:
            return "UCS-2"
    return "GSM-7"


def _units(text: str, encoding: Encoding) -> list[int]:
    if encoding == "GSM-7":
        return [2 if char in GSM7_EXTENSION else 1 for char in text]
    return [2 if ord(char) > 0xFFFF else 1 for char in text]


def sms_segments(text: str) -> tuple[Encoding, int]:
    """``(encoding, number of SMS parts)``; an empty text counts as one (empty) SMS."""
    encoding = sms_encoding(text)
    units = _units(text, encoding)
    single, multi = LIMITS[encoding]
    total = sum(units)
    if total <= single:
        return encoding, 1
    parts, used = 1, 0
    for size in units:
        if used + size > multi:
            parts += 1
            used = 0
        used += size
    return encoding, parts


def sms_length(text: str) -> int:
    """Length in the message's own units (septets for GSM-7, UTF-16 code units for UCS-2)."""
    return sum(_units(text, sms_encoding(text)))
