"""Where a webhook may go, and one POST there.

A target is an http(s) URL without credentials. Unless the operator allows it
(`webhooks_allow_private`, OPENFT_WEBHOOKS_ALLOW_PRIVATE=1), every address its host resolves to
must be public: private, loopback, link-local, IPv6 site-local, shared (CGNAT), multicast, reserved and
unspecified addresses (and IPv6 forms that embed them) are refused, at registration and again at
every delivery, after DNS resolution. The POST then connects to an address that passed the
check (the hostname still goes in the Host header and TLS SNI/certificate check), so a name that
re-resolves to an internal address between the check and the connection (DNS rebinding) cannot
reach it. Redirects are not followed. Knows nothing about endpoints, events or the database.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

ALLOW_HINT = "set OPENFT_WEBHOOKS_ALLOW_PRIVATE=1 on the server to allow it"
MAX_RESPONSE_BYTES = 64 * 1024  # read (and discard) at most this much of an answer


class TargetRefused(ValueError):
    """The URL is malformed, does not resolve, or points at a non-public address."""


@dataclass(frozen=True)
class Target:
    scheme: str   # http | https
    host: str     # hostname or IP literal, without brackets
    port: int
    path: str     # path and query, at least "/"


def parse(url: str) -> Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise TargetRefused(f"{url!r} is not a valid URL ({e}).") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused(f"{url!r} must be an http:// or https:// URL.")
    if not parts.hostname:
        raise TargetRefused(f"{url!r} has no host.")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("A webhook URL may not carry credentials (user:password@).")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(address: str) -> bool:
    """True for a globally routable unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None and not is_public(str(inner)):
            return False
    site_local = isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local  # fec0::/10: is_global misses it
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback
                                 or ip.is_link_local or ip.is_private or site_local)


def resolve(target: Target) -> list[str]:
    """The addresses `target.host` resolves to (an IP literal: itself), in the resolver's order."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as e:  # ValueError: a NUL in the name
        raise TargetRefused(f"The host {target.host} does not resolve ({e}).") from None
    out: list[str] = []
    for *_, sockaddr in infos:
        if sockaddr[0] not in out:
            out.append(sockaddr[0])
    return out


def check(url: str, *, allow_private: bool) -> tuple[Target, list[str]]:
    """(target, addresses to connect to); TargetRefused when any address is not public."""
    target = parse(url)
    addresses = resolve(target)
    if not allow_private:
        bad = [a for a in addresses if not is_public(a)]
        if bad:
            what = target.host if target.host == bad[0] else f"{target.host} resolves to {bad[0]}, which"
            raise TargetRefused(f"{what} is a private, loopback, link-local or otherwise non-public address; "
                                f"webhooks are not sent there ({ALLOW_HINT}).")
    return target, addresses


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, target: Target, address: str, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, target: Target, address: str, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_private: bool) -> int:
    """POST `body` to `url` (checked, then connected to a checked address); the HTTP status.
    Raises TargetRefused, or OSError / http.client.HTTPException when no answer came."""
    target, addresses = check(url, allow_private=allow_private)
    cls = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    last: Exception | None = None
    for address in addresses:
        conn = cls(target, address, timeout)
        try:
            conn.request("POST", target.path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read(MAX_RESPONSE_BYTES)
            return resp.status
        except ConnectionRefusedError as e:  # try the host's next address
            last = e
        finally:
            conn.close()
    raise last or OSError(f"no address to connect to for {target.host}")
