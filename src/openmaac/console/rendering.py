"""Rendering console pages: Jinja2 (autoescaped) with gettext, a whole page or one of its blocks
alone (jinja2-fragments) for htmx, always answered with ``Vary: HX-Request``."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.numbers import format_decimal
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from jinja2_fragments import render_block
from markupsafe import Markup, escape

from openmaac import __version__
from openmaac.console.i18n import LANGUAGE_NAMES, gettext_for, negotiate, translations
from openmaac.console.session import CSRF_FORM_FIELD, Actor, optional_actor, pre_session_csrf
from openmaac.web.errors import APIError

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_PREFIX = "/console/static/"


@dataclass(frozen=True)
class NavItem:
    section: str
    label: str
    path: str


# The sidebar, in MAAC's order. An item whose page does not exist yet is shown disabled.
NAV: tuple[NavItem, ...] = (
    NavItem("contacts", "Contacts", "/console/contacts/"),
    NavItem("tags", "Tags", "/console/tags/"),
    NavItem("segments", "Segments", "/console/segments/"),
    NavItem("templates", "Templates", "/console/templates/"),
    NavItem("events", "Events", "/console/events/"),
    NavItem("sms_plus", "SMS+", "/console/sms-plus/"),
    NavItem("webhooks", "Webhooks", "/console/webhooks/"),
    NavItem("tokens", "API token", "/console/tokens/"),
    NavItem("settings", "Settings", "/console/settings/"),
)


@dataclass(frozen=True)
class _Current:
    request: Request
    actor: Actor | None
    locale: str


_current: contextvars.ContextVar[_Current | None] = contextvars.ContextVar("console_render", default=None)


def _now() -> _Current:
    current = _current.get()
    if current is None:
        raise RuntimeError("console template helpers are only available while rendering")
    return current


def csrf_token() -> str:
    current = _now()
    if current.actor is not None:
        return current.actor.csrf_token
    return pre_session_csrf(current.request)


def csrf_input() -> Markup:
    """The hidden CSRF field every ``<form method="post">`` carries."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FORM_FIELD, csrf_token())


def static(path: str) -> str:
    return f"{STATIC_PREFIX}{path.lstrip('/')}?v={__version__}"


def url(path: str = "") -> str:
    """A console address: ``url("templates/")`` is ``/console/templates/``."""
    if path.startswith("/console/") or path == "/console":
        return path
    return "/console/" + path.lstrip("/")


def format_datetime(value: datetime | None, with_seconds: bool = False) -> str:
    """A stored time in the organisation's time zone (UTC before anyone signed in)."""
    if value is None:
        return "–"
    current = _current.get()
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    tz = current.actor.org.tz if current is not None and current.actor is not None else UTC
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M")


def format_number(value: float | int | None) -> str:
    if value is None:
        return "–"
    current = _current.get()
    return str(format_decimal(value, locale=current.locale if current is not None else "en"))


def _gettext_python(message: str, **values: Any) -> str:
    current = _current.get()
    return gettext_for(current.locale if current is not None else "en", message, **values)


@lru_cache(maxsize=4)
def environment(locale: str) -> Environment:
    """One environment per language (gettext bound once, no per-request mutation)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n", "jinja2.ext.do"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.globals.update(csrf_input=csrf_input, csrf_token=csrf_token, static=static, url=url,
                       format_datetime=format_datetime, format_number=format_number,
                       language_names=LANGUAGE_NAMES, version=__version__)
    # a message that is not a literal (a service's error text): translated when the catalog
    # has it, never %-formatted
    env.filters["translate"] = lambda message: translations(locale).gettext(str(message))
    return env


def _route_paths(routes: Any, prefix: str = "") -> Iterator[str]:
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:  # FastAPI keeps an included router as one node
            yield from _route_paths(original.routes, prefix + route.include_context.prefix)
        elif getattr(route, "path", None) is not None:
            yield prefix + route.path


@lru_cache(maxsize=1)
def _available_paths() -> tuple[str, ...]:
    """Every console page address (the routers are fixed once the app is built)."""
    from openmaac.console.routes import router

    return tuple(_route_paths(router.routes))


def nav_items(request: Request) -> list[dict[str, Any]]:
    paths = _available_paths()
    return [{"section": item.section, "label": item.label, "path": item.path,
             "enabled": any(path.startswith(item.path) for path in paths)} for item in NAV]


def locale_of(request: Request, actor: Actor | None) -> str:
    return actor.locale if actor is not None else negotiate(request.headers.get("accept-language"))


@contextmanager
def rendering(request: Request, actor: Actor | None) -> Iterator[str]:
    locale = locale_of(request, actor)
    token = _current.set(_Current(request, actor, locale))
    try:
        yield locale
    finally:
        _current.reset(token)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def gettext(request: Request, actor: Actor | None, message: str, **values: Any) -> str:
    """A string of a view translated to the reader's language (``%(name)s`` placeholders)."""
    return gettext_for(locale_of(request, actor), message, **values)


def render(request: Request, actor: Actor | None, template_name: str, context: dict[str, Any] | None = None, *,
           block: str | None = None, status_code: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    """``console/templates/<template_name>`` as a page, or its ``block`` alone."""
    with rendering(request, actor) as locale:
        values: dict[str, Any] = {
            "request": request, "actor": actor, "locale": locale,
            "html_lang": locale.replace("_", "-"),
            "nav": (context or {}).get("section"), "nav_items": nav_items(request),
            "htmx": is_htmx(request),
        }
        values.update(context or {})
        env = environment(locale)
        if block is not None:
            html = render_block(env, template_name, block, **values)
        else:
            html = env.get_template(template_name).render(values)
    response = HTMLResponse(html, status_code=status_code, headers=headers)
    response.headers["Vary"] = "HX-Request"
    if actor is None and getattr(request.state, "pre_session_csrf", None):
        pre_session_csrf(request, response)
    return response


def N_(message: str) -> str:  # noqa: N802  (gettext's name for "marked for extraction, translated later")
    return message


ERROR_TITLES = {
    400: N_("This request could not be completed"),
    403: N_("You do not have permission to do this"),
    404: N_("Not found"),
    405: N_("Not allowed"),
    413: N_("Too large"),
}
# texts services and the console's own checks answer with, for the catalog
N_("You do not have permission to perform this action.")
N_("Not found.")
N_("CSRF Failed: CSRF token missing or incorrect.")
N_("Something went wrong")


def error_page(request: Request, actor: Actor | None, exc: APIError) -> HTMLResponse:
    """A service's refusal as a console page, in the reader's language."""
    detail = exc.body.get("detail") if isinstance(exc.body, dict) else None
    messages: list[str] = []
    if isinstance(detail, str):
        messages = [detail]
    elif exc.text:
        messages = [exc.text]
    elif isinstance(exc.body, dict):
        from openmaac.cli_errors import in_words

        messages = in_words(exc.body)
    if exc.status_code == 404 and messages == ["Not found."]:
        messages = [N_("There is nothing at this address, or it belongs to another organisation.")]
    title = ERROR_TITLES.get(exc.status_code, N_("Something went wrong"))
    return render(request, actor, "shared/error.html",
                  {"status": exc.status_code, "title": title, "messages": messages},
                  status_code=exc.status_code,
                  headers={k: v for k, v in exc.headers.items() if k.lower() != "www-authenticate"})


def page_actor(request: Request) -> Actor | None:
    """The actor for an error page (None when no one is signed in)."""
    try:
        return optional_actor(request)
    except Exception:  # noqa: BLE001  (an error page must render even when the database is down)
        return None


__all__ = ["Actor", "NavItem", "error_page", "escape", "gettext", "is_htmx", "render", "static", "url"]
