"""Where webhooks may go: no private, loopback, link-local or otherwise non-public address
unless ``OPENMAAC_WEBHOOK_ALLOW_HOSTS`` names the host or a network containing it.

Checked at registration and again before every delivery run, after DNS resolution; the
request then goes to the address that was checked (no second look-up an attacker's DNS
could answer differently), and redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from openmaac.config import get_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeDestination(Exception):
    """The URL resolves to an address webhooks may not reach."""


class Unresolvable(Exception):
    """The host has no address now (a transient failure at delivery time)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str          # as written in the URL (for Host and TLS SNI)
    port: int
    address: str       # the checked IP to connect to
    path: str          # path + query

    @property
    def connect_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str) -> tuple[str, str, int, str]:
    """scheme, host, port, path+query of an http(s) URL; ValueError when it is not one."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("Enter a valid URL.")
    if parts.username or parts.password:
        raise ValueError("Enter a valid URL.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError("Enter a valid URL.") from exc
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname.lower(), port, path


def _allow_list() -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    names: set[str] = set()
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in get_settings().webhook_allow_hosts:
        entry = entry.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.strip("[]"))
    return names, networks


def is_public(address: IPAddress) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return address.is_global and not address.is_multicast


def check_address(host: str, address: str) -> None:
    """Raise UnsafeDestination unless ``address`` (resolved from ``host``) may be reached."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if is_public(ip):
        return
    names, networks = _allow_list()
    if host in names or str(ip) in names or any(ip in network for network in networks):
        return
    raise UnsafeDestination(
        f"{host} resolves to {ip}, a private, loopback or link-local address "
        "(allow it with OPENMAAC_WEBHOOK_ALLOW_HOSTS)"
    )


def resolve(host: str, port: int) -> list[str]:
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unresolvable(f"cannot resolve {host}: {exc}") from exc
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise Unresolvable(f"cannot resolve {host}")
    return addresses


def target_for(url: str) -> Target:
    """Resolve and check every address of the URL's host; the first one is used.

    Raises ValueError (not a URL), Unresolvable, or UnsafeDestination.
    """
    scheme, host, port, path = parse_url(url)
    addresses = resolve(host, port)
    for address in addresses:
        check_address(host, address)
    return Target(scheme=scheme, host=host, port=port, address=addresses[0], path=path)
