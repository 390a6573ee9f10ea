"""Core console pages: the dashboard, sign-in and sign-out, the organisation switcher, the
settings index and the user's own account (language, password)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from openmaac.console import users
from openmaac.console.i18n import LOCALES
from openmaac.console.rendering import gettext, nav_items, render
from openmaac.console.session import (
    SESSION_COOKIE,
    CurrentActor,
    clear_session_cookie,
    end_session,
    optional_actor,
    safe_next,
    set_session_cookie,
    start_session,
    switch_organization,
)
from openmaac.db.engine import get_database
from openmaac.web.errors import APIError

router = APIRouter()
log = logging.getLogger("openmaac.console")


def N_(message: str) -> str:  # noqa: N802  (marks a string for the catalog; translated when shown)
    return message


# what the users service answers a bad account form with, translated when shown
N_("Use at least 10 characters.")
N_("Use at most 256 characters.")
N_("Your current password is not correct.")
N_("The two passwords do not match.")


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


@router.get("/")
def dashboard(request: Request, actor: CurrentActor) -> Response:
    sections = [item for item in nav_items(request) if item["enabled"] and item["section"] != "settings"]
    return render(request, actor, "dashboard.html", {"section": "dashboard", "sections": sections})


@router.get("/sign-in")
def sign_in_page(request: Request, next: str | None = None) -> Response:  # noqa: A002  (the query's name)
    if optional_actor(request) is not None:
        return _see_other(safe_next(next))
    return render(request, None, "auth/sign_in.html", {"next": safe_next(next), "email": "", "error": None})


def client_address(request: Request) -> str:
    """The client's address as uvicorn reports it (``X-Forwarded-For`` only from the proxies
    ``--forwarded-allow-ips`` trusts)."""
    return request.client.host if request.client else "unknown"


@router.post("/sign-in")
def sign_in(request: Request, email: Annotated[str, Form(max_length=1024)] = "",
            password: Annotated[str, Form(max_length=1024)] = "",
            next: Annotated[str, Form(max_length=2048)] = "/console/") -> Response:  # noqa: A002
    with get_database().write() as session:
        result = users.sign_in(session, email, password, client_address(request))
        secret, user_id = None, None
        if result.user is not None:
            user_id = result.user.id
            belongs = users.memberships(session, result.user.id)
            secret = start_session(session, result.user.id, belongs[0][0], request.cookies.get(SESSION_COOKIE))
    address = client_address(request)
    if secret is None:
        # for an operator watching for guessing (never what was typed)
        log.info("console sign-in refused from %s%s", address,
                 f" (waiting {result.wait_seconds} s)" if result.wait_seconds else "")
        if result.wait_seconds:
            error = gettext(request, None, "Too many failed sign-ins. Wait %(seconds)s seconds and try again.",
                            seconds=result.wait_seconds)
        else:
            error = gettext(request, None, "Incorrect email address or password.")
        return render(request, None, "auth/sign_in.html",
                      {"next": safe_next(next), "email": email.strip(), "error": error,
                       "wait_seconds": result.wait_seconds},
                      status_code=429 if result.wait_seconds else 400)
    log.info("console sign-in of user %s from %s", user_id, address)
    response = _see_other(safe_next(next))
    set_session_cookie(request, response, secret)
    return response


@router.post("/sign-out")
def sign_out(request: Request) -> Response:
    with get_database().write() as session:
        end_session(session, request.cookies.get(SESSION_COOKIE))
    response = _see_other("/console/sign-in")
    clear_session_cookie(request, response)
    return response


@router.post("/org")
def switch_org(request: Request, actor: CurrentActor, organization_id: Annotated[str, Form(max_length=32)],
               next: Annotated[str, Form(max_length=2048)] = "/console/") -> Response:  # noqa: A002
    if not organization_id.isdigit():
        raise APIError(404, {"detail": "Not found."})
    with get_database().write() as session:
        switch_organization(session, actor, int(organization_id))
    # the page the user was on may show an id of the previous organisation: start at its top
    return _see_other("/console/")


@router.get("/settings/")
def settings_index(request: Request, actor: CurrentActor) -> Response:
    return render(request, actor, "settings.html", {"section": "settings"})


def _account(request: Request, actor: CurrentActor, *, errors: dict[str, list[str]] | None = None,
             notice: str | None = None, status_code: int = 200) -> Response:
    with get_database().read() as session:
        user = session.get(users.ConsoleUser, actor.user_id)
        chosen = user.locale if user is not None else None
    return render(request, actor, "auth/account.html",
                  {"section": "settings", "errors": errors or {}, "notice": notice, "chosen_locale": chosen or "",
                   "locales": LOCALES}, status_code=status_code)


@router.get("/account")
def account(request: Request, actor: CurrentActor) -> Response:
    return _account(request, actor)


@router.post("/account/language")
def account_language(request: Request, actor: CurrentActor,
                     locale: Annotated[str, Form(max_length=16)] = "") -> Response:
    with get_database().write() as session:
        users.set_locale(session, actor.user_id, locale or None)
    return _see_other("/console/account")


@router.post("/account/password")
def account_password(request: Request, actor: CurrentActor,
                     current_password: Annotated[str, Form(max_length=1024)] = "",
                     new_password: Annotated[str, Form(max_length=1024)] = "",
                     confirm_password: Annotated[str, Form(max_length=1024)] = "") -> Response:
    try:
        with get_database().write() as session:
            users.change_password(session, actor.user_id, current_password, new_password, confirm_password,
                                  keep_session_id=actor.session_id)
    except APIError as exc:
        if exc.status_code != 400 or not isinstance(exc.body, dict):
            raise
        errors = {name: [gettext(request, actor, message) for message in messages]
                  for name, messages in exc.body.items()}
        return _account(request, actor, errors=errors, status_code=400)
    return _account(request, actor, notice=gettext(
        request, actor, "Your password was changed. Your other sessions were signed out."))
