"""The LINE simulator's channel directory: a host (openmaac: its database) tells the simulator
where to find channels it was never told about; a failing directory is "not found", never a 500."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest
import uvicorn

from helpers import wait_for
from openmaac.simulators.line.app import create_app

HTTP = httpx.Client(timeout=30)


class Directory:
    def __init__(self) -> None:
        self.channels: list[dict[str, Any]] = []
        self.broken = False
        self.asked: list[str] = []

    def add(self) -> dict[str, Any]:
        channel = {"channel_id": str(2_000_000_000 + secrets.randbelow(10**8)),
                   "channel_secret": secrets.token_hex(16), "access_token": secrets.token_urlsafe(32),
                   "webhook_url": None}
        self.channels.append(channel)
        return channel

    def _check(self, question: str) -> None:
        self.asked.append(question)
        if self.broken:
            raise RuntimeError("database unreachable")

    def by_id(self, channel_id: str) -> Mapping[str, Any] | None:
        self._check("by_id")
        return next((c for c in self.channels if c["channel_id"] == channel_id), None)

    def by_token(self, access_token: str) -> Mapping[str, Any] | None:
        self._check("by_token")
        return next((c for c in self.channels if c["access_token"] == access_token), None)

    def all(self) -> list[Mapping[str, Any]]:
        self._check("all")
        return list(self.channels)


@pytest.fixture
def served() -> Iterator[tuple[str, Directory]]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    directory = Directory()
    server = uvicorn.Server(uvicorn.Config(create_app(directory=directory), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10)
    yield f"http://127.0.0.1:{port}", directory
    server.should_exit = True
    thread.join(10)


def test_channels_come_from_the_directory_on_first_use(served: tuple[str, Directory]) -> None:
    sim, directory = served
    by_token, by_id, listed = directory.add(), directory.add(), directory.add()
    info = HTTP.get(f"{sim}/v2/bot/info", headers={"Authorization": f"Bearer {by_token['access_token']}"})
    assert info.status_code == 200
    user = HTTP.post(f"{sim}/_admin/users", json={}).json()["user_id"]
    followed = HTTP.post(f"{sim}/_admin/users/{user}/follow", json={"channel_id": by_id["channel_id"]})
    assert followed.status_code == 200 and followed.json()["webhook"]["delivered"] is False  # no webhook URL
    assert {c["channel_id"] for c in HTTP.get(f"{sim}/_admin/channels").json()} == {
        by_token["channel_id"], by_id["channel_id"], listed["channel_id"]}
    # a channel held keeps its friendships and the webhook URL set through the admin API
    HTTP.post(f"{sim}/_admin/channels", json={**by_id, "webhook_url": "http://127.0.0.1:9/hook"})
    (held,) = [c for c in HTTP.get(f"{sim}/_admin/channels").json() if c["channel_id"] == by_id["channel_id"]]
    assert (held["friends"], held["webhook_url"]) == (1, "http://127.0.0.1:9/hook")


def test_unknown_or_unreachable_is_not_found(served: tuple[str, Directory]) -> None:
    sim, directory = served
    unknown = HTTP.get(f"{sim}/v2/bot/info", headers={"Authorization": "Bearer nobody"})
    assert unknown.status_code == 401
    directory.broken = True
    channel = directory.add()
    assert HTTP.get(f"{sim}/v2/bot/info",
                    headers={"Authorization": f"Bearer {channel['access_token']}"}).status_code == 401
    assert HTTP.get(f"{sim}/_admin/channels/{channel['channel_id']}/stats").json() == {
        "message": f"channel {channel['channel_id']} is not registered with the simulator"}
    assert HTTP.get(f"{sim}/_admin/channels").status_code == 200
    directory.broken = False
    assert HTTP.get(f"{sim}/v2/bot/info",
                    headers={"Authorization": f"Bearer {channel['access_token']}"}).status_code == 200
