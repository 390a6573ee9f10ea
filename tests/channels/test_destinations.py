"""The outbound guard (openmaac.channels.destinations) and the guarded httpx client: which
addresses a tenant-set URL may reach, in every IPv4 and IPv6 spelling, and that a guarded
connection goes only to an address that was checked."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import httpx
import pytest

from helpers import CallbackReceiver, ServedApp
from openmaac.channels import destinations
from openmaac.channels.guarded_http import DestinationRefused, guarded_client
from openmaac.channels.sms import ErrorCategory, TwilioProvider


@pytest.fixture
def allow(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set the operator's allow list for one test (default here: nothing allowed)."""
    from openmaac.config import get_settings

    def set_hosts(*hosts: str) -> None:
        settings = dataclasses.replace(get_settings(), outbound_allow_hosts=tuple(hosts))
        monkeypatch.setattr(destinations, "get_settings", lambda: settings)

    set_hosts()
    return set_hosts


NOT_PUBLIC = [
    "127.0.0.1", "127.0.0.2", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "255.255.255.255", "224.0.0.1", "198.18.0.1", "192.0.0.8",
    "::1", "::", "fe80::1", "fc00::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4-mapped
    "::127.0.0.1", "::169.254.169.254", "::10.0.0.1",                  # IPv4-compatible
    "::ffff:0:127.0.0.1", "::ffff:0:a9fe:a9fe",                        # IPv4-translated (SIIT)
    "64:ff9b::127.0.0.1", "64:ff9b::a9fe:a9fe", "64:ff9b::a00:1",      # NAT64 well-known prefix
    "64:ff9b:1::808:808", "64:ff9b:1:ffff::1",                          # NAT64 local-use /48
    "2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:a00:1::1",            # 6to4
    "2001:0:4136:e378:8000:63bf:80ff:fffe",                             # Teredo, client 127.0.0.1
    "2001:0:a9fe:a9fe:8000:63bf:3fff:fdd2",                             # Teredo, server 169.254.169.254
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "203.0.114.1", "2606:4700::1111", "2a00:1450:4001:81b::200e",
          "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses_in_every_spelling_are_refused(address: str, allow: Any) -> None:
    assert not destinations.is_public(ipaddress.ip_address(address))
    with pytest.raises(destinations.UnsafeDestination):
        destinations.check_address("example.com", address)
    host = f"[{address}]" if ":" in address else address
    assert (destinations.url_refusal(f"https://{host}/x") or "").startswith("This URL is not allowed: ")


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str, allow: Any) -> None:
    assert destinations.is_public(ipaddress.ip_address(address))
    destinations.check_address("example.com", address)
    host = f"[{address}]" if ":" in address else address
    assert destinations.url_refusal(f"https://{host}/x") is None


def test_embedded_ipv4_of_each_form() -> None:
    def embedded(address: str) -> list[str]:
        return [str(inner) for inner in destinations.embedded_ipv4(ipaddress.IPv6Address(address))]

    assert embedded("::ffff:127.0.0.1") == ["127.0.0.1"]
    assert embedded("::127.0.0.1") == ["127.0.0.1"]
    assert embedded("::ffff:0:a9fe:a9fe") == ["169.254.169.254"]
    assert embedded("64:ff9b::a9fe:a9fe") == ["169.254.169.254"]
    assert embedded("2002:7f00:1::1") == ["127.0.0.1"]
    assert embedded("2001:0:4136:e378:8000:63bf:3fff:fdd2") == ["65.54.227.120", "192.0.2.45"]
    assert embedded("2606:4700::1111") == []


def test_the_allow_list_names_hosts_addresses_and_networks(allow: Any) -> None:
    allow("hooks.internal", "127.0.0.1", "10.0.0.0/8")
    destinations.check_address("hooks.internal", "192.168.1.1")
    destinations.check_address("anything", "127.0.0.1")
    destinations.check_address("anything", "10.20.30.40")
    for address in ("127.0.0.2", "::127.0.0.1", "192.168.1.1"):
        with pytest.raises(destinations.UnsafeDestination):
            destinations.check_address("anything", address)


def test_url_refusal_texts(allow: Any) -> None:
    assert destinations.url_refusal("ftp://8.8.8.8/") == "Enter a valid URL."
    assert destinations.url_refusal("http://user:pw@8.8.8.8/") == "Enter a valid URL."
    assert destinations.url_refusal(None) == "Enter a valid URL."
    assert destinations.url_refusal("https://8.8.8.8/" + "a" * 2048) == \
        "Ensure this field has no more than 2048 characters."
    assert destinations.url_refusal("http://no-such-host.invalid/") == "The host of this URL cannot be resolved."
    assert destinations.url_refusal("http://127.0.0.1/") == (
        "This URL is not allowed: 127.0.0.1 resolves to 127.0.0.1, a private, loopback or link-local address "
        "(allow it with OPENMAAC_OUTBOUND_ALLOW_HOSTS).")


def test_old_and_new_allow_list_settings_are_both_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from openmaac.config import load_settings

    monkeypatch.setenv("OPENMAAC_OUTBOUND_ALLOW_HOSTS", "10.0.0.0/8, sms.internal")
    monkeypatch.setenv("OPENMAAC_WEBHOOK_ALLOW_HOSTS", "127.0.0.1,sms.internal")
    assert load_settings().outbound_allow_hosts == ("10.0.0.0/8", "sms.internal", "127.0.0.1")
    monkeypatch.delenv("OPENMAAC_OUTBOUND_ALLOW_HOSTS")
    assert load_settings().outbound_allow_hosts == ("127.0.0.1", "sms.internal")


# -- the guarded client ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def listener() -> Any:
    receiver = CallbackReceiver()
    served = ServedApp(receiver.app)
    yield receiver, served.port
    served.stop()


def test_guarded_client_connects_only_to_checked_addresses(listener: Any, allow: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    receiver, port = listener
    client = guarded_client(5.0, httpx.Limits(max_connections=4))
    # a name that resolves to loopback (as a rebinding DNS server would answer at send time)
    monkeypatch.setattr(destinations, "resolve", lambda host, port: ["127.0.0.1"])
    with pytest.raises(DestinationRefused):
        client.post(f"http://gateway.example.com:{port}/send", data={"password": "secret"})
    monkeypatch.undo()
    allow()
    with pytest.raises(DestinationRefused):
        client.post(f"http://127.0.0.1:{port}/send", data={"password": "secret"})
    with pytest.raises(DestinationRefused):
        client.get(f"http://[::ffff:127.0.0.1]:{port}/send")
    assert receiver.requests == []
    # allowed by the operator: the same request goes out
    allow("127.0.0.1")
    assert client.post(f"http://127.0.0.1:{port}/send", data={"a": "b"}).status_code == 200
    assert [record["path"] for record in receiver.requests] == ["/send"]
    client.close()


def test_a_refused_gateway_is_a_configuration_error_not_a_retry(listener: Any, allow: Any) -> None:
    receiver, port = listener
    before = len(receiver.requests)
    provider = TwilioProvider("AC" + "0" * 32, "token", from_number="+15005550006",
                              base_url=f"http://127.0.0.1:{port}", http=guarded_client(5.0, httpx.Limits()))
    result = provider.send("+886912345678", "hello")
    assert not result.accepted and not result.outcome_unknown
    assert (result.error_category, result.error_code) == (ErrorCategory.AUTH_OR_CONFIG, "destination_refused")
    assert len(receiver.requests) == before
