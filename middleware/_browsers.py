"""The requests a browser sends for a web page, which the gateway refuses (docs/security.md, "Gateway").

A gateway on a developer's machine is within reach of every page the developer opens. A page can send
it simple cross-site requests (a text/plain POST needs no preflight): it cannot read their answers, but
the gateway spends its upstream keys on them; browsers name the page in `Origin`. By DNS rebinding (the
page's own name resolves to 127.0.0.1 once the page has loaded) its requests are same-origin ones whose
answers it reads; they name the page's host in `Host`. SDK clients send no `Origin`, and name the host
they connect to, which on this machine is a loopback one.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

_MEMO = 256
"""Distinct `Host` values and local addresses judged before the memo starts again."""


def _is_loopback_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1, as a dual-stack socket names it
    return (mapped or ip).is_loopback


def host_name(host: bytes) -> bytes:
    """The name a `Host` value gives, without its port, in lower case (`[::1]` keeps its brackets)."""
    if host.startswith(b"["):
        return host.partition(b"]")[0].lower() + b"]"
    return host.partition(b":")[0].lower()


def is_loopback_name(name: bytes) -> bool:
    """Whether `name` (from `host_name`) can only mean this machine: no web page can own it in DNS.
    `0.0.0.0` too: `serve --host 0.0.0.0` prints its URL with it, and clients connect to this machine."""
    if name == b"localhost" or name.endswith(b".localhost") or name in (b"[::1]", b"0.0.0.0", b"[::]"):
        return True
    return _is_loopback_address(name.decode("latin-1"))


class BrowserRules:
    """Judges a request's `Host` and `Origin`: `refusal` is None for a request to answer.

    `Host` is judged on connections that reached a loopback address (it must be a loopback name or one of
    `allowed_hosts`), and on every connection once `allowed_hosts` is given; `*` among them lets any host
    in. A request with an `Origin` is refused unless the origin is the host the request names or one of
    `allowed_origins`. `passes` holds the `Host` values that pass on any connection: a request naming one
    and no `Origin` (nearly every request) needs no more than that one read.
    """

    def __init__(self, allowed_hosts: Iterable[str] | None, allowed_origins: Iterable[str]) -> None:
        hosts = [host.strip().lower().encode("latin-1") for host in allowed_hosts or ()]
        self.any_host = b"*" in hosts
        self.every_connection = bool(hosts)
        # This machine's own name (Debian maps it to 127.0.1.1): no web page can own it.
        self.hosts = frozenset([*hosts, socket.gethostname().lower().encode("latin-1", "replace")])
        self.origins = frozenset(origin.strip().lower().rstrip("/").encode("latin-1") for origin in allowed_origins)
        self.passes: dict[bytes | None, bool] = {}
        """`Host` value -> whether it passes on any connection (a loopback name, a listed one, or any with `*`)."""
        self._local: dict[str, bool] = {}

    def refusal(self, server: object, host: bytes | None, origin: bytes | None) -> str | None:
        """Why a request that reached `server` (the ASGI scope's local address) is refused, or None."""
        if not self._host_allowed(host, server):
            assert host is not None
            return (
                f"refused: the request names the host {host_name(host).decode('latin-1')[:253]!r}, not this "
                "gateway's (a web page's DNS rebinding?); name it in server.allowed_hosts to serve it"
            )
        if origin is not None and origin.lower() not in self.origins and not _same_origin(origin, host):
            return (
                "refused: a web page's request (it names an Origin); "
                "list the page's origin in server.allowed_origins to serve it"
            )
        return None

    def _host_allowed(self, host: bytes | None, server: object) -> bool:
        passes = self.passes.get(host)
        if passes is None:
            passes = self.any_host or host is None or host_name(host) in self.hosts or is_loopback_name(host_name(host))
            if len(self.passes) >= _MEMO:
                self.passes.clear()
            self.passes[host] = passes
        return passes or (not self.every_connection and not self._reached_loopback(server))

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


def _same_origin(origin: bytes, host: bytes | None) -> bool:
    """Whether `origin` names the host (and port) the request was sent to: a page served from there."""
    if host is None:
        return False
    _, separator, authority = origin.partition(b"://")
    return bool(separator) and authority.lower() == host.lower()
