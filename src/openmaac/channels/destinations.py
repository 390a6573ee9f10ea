"""Where a tenant-set URL may lead: the one guard for every outgoing request whose destination
an organisation chooses (webhook endpoints, its SMS gateway, its WhatsApp Cloud API base URL).

No private, loopback, link-local or otherwise non-public address, in any spelling (IPv6 forms
that carry an IPv4 address are judged by that address), unless the operator's allow list
(``OPENMAAC_OUTBOUND_ALLOW_HOSTS``, formerly ``OPENMAAC_WEBHOOK_ALLOW_HOSTS``) names the host
or a network containing it.

Checked when the URL is saved (a 400 the caller sees) and again when a request goes out,
after DNS resolution; the request then goes to the address that was checked (no second
look-up an attacker's DNS could answer differently), and redirects are never followed.
Webhooks use ``target_for`` (aiohttp connects to ``Target.address``); the SMS and WhatsApp
clients use ``openmaac.channels.guarded_http``, whose connections resolve and check here.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from openmaac.config import get_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_URL_LENGTH = 2048

# IPv6 prefixes whose low 32 bits are an IPv4 address the packet ends up at
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")            # RFC 4291 (deprecated), ::a.b.c.d
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 SIIT, ::ffff:0:a.b.c.d
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")               # RFC 6052 well-known prefix
# RFC 8215 local-use NAT64: translates to whatever the operator's network holds, never public
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
# IETF protocol assignments (RFC 6890), of which older Pythons count only a /29 as private
_IETF_PROTOCOL = ipaddress.IPv4Network("192.0.0.0/24")


class UnsafeDestination(Exception):
    """The URL resolves to an address tenants may not reach."""


class Unresolvable(Exception):
    """The host has no address now (a transient failure at send time)."""


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


def _allow_list() -> tuple[set[str], list[IPNetwork]]:
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in get_settings().outbound_allow_hosts:
        entry = entry.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.strip("[]"))
    return names, networks


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries and would reach through a translator or
    tunnel: IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64 (64:ff9b::/96), 6to4
    (2002::/16) and Teredo (its server and its client). Empty for an ordinary IPv6 address."""
    mapped = address.ipv4_mapped
    if mapped is not None:
        return [mapped]
    if address in _IPV4_COMPATIBLE or address in _IPV4_TRANSLATED or address in _NAT64:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    return []


def is_public(address: IPAddress) -> bool:
    """A global unicast address; an IPv6 form carrying an IPv4 address only if that one is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # ::ffff:0:0/96 is "private" as a block; a mapped address is exactly its IPv4 one
            return is_public(address.ipv4_mapped)
        if address in _NAT64_LOCAL:
            return False
        embedded = embedded_ipv4(address)
        if embedded and not all(is_public(inner) for inner in embedded):
            return False
    elif address in _IETF_PROTOCOL:
        return False
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
        "(allow it with OPENMAAC_OUTBOUND_ALLOW_HOSTS)"
    )


def resolve(host: str, port: int) -> list[str]:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return [host]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"cannot resolve {host}: {exc}") from exc
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise Unresolvable(f"cannot resolve {host}")
    return addresses


def checked_addresses(host: str, port: int) -> list[str]:
    """Every address of ``host``, each checked (one bad address refuses the host).

    Raises Unresolvable or UnsafeDestination.
    """
    addresses = resolve(host, port)
    for address in addresses:
        check_address(host, address)
    return addresses


def target_for(url: str) -> Target:
    """Resolve and check every address of the URL's host; the first one is used.

    Raises ValueError (not a URL), Unresolvable, or UnsafeDestination.
    """
    scheme, host, port, path = parse_url(url)
    addresses = checked_addresses(host, port)
    return Target(scheme=scheme, host=host, port=port, address=addresses[0], path=path)


def url_refusal(url: object) -> str | None:
    """Why a tenant may not save ``url`` as a destination (the DRF field message), or None.

    Does DNS: call it before opening a write transaction.
    """
    if not isinstance(url, str) or not url.strip():
        return "Enter a valid URL."
    if len(url.strip()) > MAX_URL_LENGTH:
        return f"Ensure this field has no more than {MAX_URL_LENGTH} characters."
    try:
        target_for(url)
    except ValueError:
        return "Enter a valid URL."
    except Unresolvable:
        return "The host of this URL cannot be resolved."
    except UnsafeDestination as exc:
        return f"This URL is not allowed: {exc}."
    return None
