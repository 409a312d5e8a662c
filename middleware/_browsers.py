"""The requests a browser sends for a web page, which the gateway refuses (docs/security.md, "Gateway").

A gateway on a developer's machine is within reach of every page the developer opens. A page can send
it simple cross-site requests (a text/plain POST needs no preflight): it cannot read their answers, but
the gateway spends its upstream keys on them; browsers name the page in `Origin`. By DNS rebinding (the
page's own name resolves to 127.0.0.1 once the page has loaded) its requests are same-origin ones whose
answers it reads; they name the page's host in `Host`. SDK clients send no `Origin`, and name the host
they connect to, which on this machine is a loopback one. A gateway on a network address is rebound to
the same way (the name resolves to that address): there, only what browsers send is judged, as servers'
clients call it by any name the network gives it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

_MEMO = 256
"""Distinct `Host` values and local addresses judged before the memo starts again."""


LOOPBACK = "loopback"
"""A `Host` that can only mean this machine: no web page can own it in DNS."""
ADDRESS = "address"
"""An IP address literal: a page's URL naming it is served from that address, never a rebound name."""
NAME = "name"
"""Anything else, a DNS name (whatever does not parse as an address is one)."""


def _is_loopback_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return _loopback(ip)


def _loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, or unspecified (`serve --host 0.0.0.0` prints its URL with it, and clients connect to
    this machine); `::ffff:127.0.0.1` as a dual-stack socket names it."""
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback or (mapped or ip).is_unspecified


def host_name(host: bytes) -> bytes:
    """The name a `Host` value gives, without its port, in lower case (`[::1]` keeps its brackets, a
    `[` with no `]` is kept whole: no address)."""
    if host.startswith(b"["):
        name, bracket, rest = host.partition(b"]")
        return host.lower() if not bracket or rest[:1] not in (b"", b":") else name.lower() + b"]"
    return host.partition(b":")[0].lower()


def host_kind(host: bytes) -> str:
    """`LOOPBACK`, `ADDRESS` or `NAME`: what a `Host` value (a port or not) names, read as a browser
    writes it and as the lenient servers do: `localhost` and `*.localhost` (browsers resolve them
    themselves), an IPv6 literal in brackets, an IPv4 one in any form `inet_aton` takes (`127.1`,
    `0x7f.1`, `2130706433`), one final dot or none."""
    name = host_name(host).decode("latin-1")
    if name.startswith("["):
        if not name.endswith("]"):
            return NAME
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            return NAME
    else:
        name = name[:-1] if name.endswith(".") else name
        if name == "localhost" or name.endswith(".localhost"):
            return LOOPBACK
        found = _ipv4(name)
        if found is None:
            return NAME
        ip = found
    return LOOPBACK if _loopback(ip) else ADDRESS


_RADIX = {16: frozenset("0123456789abcdef"), 8: frozenset("01234567"), 10: frozenset("0123456789")}


def _ipv4(name: str) -> ipaddress.IPv4Address | None:
    """`name` as `inet_aton` reads an IPv4 address (one to four numbers, each decimal, `0x` hex or `0`
    octal, the last filling the bytes left), or None: nothing but those characters is taken."""
    parts = name.split(".")
    if not name or len(parts) > 4:
        return None
    numbers = []
    for part in parts:
        radix, digits = (16, part[2:]) if part[:2] == "0x" else (8, part[1:]) if part[:1] == "0" else (10, part)
        if not part or (digits and not set(digits) <= _RADIX[radix]) or (radix == 16 and not digits):
            return None
        numbers.append(int(digits, radix) if digits else 0)
    *leading, last = numbers
    if any(number > 255 for number in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


class BrowserRules:
    """Judges a request's `Host` and `Origin`: `refusal` is None for a request to answer.

    `Host` is judged on connections that reached a loopback address (it must be a loopback one or one
    of `allowed_hosts`), and on every connection once `allowed_hosts` is given; `*` among them lets any
    host in. On any other connection (a gateway bound to 0.0.0.0 or a LAN address, reached on that) with
    no `allowed_hosts`, a request a web page sent (`from_a_page`) must name a loopback host or an IP
    address: a rebound page names its own DNS name, and servers' clients (SDKs, curl) name any. A request
    with an `Origin` is refused unless the origin is the host the request names or one of
    `allowed_origins`. `passes` holds the `Host` values that pass on any connection: a request naming
    one and no `Origin` (nearly every request) needs no more than that one read.
    """

    def __init__(self, allowed_hosts: Iterable[str] | None, allowed_origins: Iterable[str]) -> None:
        hosts = [host.strip().lower().rstrip(".").encode("latin-1") for host in allowed_hosts or ()]
        self.any_host = b"*" in hosts
        self.every_connection = bool(hosts)
        # This machine's own name (Debian maps it to 127.0.1.1): no web page can own it.
        self.hosts = frozenset([*hosts, socket.gethostname().lower().encode("latin-1", "replace")])
        self.origins = frozenset(origin.strip().lower().rstrip("/").encode("latin-1") for origin in allowed_origins)
        self.passes: dict[bytes | None, bool] = {None: True}
        """`Host` value -> whether it passes on any connection (a loopback host, a listed one, or any with `*`)."""
        self._names: dict[bytes, bool] = {}
        """`Host` value that does not pass everywhere -> whether it is a DNS name (not an IP address)."""
        self._local: dict[str, bool] = {}

    def refusal(
        self, server: object, host: bytes | None, origin: bytes | None, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> str | None:
        """Why a request that reached `server` (the ASGI scope's local address) is refused, or None;
        `headers` (the request's) are read only for a DNS name on a connection no rule judges by `Host`."""
        if host is not None and not self._passes(host):
            named = host_name(host).decode("latin-1")[:253]
            if self.every_connection or self._reached_loopback(server):
                return (
                    f"refused: the request names the host {named!r}, not this gateway's "
                    "(a web page's DNS rebinding?); name it in server.allowed_hosts to serve it"
                )
            if self._is_name(host) and from_a_page(origin, headers):
                return (
                    f"refused: a browser's request names the host {named!r}, which may be a web page's own name "
                    "rebound to this gateway's address; name the gateway's hosts in server.allowed_hosts to serve it"
                )
        if origin is not None and origin.lower() not in self.origins and not _same_origin(origin, host):
            return (
                "refused: a web page's request (it names an Origin); "
                "list the page's origin in server.allowed_origins to serve it"
            )
        return None

    def _passes(self, host: bytes) -> bool:
        passes = self.passes.get(host)
        if passes is None:
            name = host_name(host)
            passes = self.any_host or name.rstrip(b".") in self.hosts or host_kind(host) == LOOPBACK
            if len(self.passes) >= _MEMO:
                self.passes.clear()
            self.passes[host] = passes
        return passes

    def _is_name(self, host: bytes) -> bool:
        named = self._names.get(host)
        if named is None:
            named = host_kind(host) == NAME
            if len(self._names) >= _MEMO:
                self._names.clear()
            self._names[host] = named
        return named

    def _reached_loopback(self, server: object) -> bool:
        """Whether the connection reached a loopback address (with `0.0.0.0` bound too: a page's rebound
        name resolves to 127.0.0.1). No address (a Unix socket) is no loopback: no page can reach it."""
        if not isinstance(server, (tuple, list)) or not server or not isinstance(server[0], str):
            return False
        address = server[0]
        local = self._local.get(address)
        if local is None:
            local = _is_loopback_address(address)
            if len(self._local) >= _MEMO:
                self._local.clear()
            self._local[address] = local
        return local


def from_a_page(origin: bytes | None, headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a browser sent the request for a web page: it names an `Origin`, or carries the
    `Sec-Fetch-*` headers browsers add to every request (no page can set either) and they do not say
    the user asked for it directly (`Sec-Fetch-Site: none`: typed in the address bar, a bookmark)."""
    if origin is not None:
        return True
    fetched = False
    for name, value in headers:
        if name.startswith(b"sec-fetch-"):
            if name == b"sec-fetch-site" and value.strip().lower() == b"none":
                return False
            fetched = True
    return fetched


def _same_origin(origin: bytes, host: bytes | None) -> bool:
    """Whether `origin` names the host (and port) the request was sent to: a page served from there."""
    if host is None:
        return False
    _, separator, authority = origin.partition(b"://")
    return bool(separator) and authority.lower() == host.lower()
