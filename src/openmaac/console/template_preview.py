"""What the template pages need to draw LINE messages as chat bubbles."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

from openmaac.templates.service import PLACEHOLDER, split_placeholders


def chips(value: Any) -> Markup:
    """Text with each ``{{name}}`` placeholder drawn as a chip; everything else escaped."""
    if value is None:
        return Markup("")
    text = value if isinstance(value, str) else str(value)
    parts: list[str] = []
    position = 0
    for match in PLACEHOLDER.finditer(text):
        parts.append(str(escape(text[position:match.start()])))
        name = match.group(1)
        kind = "contact" if name.startswith("contact.") else "param"
        parts.append(f'<span class="chip chip-{kind}">{escape("{{" + name + "}}")}</span>')
        position = match.end()
    parts.append(str(escape(text[position:])))
    return Markup("".join(parts))


def chip(name: str) -> Markup:
    """One parameter, drawn as a chip."""
    return chips("{{" + name + "}}")


def is_shown_image(url: Any) -> bool:
    """Draw an image only from a complete https URL (not one a placeholder fills at send time)."""
    return isinstance(url, str) and url.startswith("https://") and "{{" not in url and len(url) <= 2000


def preview_context(messages: list[Any]) -> dict[str, Any]:
    parameters, contact_fields = split_placeholders([m for m in messages if m is not None])
    return {"preview_messages": messages, "parameters": parameters, "contact_fields": contact_fields,
            "chips": chips, "chip": chip, "is_shown_image": is_shown_image}
