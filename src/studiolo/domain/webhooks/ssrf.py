"""Where webhooks may go (SSRF guard): the URL's shape when it is given, and the address it resolves to when it is
called, so a name that later points at 127.0.0.1 or the cloud metadata service is refused at send time too.

``STUDIOLO_WEBHOOKS_ALLOW_PRIVATE=true`` lifts the address rule (a receiver on the same host or LAN)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from studiolo.errors import InvalidInput

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_forbidden_address(ip: Address) -> bool:
    """Loopback, private, link-local (169.254.x: cloud metadata), unspecified, multicast and reserved addresses."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved
    )


def check_url(url: str, *, allow_private: bool, field: str = "webhook") -> str:
    """The URL if webhooks may be sent to it, else InvalidInput ``invalid_webhook_url`` (not an http(s) URL, or
    credentials in it) or ``webhook_url_forbidden`` (a literal private, loopback or link-local address, or
    ``localhost``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        host = None
    if len(url) > 2000 or parts.scheme not in ("http", "https") or not host:
        raise InvalidInput(
            "The webhook must be an http or https URL.", code="invalid_webhook_url", details={"field": field}
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(
            "A webhook URL must not carry credentials.", code="invalid_webhook_url", details={"field": field}
        )
    if allow_private:
        return url
    if host.rstrip(".") == "localhost" or host.rstrip(".").endswith(".localhost"):
        raise InvalidInput(
            "Webhooks may not be sent to this host.", code="webhook_url_forbidden", details={"field": field}
        )
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return url
    if is_forbidden_address(literal):
        raise InvalidInput(
            "Webhooks may not be sent to this address.", code="webhook_url_forbidden", details={"field": field}
        )
    return url


class ForbiddenDestination(Exception):
    """The receiver's name resolved to an address webhooks may not reach (a delivery error, not an API error)."""


def resolve(host: str, port: int, *, allow_private: bool) -> str:
    """The first address ``host`` resolves to that may be called; the caller connects to exactly that one."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectionError(f"cannot resolve {host}: {exc}") from exc
    for info in infos:
        address = str(info[4][0])
        if allow_private or not is_forbidden_address(ipaddress.ip_address(address.split("%")[0])):
            return address
    raise ForbiddenDestination(f"{host} resolves only to private or loopback addresses")
