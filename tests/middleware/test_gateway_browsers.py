"""The gateway against web pages: the `Host` a browser names and the headers that show a browser sent it
(`middleware/_browsers.py`, docs/security.md "Gateway")."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx2
import orjson
import pytest

from llm_cache.middleware._browsers import ADDRESS, LOOPBACK, NAME, host_kind
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from tests.middleware.test_gateway import Gateway, gateway_factory  # noqa: F401
from tests.middleware.test_gateway_security import BODY, UPSTREAM_KEY, open_gateway, page_request  # noqa: F401
from tests.support.fake_provider_fixtures import RunningFakeProvider

LAN = "http://192.0.2.10:4000"
"""The address a gateway bound to 0.0.0.0 is reached on from the network (the ASGI scope's `server`)."""


async def lan_requests(
    fake_provider: RunningFakeProvider, server: dict[str, Any], requests: list[tuple[str, str, dict[str, str]]]
) -> list[httpx2.Response]:
    """Each (method, path, headers) sent to a gateway holding the owner's key, over a connection that
    reached its network address (not a loopback one)."""
    upstreams = {"openai": {"base_url": fake_provider.openai_base_url, "api_key": UPSTREAM_KEY}}
    app = create_gateway(
        parse_config({"cache": {"store": {"type": "memory"}}, "server": server, "upstreams": upstreams})
    )
    answers = []
    transport = httpx2.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx2.AsyncClient(transport=transport, base_url=LAN) as client:
        for method, path, headers in requests:
            body = orjson.dumps(BODY) if method == "POST" else None
            answers.append(await client.request(method, path, content=body, headers=headers))
    return answers


REBOUND = "attacker.example:4000"
PAGE = {"origin": f"http://{REBOUND}", "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"}
"""What a browser sends with a page's same-origin `fetch` once the page's name resolves to the gateway."""


async def test_a_web_page_cannot_use_a_gateway_on_a_network_address_by_dns_rebinding(
    fake_provider: RunningFakeProvider,
) -> None:
    """A page on attacker.example makes its name resolve to the gateway's LAN address: the browser sends
    its requests there as same-origin ones (`Origin` and `Host` agree), and hands the page the answers.
    With no `server.allowed_hosts`, a browser's request (an `Origin`, or `Sec-Fetch-*` from a page) naming
    a DNS name is refused, saying what to set."""
    same_origin_get = {"host": REBOUND, "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"}
    answers = await lan_requests(
        fake_provider,
        {},
        [
            ("POST", "/v1/chat/completions", {"host": REBOUND, **PAGE}),
            ("GET", "/v1/models", same_origin_get),  # a same-origin GET: no Origin, Sec-Fetch-* says a page
            ("GET", "/metrics", same_origin_get),
            ("POST", "/v1/chat/completions", {"host": "attacker.example.", "origin": "http://attacker.example."}),
        ],
    )
    for answer in answers:
        assert answer.status_code == 403, answer.request.url
        assert "server.allowed_hosts" in answer.json()["error"]["message"]
        assert "'attacker.example" in answer.json()["error"]["message"]
    assert fake_provider.requests == []


async def test_server_to_server_clients_and_browsers_naming_an_address_keep_working_on_a_network_address(
    fake_provider: RunningFakeProvider,
) -> None:
    """SDKs and curl send no `Origin` and no `Sec-Fetch-*`: any name the network gives the gateway (a
    Kubernetes service name) keeps working. A browser naming an IP address, `localhost` or a listed host
    cannot be a rebound page; one the user typed into the address bar (`Sec-Fetch-Site: none`) is no page."""
    service = "llm-cache.default.svc.cluster.local:4000"
    requests = [
        ("POST", "/v1/chat/completions", {"host": service}),
        ("POST", "/v1/chat/completions", {"host": "192.0.2.10:4000", "origin": LAN, "sec-fetch-site": "same-origin"}),
        ("GET", "/health", {"host": service, "sec-fetch-site": "none", "sec-fetch-mode": "navigate"}),
    ]
    for answer in await lan_requests(fake_provider, {}, requests):
        assert answer.status_code == 200, (answer.request.headers, answer.text)
    listed = await lan_requests(
        fake_provider,
        {"allowed_hosts": ["gw.example"], "allowed_origins": ["https://app.example"]},
        [
            ("POST", "/v1/chat/completions", {"host": "gw.example:4000", "origin": "http://gw.example:4000"}),
            ("POST", "/v1/chat/completions", {"host": "gw.example", "origin": "https://app.example"}),
        ],
    )
    assert [answer.status_code for answer in listed] == [200, 200], [answer.text for answer in listed]


HOST_SPELLINGS = [
    ("127.0.0.1", LOOPBACK),
    ("127.0.0.2", LOOPBACK),
    ("127.1", LOOPBACK),
    ("127.0.1", LOOPBACK),
    ("2130706433", LOOPBACK),
    ("0x7f.1", LOOPBACK),
    ("0177.0.0.1", LOOPBACK),
    ("127.0.0.1.", LOOPBACK),
    ("[::1]", LOOPBACK),
    ("[0:0:0:0:0:0:0:1]", LOOPBACK),
    ("[::ffff:127.0.0.1]", LOOPBACK),
    ("[::FFFF:7f00:1]", LOOPBACK),
    ("localhost", LOOPBACK),
    ("LOCALHOST", LOOPBACK),
    ("localhost.", LOOPBACK),
    ("app.localhost", LOOPBACK),
    ("App.LocalHost.", LOOPBACK),
    ("0.0.0.0", LOOPBACK),
    ("[::]", LOOPBACK),
    ("192.0.2.10", ADDRESS),
    ("[2001:db8::1]", ADDRESS),
    ("[::ffff:192.0.2.10]", ADDRESS),
    ("10.1", ADDRESS),
    ("evil.example", NAME),
    ("localhost.evil.example", NAME),
    ("127.0.0.1.evil.example", NAME),
    ("127.0.0.1.5", NAME),
    ("127.0.0.256", NAME),
    ("1.2.3.4x", NAME),
    ("0x", NAME),
    ("1_0.0.0.1", NAME),
    ("[::1", NAME),
    ("[::1]x", NAME),
    ("[evil.example]", NAME),
    ("", NAME),
    ("::1", NAME),
]


@pytest.mark.parametrize(("host", "kind"), HOST_SPELLINGS)
@pytest.mark.parametrize("port", ["", ":4000"])
def test_every_spelling_of_a_loopback_host_is_loopback_and_what_does_not_parse_is_a_name(
    host: str, kind: str, port: str
) -> None:
    assert host_kind((host + port).encode("latin-1")) == kind


def test_a_gateway_on_loopback_answers_every_loopback_spelling_and_refuses_the_rest(
    open_gateway: Gateway,  # noqa: F811
    fake_provider: RunningFakeProvider,
) -> None:
    """Before, `[::ffff:127.0.0.1]`, `127.1` and `localhost.` were refused as names, and a malformed `[::1`
    was taken for `[::1]`."""
    port = f":{urlsplit(open_gateway.url).port}"
    for host, kind in HOST_SPELLINGS:
        for spelling in (host, host + port):
            status, body = page_request(open_gateway, spelling)
            assert status == (200 if kind == LOOPBACK else 403), (spelling, body)
