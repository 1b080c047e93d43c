"""Where an action or a notifier may send a request: the URL rules, and the connect-time check.

A rule file is written by an operator, but the URLs in it are reached from inside a cloud
network, where a request to a link-local or metadata address can read instance credentials.
So a URL is checked twice: as written (at rule load, so `cloudpilot check` catches it), and
after DNS resolution, against the addresses actually connected to.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import TypeAlias

from aiohttp.abc import AbstractResolver
from yarl import URL

from daemon.errors import CloudpilotError

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_LOOPBACK_NAMES = frozenset({"localhost"})
_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog"})
_METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
_LINK_LOCAL_V4 = ipaddress.ip_network("169.254.0.0/16")
_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")
# Hosts made only of numbers (`2130706433`, `0x7f.1`, `0177.0.0.1`) are IPv4 addresses in
# disguise that resolvers accept; refuse them rather than guess what they mean.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?$", re.IGNORECASE)


class UnsafeUrlError(CloudpilotError, ValueError):
    """A URL, or an address its host resolves to, is not one Cloudpilot will send to."""


def describe(url: URL) -> str:
    """Return the URL's origin for logs and details; its path and query may hold a token."""
    if not url.is_absolute() or url.raw_host is None:
        return "<invalid url>"
    return f"{url.scheme}://{url.host_port_subcomponent}"


def parse_address(host: str) -> IPAddress | None:
    """Return the host as an IP address, or None when it is a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address an IPv6 form carries (mapped, NAT64, 6to4, compatible), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: IPAddress) -> str | None:
    """Return why requests to `address` are refused, or None when it is allowed."""
    if isinstance(address, ipaddress.IPv6Address):
        address = _embedded_ipv4(address) or address
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address in _LINK_LOCAL_V4 or address in _LINK_LOCAL_V6:
        return "a link-local address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast address"
    return None


def is_loopback_host(host: str) -> bool:
    """Return whether the host as written names this machine (127.0.0.0/8, ::1, localhost)."""
    address = parse_address(host)
    if address is not None:
        return address.is_loopback
    return host.lower().rstrip(".") in _LOOPBACK_NAMES


def check_url(url: str, *, allow_http: bool = False) -> URL:
    """Return the parsed URL, or raise UnsafeUrlError saying which rule it breaks.

    https only, except http to a loopback host (or to any host with `allow_http`, for receivers
    on an internal network such as Alertmanager); no user or password in the URL; no host that
    is, or is named as, a link-local, metadata, unspecified or multicast address.
    """
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise UnsafeUrlError(f"not a valid URL ({exc})") from None
    if parsed.scheme not in ("https", "http") or not parsed.is_absolute():
        raise UnsafeUrlError("must be an absolute https:// URL")
    host = parsed.raw_host
    if not host:
        raise UnsafeUrlError("has no host")
    where = describe(parsed)
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise UnsafeUrlError(
            f"{where}: a user or password in the URL is not allowed; send credentials in headers"
        )
    if parsed.scheme == "http" and not allow_http and not is_loopback_host(host):
        raise UnsafeUrlError(
            f"{where}: http is allowed only for loopback hosts (127.0.0.0/8, ::1, localhost);"
            " use https"
        )
    address = parse_address(host)
    if address is None:
        name = host.lower().rstrip(".")
        if name in _METADATA_NAMES:
            raise UnsafeUrlError(f"{where}: {name} is a cloud metadata service")
        if _NUMERIC_HOST.match(name):
            raise UnsafeUrlError(f"{where}: write an IP address in its usual dotted form")
        return parsed
    reason = address_refusal(address)
    if reason is not None:
        raise UnsafeUrlError(f"{where}: {address} is {reason}")
    return parsed


async def resolve_checked(
    url: URL, resolver: AbstractResolver, *, allow_http: bool = False
) -> list[str]:
    """Return the addresses to connect to for `url`'s host, each one checked.

    Raise UnsafeUrlError when any address is refused (a name that resolves even partly to a
    metadata address is not trusted), or when plain http would leave this machine without
    `allow_http`. Raise OSError when the name does not resolve.
    """
    host = url.raw_host
    assert host is not None
    where = describe(url)
    literal = parse_address(host)
    if literal is not None:
        candidates = [literal]
    else:
        results = await resolver.resolve(host, url.port or 0, family=socket.AF_UNSPEC)
        candidates = []
        for result in results:
            address = parse_address(result["host"])
            if address is None:
                raise UnsafeUrlError(f"{where}: resolver answered {result['host']!r}")
            candidates.append(address)
        if not candidates:
            raise OSError(f"{host} has no addresses")
    for address in candidates:
        reason = address_refusal(address)
        if reason is not None:
            raise UnsafeUrlError(f"{where}: {host} resolves to {address}, {reason}")
        if url.scheme == "http" and not allow_http and not address.is_loopback:
            raise UnsafeUrlError(
                f"{where}: {host} resolves to {address}, not loopback; http needs a loopback host"
            )
    unique: list[str] = []
    for address in candidates:
        if str(address) not in unique:
            unique.append(str(address))
    return unique
