"""Fixtures of the CDH API tests: a tenant's CDH key and client, a webhook receiver, the clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import BASE_URL
from helpers import CallbackReceiver, ServedApp


@pytest.fixture
def cdh(tenant: Any) -> Iterator[httpx.Client]:
    """An httpx client of the tenant's organisation with a fresh CDH key (header apikey)."""
    from helpers import org_of
    from openmaac.cdh.keys import create_cdh_key
    from openmaac.db.engine import get_database

    with get_database().write() as session:
        key = create_cdh_key(session, org_of(tenant), "tests")
    with httpx.Client(base_url=BASE_URL, headers={"apikey": key}, timeout=30) as client:
        client.key = key  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def clock() -> Iterator[Any]:
    """The CDH clock of the server's process; put back afterwards."""
    from openmaac.cdh import clock as cdh_clock

    cdh_clock.reset()
    yield cdh_clock
    cdh_clock.reset()


@pytest.fixture
def hooks() -> Iterator[tuple[CallbackReceiver, str]]:
    receiver = CallbackReceiver()
    served = ServedApp(receiver.app)
    yield receiver, served.url
    served.stop()


def add_cdh_webhook(tenant: Any, url: str, topics: list[str]) -> None:
    response = tenant.client.post(tenant.api("webhook/"), json={"url": url, "topics": topics, "style": "cdh"})
    assert response.status_code == 201, response.text


def received(receiver: CallbackReceiver, path: str) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in receiver.at(path)]
