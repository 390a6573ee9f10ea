"""The console's languages: English source strings, Traditional Chinese (zh_TW) from a gettext
catalog. The ``.po`` file is compiled in memory when first used (no ``.mo`` to keep in step);
``pybabel extract -F babel.cfg`` collects the strings (docs/console.md)."""

from __future__ import annotations

import gettext
import io
from functools import lru_cache
from pathlib import Path

from babel import Locale, UnknownLocaleError, negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LOCALES = ("en", "zh_TW")
DEFAULT_LOCALE = "en"
LANGUAGE_NAMES = {"en": "English", "zh_TW": "繁體中文"}


@lru_cache(maxsize=len(LOCALES))
def translations(locale: str) -> gettext.NullTranslations:
    """The catalog of ``locale`` (English: the source strings themselves)."""
    po = LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"
    if locale == DEFAULT_LOCALE or not po.exists():
        return NullTranslations()
    with open(po, "rb") as handle:
        catalog = read_po(handle, locale=locale)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled)


def gettext_for(locale: str, message: str, **values: object) -> str:
    """``message`` translated to ``locale``, with ``%(name)s`` placeholders filled."""
    text = translations(locale).gettext(message)
    return text % values if values else text


def negotiate(accept_language: str | None) -> str:
    """The best of our languages for a browser's ``Accept-Language`` header (English when
    nothing matches). ``zh-TW``, ``zh-HK`` and ``zh-Hant`` read Traditional Chinese."""
    preferred: list[tuple[float, str]] = []
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        if not tag or tag == "*":
            continue
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        preferred.append((-quality + index * 1e-6, tag.replace("-", "_")))
    tags = [tag for _, tag in sorted(preferred)]
    for tag in tags:
        try:
            parsed = Locale.parse(tag)
        except (ValueError, UnknownLocaleError):
            continue
        if parsed.language == "zh":
            if parsed.script == "Hant" or parsed.territory in ("TW", "HK", "MO"):
                return "zh_TW"
            continue  # Simplified Chinese: English rather than the other script
        chosen = negotiate_locale([str(parsed)], list(LOCALES))
        if chosen:
            return chosen
        if parsed.language == "en":
            return "en"
    return DEFAULT_LOCALE
