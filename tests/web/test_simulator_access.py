"""The built-in simulators on the API port: the LINE simulator's admin API and the whole SMS and
WhatsApp simulators answer only to loopback clients that came straight in, or to
X-Simulator-Admin-Secret; nothing is mounted with OPENMAAC_SIMULATORS=0.

The app is called in-process through httpx.ASGITransport with a chosen client address (a
server bound to 127.0.0.2 would still be a loopback peer), and over real HTTP for the proxy
headers uvicorn interprets."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import httpx
import pytest

from openmaac.config import SIMULATOR_ADMIN_HEADER, Settings, get_settings

REMOTE = ("203.0.113.5", 40000)
ACCOUNT = "AC" + "0" * 31 + "1"

# (method, path) that expose or change every organisation's simulated traffic, or (the SMS
# simulators' sends, with a status-callback URL) make this server POST to any address
PRIVATE = [
    ("POST", "/_simulators/line/_admin/reset"),
    ("GET", "/_simulators/line/_admin/requests"),
    ("GET", "/_simulators/line/_admin/channels"),
    ("POST", "/_simulators/line//_admin/reset"),
    ("GET", "/_simulators/twilio/_admin/messages"),
    ("POST", "/_simulators/twilio/_admin/reset"),
    ("GET", f"/_simulators/twilio/2010-04-01/Accounts/{ACCOUNT}/Messages.json"),
    ("GET", "/_simulators/mitake/_admin/accounts"),
    ("POST", "/_simulators/mitake/api/mtk/SmQuery"),
    ("GET", "/_simulators/whatsapp/_admin/config"),
    ("DELETE", "/_simulators/whatsapp/_admin/faults"),
    ("POST", f"/_simulators/twilio/2010-04-01/Accounts/{ACCOUNT}/Messages.json"),
    ("POST", "/_simulators/mitake/api/mtk/SmSend"),
    ("POST", "/_simulators/whatsapp/v23.0/106540352242922/messages"),
]
# LINE's bot API: open, behind the channel tokens, as on LINE
PUBLIC = [
    ("GET", "/_simulators/line/v2/bot/info"),
    ("POST", "/_simulators/line/v2/bot/message/push"),
]


def build(**changes: Any) -> tuple[Any, Settings]:
    from openmaac.app import create_app

    settings = dataclasses.replace(get_settings(), **changes)
    return create_app(settings, embedded_worker=False), settings


def call(app: Any, client: tuple[str, int], method: str, path: str,
         headers: dict[str, str] | None = None) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://openmaac.test") as http:
            return await http.request(method, path, headers=headers or {})

    return asyncio.run(run())


@pytest.fixture(scope="module")
def app_and_settings() -> tuple[Any, Settings]:
    return build(simulators_enabled=True, simulator_admin_secret=None)


@pytest.mark.parametrize(("method", "path"), PRIVATE)
def test_private_simulator_paths_refuse_a_remote_client(app_and_settings: Any, method: str, path: str) -> None:
    app, settings = app_and_settings
    response = call(app, REMOTE, method, path)
    assert response.status_code == 403, response.text
    assert SIMULATOR_ADMIN_HEADER in response.json()["detail"]
    wrong = call(app, REMOTE, method, path, {SIMULATOR_ADMIN_HEADER: "guess"})
    assert wrong.status_code == 403
    # this server's own key (derived from the secret key when no admin secret is set) opens it
    keyed = call(app, REMOTE, method, path, {SIMULATOR_ADMIN_HEADER: settings.simulator_admin_key})
    assert keyed.status_code != 403, keyed.text


@pytest.mark.parametrize(("method", "path"), PUBLIC)
def test_the_upstream_apis_stay_open(app_and_settings: Any, method: str, path: str) -> None:
    app, _settings = app_and_settings
    assert call(app, REMOTE, method, path).status_code != 403


@pytest.mark.parametrize("client", [("127.0.0.1", 5000), ("127.0.0.2", 5000), ("::1", 5000),
                                    ("::ffff:127.0.0.1", 5000)])
def test_loopback_clients_reach_the_admin_api(app_and_settings: Any, client: tuple[str, int]) -> None:
    app, _settings = app_and_settings
    assert call(app, client, "GET", "/_simulators/line/_admin/channels").status_code == 200
    assert call(app, client, "GET", "/_simulators/twilio/_admin/messages").status_code == 200


@pytest.mark.parametrize("header", [{"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"},
                                    {"X-Real-IP": "127.0.0.1"}])
def test_a_request_relayed_by_a_local_proxy_is_not_local(app_and_settings: Any, header: dict[str, str]) -> None:
    app, _settings = app_and_settings
    assert call(app, ("127.0.0.1", 5000), "POST", "/_simulators/line/_admin/reset", header).status_code == 403


def test_the_configured_admin_secret_replaces_the_derived_key() -> None:
    app, settings = build(simulators_enabled=True, simulator_admin_secret="open-sesame")
    assert settings.simulator_admin_key == "open-sesame"
    path = "/_simulators/line/_admin/channels"
    assert call(app, REMOTE, "GET", path, {SIMULATOR_ADMIN_HEADER: "open-sesame"}).status_code == 200
    derived = dataclasses.replace(settings, simulator_admin_secret=None).simulator_admin_key
    assert call(app, REMOTE, "GET", path, {SIMULATOR_ADMIN_HEADER: derived}).status_code == 403


def test_nothing_is_mounted_when_simulators_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from openmaac.config import load_settings

    monkeypatch.setenv("OPENMAAC_SIMULATORS", "0")
    assert load_settings().simulators_enabled is False
    app, settings = build(simulators_enabled=False)
    for method, path in PRIVATE + PUBLIC:
        response = call(app, ("127.0.0.1", 5000), method, path, {SIMULATOR_ADMIN_HEADER: settings.simulator_admin_key})
        assert response.status_code in (404, 405), (path, response.status_code)


def test_x_forwarded_for_does_not_make_a_client_local_over_real_http(base_url: str) -> None:
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 (FORWARDED_ALLOW_IPS) and then reports the
    address it names: a remote client relayed by a local proxy, claiming to be 127.0.0.1, must
    still be refused; the same call without the header (the test harness) is allowed."""
    url = f"{base_url}/_simulators/line/_admin/requests"
    assert httpx.get(url, headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 403
    assert httpx.get(url, headers={"X-Forwarded-For": "203.0.113.5, 127.0.0.1"}).status_code == 403
    assert httpx.get(url).status_code == 200
