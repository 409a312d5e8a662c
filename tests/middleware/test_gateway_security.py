"""The gateway's trust rules (docs/security.md, "Gateway"): paths stay under their upstream, LLM routes
need the configured client key, unknown models are refused, responses carry no hop-by-hop or doubled
headers, and the management API never answers 500.

Every test runs the gateway on a real uvicorn server in front of the fake provider.
"""

# ruff: noqa: F811 (the gateway fixtures are imported from test_gateway)
from __future__ import annotations

import contextlib
import gzip
import http.client
import logging
import posixpath
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import anthropic
import httpx2
import openai
import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.config import ConfigError, load_config, parse_config
from llm_cache.middleware.gateway import create_gateway, forwarded_path, upstream_url
from tests.middleware.test_gateway import ADMIN, MODEL, Gateway, chat, gateway, gateway_factory  # noqa: F401
from tests.support.fake_provider_fixtures import RunningFakeProvider

GATEWAY_KEY = "gw-key-one"
OTHER_GATEWAY_KEY = "gw-key-from-env"
UPSTREAM_KEY = "sk-upstream-secret"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}

HOSTILE_PATHS = [
    "/v1/../admin",
    "/v1/chat/../../admin/chat/completions",
    "/v1/chat/completions/..",
    "/v1/./chat/completions",
    "/v1/%2e%2e/admin",
    "/v1/%2E%2E/admin",
    "/v1/.%2e/admin",
    "/v1/%2e/chat/completions",
    "/v1/..%2fadmin",
    "/v1/..%2Fadmin/x",
    "/v1/models/%2e%2e%2f%2e%2e%2fadmin",
    "/v1/%252e%252e/admin",
    "/v1/%25252e%25252e/admin",
    "/v1/..;/admin",
    "/v1/chat\\..\\admin",
    "/v1/chat%5c..%5cadmin",
    "/v1/chat%5Cadmin",
    "/v1//chat/completions",
    "//v1/chat/completions",
    "/v1/%2f/chat",
    "/v1/chat%00/completions",
]


def raw_request(
    url: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | list[tuple[str, str]] | None = None
) -> Any:
    """One request with the path sent exactly as written (httpx would normalise dot segments), and the
    headers as given (a list may name one twice; a `host` among them is the only one sent)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    try:
        own_host = any(name.lower() == "host" for name, _ in pairs)
        connection.putrequest(method, path, skip_host=own_host, skip_accept_encoding=True)
        for name, value in [("content-length", str(len(body))), *pairs]:
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


@pytest.fixture
def based_gateway(fake_provider: RunningFakeProvider, gateway_factory: Callable[..., Gateway]) -> Gateway:  # noqa: F811
    """The OpenAI upstream is a base URL with a path: http://127.0.0.1:P/some/base/v1."""
    return gateway_factory({"upstreams": {"openai": {"base_url": f"{fake_provider.url}/some/base/v1"}}})


# -- 8. paths stay inside their upstream -----------------------------------------------------------


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_paths_that_could_leave_the_upstream_are_refused_before_forwarding(
    based_gateway: Gateway, fake_provider: RunningFakeProvider, path: str
) -> None:
    status, _, body = raw_request(based_gateway.url, "POST", path, orjson.dumps(BODY), {"authorization": "Bearer sk-a"})
    assert status == 400, (path, status, body)
    assert "refused" in orjson.loads(body)["error"]["message"]
    assert fake_provider.requests == []


def test_a_clean_path_goes_under_the_base_path(based_gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    status, _, _ = raw_request(
        based_gateway.url, "POST", "/v1/files/a%23b%3Fc?purpose=x#frag", orjson.dumps(BODY), {"x-api-key": "k"}
    )
    assert status == 404  # the fake provider has no such route: what matters is where it went
    sent = fake_provider.last
    assert sent.path == "/some/base/v1/files/a%23b%3Fc"  # the escapes stayed escapes: one segment, no query in it
    assert sent.query == "purpose=x%23frag"  # a raw "#" on the wire cannot end the URL early either
    httpx2.post(f"{based_gateway.url}/v1/chat/completions", json=BODY, headers={"x-api-key": "k"}, timeout=10)
    assert fake_provider.last.path == "/some/base/v1/chat/completions"  # the version segment is not repeated


BASE = "http://upstream.test/some/base/v1"
TRICKY_SEGMENTS = [".", "..", "%2e", "%2E%2e", "%252e", "..%2f", "%5c", "\\", "", ";", "%00", "%2f", "?", "#"]


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                [".", "..", "%2e", "%2E%2e", "%252e", "..%2f", "%5c", "\\", "", ";", "%00", "%2f", "?", "#"]
            ),
            st.text(alphabet="./%25cef\\;?#a", max_size=6),
        ),
        max_size=6,
    )
)
def test_upstream_urls_never_leave_the_base_path(segments: list[str]) -> None:
    """Whatever the path, the URL is under the base path even for an upstream that decodes it (repeatedly)
    and resolves dot segments, or upstream_url refuses it."""
    path = "/v1/" + "/".join(segments)
    try:
        url = upstream_url(BASE, path)
    except ValueError:
        assert forwarded_path(path.encode()) is None
        return
    target = urlsplit(url)
    assert (target.scheme, target.netloc, target.fragment) == ("http", "upstream.test", "")
    resolved = target.path
    for _ in range(4):
        resolved = unquote(resolved).replace("\\", "/")
        assert posixpath.normpath(resolved).startswith("/some/base/v1"), (path, url)


def test_entries_of_two_upstream_paths_never_mix(
    fake_provider: RunningFakeProvider,
    gateway_factory: Callable[..., Gateway],
    tmp_path: Path,  # noqa: F811
) -> None:
    store = {"type": "disk", "directory": str(tmp_path / "shared")}
    first = gateway_factory({"cache": {"store": store}})
    assert chat(first.openai()).headers["x-cache"] == "MISS"
    assert chat(first.openai()).headers["x-cache"] == "HIT"
    second = gateway_factory(
        {"cache": {"store": store}, "upstreams": {"openai": {"base_url": f"{fake_provider.url}/openai/v1"}}}
    )
    assert chat(second.openai()).headers["x-cache"] == "MISS"  # same store, same request, another upstream path
    # One gateway, one caller key: OpenAI's and Azure's v1 paths are different upstreams.
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
    headers = {"authorization": "Bearer k", "api-key": "k"}
    openai_answer = httpx2.post(f"{first.url}/v1/chat/completions", json=body, headers=headers, timeout=10)
    azure_answer = httpx2.post(f"{first.url}/openai/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert openai_answer.headers["x-cache"] == "MISS" and azure_answer.headers["x-cache"] == "MISS"
    assert openai_answer.headers["x-cache-key"] != azure_answer.headers["x-cache-key"]


def test_a_caller_cannot_choose_the_upstream_named_in_the_key(gateway: Gateway) -> None:
    client = gateway.openai()
    first = chat(client)
    forged = chat(client.with_options(default_headers={"x-llm-cache-upstream": "http://elsewhere/v1"}))
    assert forged.headers["x-cache"] == "HIT" and forged.headers["x-cache-key"] == first.headers["x-cache-key"]


# -- 9. LLM routes are authenticated when the config says so ---------------------------------------


@pytest.fixture
def keyed_gateway(gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider) -> Gateway:  # noqa: F811
    return gateway_factory(
        {
            "auth": {"keys": [GATEWAY_KEY, OTHER_GATEWAY_KEY]},
            "upstreams": {
                "openai": {"base_url": fake_provider.openai_base_url, "api_key": UPSTREAM_KEY},
                "anthropic": {"base_url": fake_provider.anthropic_base_url},
            },
        }
    )


def test_llm_routes_require_a_configured_key(keyed_gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    with pytest.raises(openai.AuthenticationError):
        chat(keyed_gateway.openai(api_key="sk-wrong"))
    status, _, _ = raw_request(keyed_gateway.url, "POST", "/v1/chat/completions", b"{}")
    assert status == 401
    with pytest.raises(anthropic.AuthenticationError):
        keyed_gateway.anthropic(api_key="wrong").messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert fake_provider.requests == []
    assert httpx2.get(f"{keyed_gateway.url}/health", timeout=5).status_code == 200


def test_a_key_in_the_query_is_checked_as_one_in_a_header(
    keyed_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """`?key=`, as Gemini's clients send their key (and LiteLLM's proxy accepts it)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "a key in the query"}]}
    status, _, _ = raw_request(keyed_gateway.url, "POST", "/v1/chat/completions?key=sk-wrong", orjson.dumps(body))
    assert status == 401
    assert fake_provider.requests == []
    path = f"/v1/chat/completions?alt=json&key={GATEWAY_KEY}"
    status, _, _ = raw_request(keyed_gateway.url, "POST", path, orjson.dumps(body))
    assert status == 200
    assert len(fake_provider.requests) == 1


def test_the_callers_key_is_checked_and_never_forwarded(
    keyed_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    answer = chat(keyed_gateway.openai(api_key=GATEWAY_KEY))
    assert answer.headers["x-cache"] == "MISS"
    assert fake_provider.last.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # the deployment's key
    assert chat(keyed_gateway.openai(api_key=OTHER_GATEWAY_KEY)).status_code == 200
    keyed_gateway.anthropic(api_key=GATEWAY_KEY).messages.create(  # x-api-key, as LiteLLM accepts it
        model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    sent = fake_provider.last.headers
    assert GATEWAY_KEY not in sent.values() and "x-api-key" not in sent and "authorization" not in sent


def test_a_stored_answer_is_never_served_without_the_key(keyed_gateway: Gateway) -> None:
    chat(keyed_gateway.openai(api_key=GATEWAY_KEY))
    assert chat(keyed_gateway.openai(api_key=GATEWAY_KEY)).headers["x-cache"] == "HIT"
    with pytest.raises(openai.AuthenticationError):
        chat(keyed_gateway.openai(api_key="sk-wrong"))


# -- 10. a key of the gateway's own opens model calls only ------------------------------------------


def test_with_the_owners_key_only_model_calls_are_forwarded(
    keyed_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """Any caller with a gateway key could otherwise act on the owner's account: delete its files,
    fine-tuned models and batches, read its stored responses."""
    client = keyed_gateway.openai(api_key=GATEWAY_KEY)
    for refused in (
        lambda: client.files.delete("file-owners"),
        lambda: client.files.list(),
        lambda: client.models.delete("ft:gpt-4o-mini:owner::abc"),
        lambda: client.batches.cancel("batch_owners"),
        lambda: client.responses.retrieve("resp_owners"),
    ):
        with pytest.raises(openai.PermissionDeniedError, match="upstreams.openai.allow"):
            refused()
    assert fake_provider.requests == []
    assert chat(client).status_code == 200
    with contextlib.suppress(openai.NotFoundError):  # the fake provider lists no models: it was asked
        client.models.list()
    assert [request.path for request in fake_provider.requests] == ["/v1/chat/completions", "/v1/models"]


@pytest.mark.parametrize("header", ["x-http-method-override", "X-HTTP-Method", "x-method-override"])
def test_a_method_override_is_judged_by_the_allow_rules_as_the_method_it_names(
    keyed_gateway: Gateway, fake_provider: RunningFakeProvider, header: str
) -> None:
    """Google's front ends (Gemini's upstream) act on `X-HTTP-Method-Override` as the method, and other
    servers on its variants: `GET /v1/models/<id>` (a model call) naming `DELETE` would delete the owner's
    fine-tuned model with the owner's key. The allow rules judge every method a request names."""
    path = "/v1/models/ft:gpt-4o-mini:owner::abc"
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    status, _, body = raw_request(keyed_gateway.url, "GET", path, headers={**headers, header: "delete"})
    assert status == 403 and b"DELETE /v1/models/ft:gpt-4o-mini:owner::abc" in body
    assert fake_provider.requests == []
    raw_request(keyed_gateway.url, "GET", path, headers={**headers, header: "GET"})  # the method it has: asked
    assert [request.path for request in fake_provider.requests] == [path]


MULTIPART = "multipart/form-data; boundary=b0undary"


def form_part(name: str, value: str) -> bytes:
    return f'--b0undary\r\ncontent-disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


METHODS_NAMED_ELSEWHERE = {
    # where, path, content type, body: every one names DELETE, and the default rules allow no DELETE
    "query _method (Laravel, Symfony, Gorilla)": ("/v1/chat/completions?_method=DELETE", "application/json", b"{}"),
    "query escaped, PHP-mangled (.method)": ("/v1/chat/completions?%2Emethod=delete", "application/json", b"{}"),
    "query $httpMethod (Google)": ("/v1/chat/completions?%24httpMethod=DELETE", "application/json", b"{}"),
    "query override header's name": ("/v1/chat/completions?X-HTTP-Method-Override=DELETE", "application/json", b"{}"),
    "query after a semicolon (Rack)": ("/v1/chat/completions?stream=false;_method=DELETE", "application/json", b"{}"),
    "JSON body _method (Laravel)": ("/v1/chat/completions", "application/json", b'{"_method": "DELETE"}'),
    "form body _method (Rails, Rack)": ("/v1/chat/completions", "application/x-www-form-urlencoded", b"_method=DELETE"),
    "multipart field _method": (
        "/v1/audio/transcriptions",
        MULTIPART,
        form_part("model", "whisper-1") + form_part("_method", "DELETE") + b"--b0undary--\r\n",
    ),
}


@pytest.mark.parametrize("where", list(METHODS_NAMED_ELSEWHERE))
def test_a_method_named_in_the_query_or_the_body_is_judged_by_the_allow_rules(
    keyed_gateway: Gateway, fake_provider: RunningFakeProvider, where: str
) -> None:
    """Frameworks behind a front end read the method from the query (`_method`: Laravel, Symfony,
    Gorilla; `$httpMethod`: Google's system parameter) and from form and JSON bodies (`_method`: Rails
    and Rack, Laravel): a model call naming DELETE there would act as a DELETE with the owner's key."""
    path, content_type, body = METHODS_NAMED_ELSEWHERE[where]
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", "content-type": content_type}
    status, _, answer = raw_request(keyed_gateway.url, "POST", path, body, headers=headers)
    assert status == 403 and b"does not forward DELETE /v1/" in answer, (status, answer)
    assert fake_provider.requests == []


def test_a_form_the_gateway_cannot_read_that_may_name_a_method_is_a_400(
    keyed_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """A lenient server may still read a `_method` field from a form our reader refuses (no closing
    boundary): the gateway cannot judge it, so it does not forward it with the owner's key."""
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", "content-type": MULTIPART}
    body = form_part("model", "whisper-1") + form_part("_method", "DELETE")  # never closed
    status, _, answer = raw_request(keyed_gateway.url, "POST", "/v1/audio/transcriptions", body, headers=headers)
    assert status == 400 and b"_method" in answer and fake_provider.requests == []


def test_a_compressed_body_is_judged_as_the_server_behind_reads_it(
    keyed_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """A server behind may decode a body's `content-encoding` before it reads `_method` from it: the
    gateway judges a gzip or deflate body decoded, and one in an encoding it does not decode that may
    name a method is a 400 (before, the compressed bytes were judged, and named nothing)."""
    headers = {
        "authorization": f"Bearer {GATEWAY_KEY}",
        "content-type": "application/x-www-form-urlencoded",
        "content-encoding": "gzip",
    }
    status, _, answer = raw_request(
        keyed_gateway.url, "POST", "/v1/chat/completions", gzip.compress(b"_method=DELETE"), headers=headers
    )
    assert status == 403 and b"does not forward DELETE /v1/" in answer, (status, answer)
    headers["content-encoding"] = "br"
    status, _, answer = raw_request(keyed_gateway.url, "POST", "/v1/chat/completions", b"\x0b\x03", headers=headers)
    assert status == 400 and b"_method" in answer, (status, answer)
    assert fake_provider.requests == []
    chat = {**headers, "content-type": "application/json", "content-encoding": "gzip"}
    body = gzip.compress(orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
    status, _, _ = raw_request(keyed_gateway.url, "POST", "/v1/chat/completions", body, headers=chat)
    assert status == 200 and len(fake_provider.requests) == 1  # (a compressed model call goes on as sent)


def test_a_form_of_millions_of_pairs_is_judged_in_one_pass_and_one_naming_its_method_too_often_is_a_400(
    keyed_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """64 KiB of gzip is 64 MiB of `a&`, 32 million pairs, which the gateway's form reader (`parse_qsl`)
    held as tuples on the event loop, minutes and gigabytes while every other caller waited; the cache
    reads a JSON body sent without a type as a form too (3 MiB of `&` in a string: seconds), and a
    multipart form of a million empty parts was cut apart part by part (32 MiB: 20 s). A form is now
    scanned once for its `_method` fields (`_overrides.in_body`), more than 16 of them is a form the
    gateway cannot read, and a multipart form of more than 1,000 parts is not cut apart."""
    auth = {"authorization": f"Bearer {GATEWAY_KEY}"}
    form = {**auth, "content-type": "application/x-www-form-urlencoded", "content-encoding": "gzip"}
    status, _, answer = raw_request(
        keyed_gateway.url, "POST", "/v1/chat/completions", gzip.compress(b"a&" * (32 << 20), 9), headers=form
    )
    assert status not in (400, 403) and len(fake_provider.requests) == 1, (status, answer)  # judged, forwarded
    parts = {**form, "content-type": "multipart/form-data; boundary=b"}
    empty = b"--b\r\ncontent-disposition: form-data; name=x\r\n\r\n\r\n"
    upload = gzip.compress(empty * ((32 << 20) // len(empty)) + b"--b--\r\n", 9)
    status, _, answer = raw_request(keyed_gateway.url, "POST", "/v1/audio/transcriptions", upload, headers=parts)
    assert status not in (400, 403) and len(fake_provider.requests) == 2, (status, answer)
    untyped = orjson.dumps({**BODY, "metadata": {"note": "&" * (3 << 20)}})
    status, _, answer = raw_request(keyed_gateway.url, "POST", "/v1/chat/completions", untyped, headers=auth)
    assert status == 200 and len(fake_provider.requests) == 3, (status, answer)
    many = b"&".join([b"_method=POST"] * 17)
    status, _, answer = raw_request(keyed_gateway.url, "POST", "/v1/chat/completions", many, headers=auth)
    assert status == 400 and b"_method" in answer and len(fake_provider.requests) == 3, (status, answer)


def test_a_compressed_json_body_is_judged_without_building_its_values(
    keyed_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """The gateway decodes a gzipped JSON body to read a `_method` in it, and parsed it whole: 64 KiB
    of gzip, 64 MiB of `{},`, built gigabytes of objects. A body whose text holds no `"_method"` is
    forwarded unparsed; one that does and is past 1 MiB cannot be judged (400)."""
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", "content-type": "application/json", "content-encoding": "gzip"}
    bomb = b'{"model": "gpt-4o-mini", "a": [' + b"{}," * ((60 << 20) // 3) + b"{}]}"
    status, _, answer = raw_request(keyed_gateway.url, "POST", "/v1/chat/completions", gzip.compress(bomb, 9), headers)
    assert status not in (400, 403) and len(fake_provider.requests) == 1, (status, answer)
    named = gzip.compress(b'{"_method": "POST", ' + bomb[1:], 9)
    status, _, answer = raw_request(keyed_gateway.url, "POST", "/v1/chat/completions", named, headers)
    assert status == 400 and b"_method" in answer and len(fake_provider.requests) == 1, (status, answer)


def test_a_request_naming_its_own_method_in_the_query_or_body_is_forwarded(
    keyed_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", "content-type": "application/json"}
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "_method": "POST"})
    status, _, _ = raw_request(keyed_gateway.url, "POST", "/v1/chat/completions?_method=post", body, headers=headers)
    assert status == 200 and [request.path for request in fake_provider.requests] == ["/v1/chat/completions"]


def test_callers_that_send_their_own_provider_key_reach_every_path(
    keyed_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """The Anthropic upstream of `keyed_gateway` has no key of the gateway's: callers spend their own."""
    status, _, _ = raw_request(
        keyed_gateway.url, "GET", "/v1/messages/batches", headers={"x-api-key": GATEWAY_KEY, "x-other": "1"}
    )
    assert status != 403 and [request.path for request in fake_provider.requests] == ["/v1/messages/batches"]


@pytest.mark.parametrize("openai_key", [None, UPSTREAM_KEY], ids=["callers-keys", "owners-openai-key"])
def test_an_anthropic_call_on_a_path_openai_also_serves_goes_to_anthropic(
    gateway_factory: Callable[..., Gateway],  # noqa: F811
    fake_provider: RunningFakeProvider,
    openai_key: str | None,
) -> None:
    """Anthropic serves `/v1/models` and `/v1/files` as OpenAI does, and the gateway chose the upstream by
    the path alone: the anthropic SDK's `models.list()`, `models.retrieve()` and `beta.files.list()` went
    to the OpenAI upstream, with the caller's Anthropic key (the SDK sends it as a Bearer token, which
    OpenAI and any OpenAI-compatible server read), or, on a gateway holding an OpenAI key, spending the
    owner's OpenAI key to answer an Anthropic caller with OpenAI's models. A request naming
    `anthropic-version` (every Anthropic client sends it, no OpenAI client does) is Anthropic's."""
    openai_upstream = {"base_url": f"{fake_provider.url}/openai-upstream/v1", "api_key": openai_key}
    gateway = gateway_factory(
        {"upstreams": {"openai": openai_upstream, "anthropic": {"base_url": fake_provider.anthropic_base_url}}}
    )
    client = anthropic.Anthropic(base_url=gateway.url, api_key="sk-ant-caller", max_retries=0)
    calls = [client.models.list, lambda: client.models.retrieve("claude-x"), client.beta.files.list]
    for call in calls:
        fake_provider.reset()
        with contextlib.suppress(anthropic.APIStatusError):  # what the fake provider answers is not the point
            call()
        sent = fake_provider.requests
        assert len(sent) == 1 and sent[0].path.startswith(("/v1/models", "/v1/files")), [r.path for r in sent]
        assert sent[0].headers.get("authorization") == "Bearer sk-ant-caller"  # the caller's own, at Anthropic
    fake_provider.reset()
    with contextlib.suppress(openai.APIStatusError):  # an OpenAI caller's list still goes to OpenAI
        gateway.openai().models.list()
    assert [r.path for r in fake_provider.requests] == ["/openai-upstream/v1/models"]


def test_an_anthropic_version_its_connection_header_drops_keys_the_call_to_the_upstream_it_goes_to(
    gateway_factory: Callable[..., Gateway],  # noqa: F811
    fake_provider: RunningFakeProvider,
    fake_provider_session: RunningFakeProvider,
) -> None:
    """A header that `Connection` names is for this hop only: the guard drops it before the app. The
    guard read `anthropic-version` before dropping it, and so keyed the call under the Anthropic
    upstream's URL while the proxy, which never saw the header, sent it to OpenAI's: OpenAI's answer was
    then served to the next caller asking Anthropic the same (a chat completion both serve). The family
    is read from the headers the app gets, in the guard as in the proxy."""
    openai_upstream, anthropic_upstream = fake_provider, fake_provider_session
    gateway = gateway_factory(
        {
            "upstreams": {
                "openai": {"base_url": openai_upstream.openai_base_url},
                "anthropic": {"base_url": anthropic_upstream.anthropic_base_url},
            }
        }
    )
    body = {"model": MODEL, "messages": [{"role": "user", "content": "which upstream answers me?"}]}
    version = {"authorization": "Bearer sk-caller", "anthropic-version": "2023-06-01"}
    url = f"{gateway.url}/v1/chat/completions"
    at_anthropic = anthropic_upstream.count("/chat/completions")
    hop_only = httpx2.post(url, json=body, headers={**version, "connection": "anthropic-version"}, timeout=10)
    to_anthropic = httpx2.post(url, json=body, headers=version, timeout=10)

    assert (hop_only.status_code, to_anthropic.status_code) == (200, 200)
    assert (hop_only.headers["x-cache"], to_anthropic.headers["x-cache"]) == ("MISS", "MISS")
    assert openai_upstream.count("/chat/completions") == 1
    assert anthropic_upstream.count("/chat/completions") == at_anthropic + 1


def test_the_owner_opens_more_paths_by_name(
    gateway_factory: Callable[..., Gateway],  # noqa: F811
    fake_provider: RunningFakeProvider,
) -> None:
    upstream = {"base_url": fake_provider.openai_base_url, "api_key": UPSTREAM_KEY, "allow": ["GET /v1/files"]}
    opened = gateway_factory({"auth": {"keys": [GATEWAY_KEY]}, "upstreams": {"openai": upstream}})
    client = opened.openai(api_key=GATEWAY_KEY)
    with contextlib.suppress(openai.NotFoundError):  # the fake provider has no files
        client.files.list()
    assert [request.path for request in fake_provider.requests] == ["/v1/files"]
    with pytest.raises(openai.PermissionDeniedError):
        client.files.delete("file-owners")
    with pytest.raises(openai.PermissionDeniedError):  # the owner's list replaces the default one
        chat(client)
    assert len(fake_provider.requests) == 1


MANAGEMENT_SPELLINGS = [
    ("GET", "/cache/stats"),
    ("HEAD", "/cache/stats"),
    ("OPTIONS", "/cache/stats"),
    ("TRACE", "/cache/stats"),
    ("PUT", "/cache/flush"),
    ("GET", "//cache/stats"),
    ("GET", "/cache/../cache/stats"),
    ("GET", "/v1/%2e%2e/cache/stats"),
    ("GET", "/%63ache/stats"),
    ("GET", "/cache%2Fstats"),
    ("GET", "/CACHE/stats"),
    ("GET", "/cache/stats."),
    ("GET", "/cache/stats;admin=1"),
    ("GET", "/cache/stats/"),
    ("GET", f"/cache/stats?key={ADMIN}"),
    ("GET", f"/cache/stats?admin_key={ADMIN}"),
    ("POST", "/cache/flushall"),
    ("GET", "http://gw/cache/stats"),
]


@pytest.mark.parametrize(("method", "path"), MANAGEMENT_SPELLINGS)
def test_no_spelling_of_a_management_path_answers_without_the_admin_key(
    keyed_gateway: Gateway, fake_provider: RunningFakeProvider, method: str, path: str
) -> None:
    """However a path to `/cache/*` is written (decoded, escaped, cased, dotted, with parameters, absolute)
    and whatever the method, the answer is the admin key's refusal, a refused path or method, or an LLM
    route's (the gateway key's 401): the admin key in a query string or the gateway's own key opens
    nothing. Checked and found to hold."""
    for headers in ({}, {"authorization": f"Bearer {GATEWAY_KEY}"}):
        status, _, body = raw_request(keyed_gateway.url, method, path, headers=headers)
        assert status in (400, 401, 403, 404, 405) and b"hits" not in body, (status, body)
    assert fake_provider.requests == []


@pytest.mark.parametrize("rule", ["/v1/files", "GET v1/files", "GET /v1/files extra", "G-T /v1/files"])
def test_an_allow_rule_that_does_not_read_method_and_path_is_a_config_error(rule: str) -> None:
    with pytest.raises(ConfigError, match="upstreams.openai.allow"):
        parse_config({"upstreams": {"openai": {"allow": [rule]}}})


def test_management_keeps_its_admin_key(keyed_gateway: Gateway) -> None:
    assert keyed_gateway.admin("GET", "/cache/stats").status_code == 200
    assert keyed_gateway.admin("GET", "/cache/stats", key=GATEWAY_KEY).status_code == 403


def test_metrics_need_the_admin_key_when_metrics_auth_is_set(
    gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider
) -> None:
    """`/metrics` names every model called and how often: open by default (a scraper on a private
    network), behind the admin key with `metrics_auth`, which a config without one cannot set."""
    upstreams = {"openai": {"base_url": fake_provider.openai_base_url}}
    guarded = gateway_factory({"metrics_auth": True, "upstreams": upstreams})
    assert guarded.admin("GET", "/metrics", key=None).status_code == 401
    assert guarded.admin("GET", "/metrics", key="not-the-admin-key").status_code == 403
    scraped = guarded.admin("GET", "/metrics")
    assert scraped.status_code == 200 and "llm_cache" in scraped.text
    assert gateway_factory({"upstreams": upstreams}).admin("GET", "/metrics", key=None).status_code == 200
    with pytest.raises(ConfigError, match="metrics_auth needs admin_key"):
        parse_config({"metrics_auth": True})


DEPLOYMENT_KEY = KEY = "sk-dep"


def litellm_config(tmp_path: Path, fake: RunningFakeProvider, general: dict[str, Any]) -> Path:
    data = {
        "model_list": [
            {
                "model_name": "public-model",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": fake.openai_base_url,
                    "api_key": "sk-dep",
                },
            },
            {
                "model_name": "second-model",
                "litellm_params": {"model": "openai/gpt-4o", "api_base": fake.openai_base_url, "api_key": KEY},
            },
        ],
        "litellm_settings": {"cache": True, "cache_params": {"type": "local"}},
        "general_settings": general,
    }
    path = tmp_path / "litellm.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def litellm_gateway(tmp_path: Path, fake_provider: RunningFakeProvider) -> Iterator[str]:
    path = litellm_config(tmp_path, fake_provider, {"master_key": "os.environ/TEST_MASTER_KEY"})
    config = load_config(path, env={"TEST_MASTER_KEY": "sk-master"})
    with BackgroundServer(create_gateway(config)) as server:
        yield server.url


def test_litellm_master_key_guards_every_llm_route(litellm_gateway: str, fake_provider: RunningFakeProvider) -> None:
    def client(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{litellm_gateway}/v1", api_key=key, max_retries=0)

    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError):
        client("sk-wrong").chat.completions.create(model="public-model", messages=messages)
    assert httpx2.post(f"{litellm_gateway}/v1/chat/completions", json={}, timeout=5).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client("sk-wrong").models.list()
    assert fake_provider.requests == []
    answer = client("sk-master").chat.completions.with_raw_response.create(model="public-model", messages=messages)
    assert answer.status_code == 200
    assert fake_provider.last.headers["authorization"] == "Bearer sk-dep"
    stats = httpx2.get(f"{litellm_gateway}/cache/stats", headers={"authorization": "Bearer sk-master"}, timeout=5)
    assert stats.status_code == 200  # the master key is also the admin key, as in LiteLLM


def test_a_model_outside_model_list_is_refused_naming_it(
    litellm_gateway: str, fake_provider: RunningFakeProvider
) -> None:
    client = openai.OpenAI(base_url=f"{litellm_gateway}/v1", api_key="sk-master", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="gpt-4o-unlisted"):
        client.chat.completions.create(model="gpt-4o-unlisted", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.PermissionDeniedError, match="upstreams.openai.allow"):  # not a model call
        client.files.list()
    assert fake_provider.requests == []
    assert [model.id for model in client.models.list()] == ["public-model", "second-model"]


def test_litellm_general_settings_translate() -> None:
    config = parse_config(
        {
            "model_list": [],
            "general_settings": {"master_key": "${KEY}", "max_request_size_mb": 1.5, "database_url": "x"},
        },
        env={"KEY": "sk-m"},
    )
    assert config.auth.keys == ["sk-m"] and config.admin_key == "sk-m"
    assert config.server.max_request_bytes == 1572864
    assert any(note.startswith("ignored: general_settings.database_url (") for note in config.notes)


# -- 11. responses are clean ----------------------------------------------------------------------


def header_count(headers: list[tuple[str, str]], name: str) -> int:
    return sum(1 for key, _ in headers if key.lower() == name)


def test_one_date_and_one_server_header_on_misses_and_hits(gateway: Gateway) -> None:
    for expected in ("MISS", "HIT"):
        status, headers, _ = raw_request(
            gateway.url, "POST", "/v1/chat/completions", orjson.dumps(BODY), {"authorization": "Bearer sk-a"}
        )
        assert status == 200 and dict((k.lower(), v) for k, v in headers)["x-cache"] == expected
        assert header_count(headers, "date") == 1 and header_count(headers, "server") == 1


def test_hop_by_hop_and_connection_named_headers_are_dropped_both_ways(
    gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    fake_provider.fail_next(
        1, status=500, headers={"connection": "x-upstream-hop", "x-upstream-hop": "1", "keep-alive": "timeout=5"}
    )
    status, headers, _ = raw_request(
        gateway.url,
        "POST",
        "/v1/chat/completions",
        orjson.dumps(BODY),
        {"authorization": "Bearer sk-a", "connection": "x-client-hop, keep-alive", "x-client-hop": "1", "te": "x"},
    )
    assert status == 500
    names = {key.lower() for key, _ in headers}
    assert "x-upstream-hop" not in names and "keep-alive" not in names
    sent = fake_provider.last.headers
    assert "x-client-hop" not in sent and "te" not in sent


CONNECTION_NAMING = {
    "one header": [("connection", "anthropic-beta")],
    "a list, any case": [("connection", "keep-alive, Anthropic-Beta")],
    "a second header": [("connection", "keep-alive"), ("connection", "anthropic-beta")],
}


@pytest.mark.parametrize("naming", CONNECTION_NAMING.values(), ids=CONNECTION_NAMING.keys())
def test_a_header_named_by_connection_is_keyed_as_it_is_forwarded(
    gateway: Gateway, fake_provider: RunningFakeProvider, naming: list[tuple[str, str]]
) -> None:
    """`Connection` names headers for this hop only, so the gateway drops them before forwarding; the
    cache used to key on them first. A caller sending `anthropic-beta` and naming it in `Connection` got
    an answer made without the beta stored under the beta's key, served to the next caller asking for
    it. The guard now drops them before the cache: the key is the request the upstream gets."""
    body = orjson.dumps({"model": "claude-sonnet-4-6", "max_tokens": 20, "messages": BODY["messages"]})
    sent = [("x-api-key", "sk-ant-a"), ("anthropic-version", "2023-06-01"), ("content-type", "application/json")]
    beta = ("anthropic-beta", "interleaved-thinking-2025-05-14")

    def ask(*extra: tuple[str, str]) -> tuple[str, bytes]:
        status, headers, answer = raw_request(gateway.url, "POST", "/v1/messages", body, [*sent, *extra])
        assert status == 200
        return dict((k.lower(), v) for k, v in headers)["x-cache"], answer

    named, without_beta = ask(beta, *naming)
    assert named == "MISS" and "anthropic-beta" not in fake_provider.last.headers
    assert ask() == ("HIT", without_beta)  # keyed as the request the upstream answered
    outcome, with_beta = ask(beta)
    assert outcome == "MISS" and fake_provider.last.headers["anthropic-beta"] == beta[1]
    assert with_beta != without_beta


def test_a_credential_named_by_connection_scopes_nothing(gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    """A credential the gateway will not forward does not scope the entry of the answer the upstream gives
    without it: the request has no identity, so it bypasses."""
    status, headers, _ = raw_request(
        gateway.url,
        "POST",
        "/v1/chat/completions",
        orjson.dumps(BODY),
        {"authorization": "Bearer sk-a", "content-type": "application/json", "connection": "authorization"},
    )
    assert status == 200 and dict((k.lower(), v) for k, v in headers)["x-cache"] == "BYPASS"
    assert "authorization" not in fake_provider.last.headers
    assert gateway.cache.stats.stored == 0


def test_the_cache_names_its_own_outcome_whatever_the_upstream_says(
    gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """`x-cache` and `x-cache-*` are the cache's: an upstream's (a CDN in front of the provider, another
    cache, a hostile upstream) are not passed on beside them, so a client reads one outcome, ours."""
    forged = {"x-cache": "HIT from upstream-cdn", "x-cache-key": "forged", "x-cache-similarity": "1.0"}
    fake_provider.fail_next(1, status=500, headers=forged)
    status, headers, _ = raw_request(
        gateway.url, "POST", "/v1/chat/completions", orjson.dumps(BODY), {"authorization": "Bearer sk-a"}
    )
    assert status == 500
    assert [v for k, v in headers if k.lower() == "x-cache"] == ["MISS"]
    assert [v for k, v in headers if k.lower() == "x-cache-key"] != ["forged"]
    assert header_count(headers, "x-cache-key") == 1 and header_count(headers, "x-cache-similarity") == 0


# -- 12. one request is one request ----------------------------------------------------------------


def exchange(url: str, data: bytes) -> bytes:
    """Everything a gateway answers to `data` sent on one connection, until it closes it (bounded)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def chat_request(body: bytes, framing: bytes, key: bytes = b"sk-a") -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + key + b"\r\n" + framing + b"\r\n" + body
    )


@pytest.fixture(params=["h11", "httptools"])
def parsed_gateway(request: pytest.FixtureRequest, gateway_factory: Callable[..., Gateway]) -> Gateway:  # noqa: F811
    """The gateway under each HTTP/1.1 parser uvicorn runs it with (h11; httptools with the `fast` extra)."""
    if request.param == "httptools":
        pytest.importorskip("httptools")
    return gateway_factory(http=request.param)


def test_a_request_framed_both_by_length_and_by_chunks_is_refused_and_ends_its_connection(
    parsed_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """uvicorn reads such a body by its chunks and keeps the connection, so what follows the last chunk
    is read as a second request: behind a proxy that framed the body by its `content-length`, that request
    is smuggled in, and its answer goes to whoever asks next on the proxy's connection. RFC 9112 6.3 lets a
    server refuse such a request and makes it close the connection: the guard does both."""
    smuggled = chat_request(orjson.dumps(BODY), b"content-length: %d\r\n" % len(orjson.dumps(BODY)), b"sk-b")
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(orjson.dumps(BODY)), orjson.dumps(BODY)) + smuggled
    framing = b"content-length: %d\r\ntransfer-encoding: chunked\r\n" % len(chunked)
    answer = exchange(parsed_gateway.url, chat_request(chunked, framing))
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1
    assert fake_provider.count() == 0


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"chunked, chunked", b"identity, chunked"])
def test_a_body_framed_by_chunks_under_another_coding_never_reaches_the_upstream_as_another_body(
    parsed_gateway: Gateway, fake_provider: RunningFakeProvider, coding: bytes
) -> None:
    """`transfer-encoding: gzip, chunked` frames the body by its chunks and codes what they hold: h11
    refuses it, httptools passed it on as a plain chunked body, which a proxy in front may read as a
    gzipped one. Under either parser it is refused (400) and its connection ended, as two framings are."""
    body = orjson.dumps(BODY)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    answer = exchange(
        parsed_gateway.url, chat_request(chunked, b"transfer-encoding: " + coding + b"\r\nconnection: close\r\n")
    )
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1, answer[:300]
    assert fake_provider.count() == 0


def test_two_equal_lengths_in_one_header_frame_the_body_as_one(
    parsed_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """`content-length: N, N` is one length to a server that accepts it (RFC 9110 8.6); the upstream gets
    that body, once, or the request is refused."""
    body = orjson.dumps(BODY)
    framing = b"content-length: %d, %d\r\nconnection: close\r\n" % (len(body), len(body))
    answer = exchange(parsed_gateway.url, chat_request(body, framing))
    status = int(answer.split(b" ", 2)[1])
    assert status == 400 or (status == 200 and fake_provider.last.raw == body), answer[:300]


def test_a_declared_length_goes_upstream_as_declared(
    parsed_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """A body the caller framed by its length reaches the upstream framed so (an upstream may refuse a
    chunked upload with 411), and a chunked one chunked."""
    body = orjson.dumps(BODY)
    answer = exchange(
        parsed_gateway.url, chat_request(body, b"content-length: %d\r\nconnection: close\r\n" % len(body))
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    sent = fake_provider.last
    assert (sent.raw, sent.headers.get("content-length"), sent.headers.get("transfer-encoding")) == (
        body,
        str(len(body)),
        None,
    )


class _Ending(logging.Handler):
    """The records that say how the gateway's server thread ended a request: the gateway's own notice
    that its client left, or the server's report of an exception the app raised (the fake provider's
    server, in its own thread, is not heard)."""

    def __init__(self, port: int) -> None:
        super().__init__(logging.INFO)
        self.thread = f"uvicorn:{port}"
        self.records: list[logging.LogRecord] = []
        self.heard = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName != self.thread:
            return
        if record.exc_info or "client left" in record.getMessage():
            self.records.append(record)
            self.heard.set()


@pytest.mark.parametrize(
    ("holds_key", "path", "key"),
    [
        (False, "/v1/chat/completions", b"authorization: Bearer sk-a"),  # the cache reads the body
        (False, "/v1/files", b"authorization: Bearer sk-a"),  # streamed upstream as it arrives
        (True, "/v1/chat/completions", b"authorization: Bearer sk-a"),  # read whole to judge a `_method`
        (False, "/cache/flush", b"x-admin-key: " + ADMIN.encode()),  # a management body
    ],
    ids=["cached", "streamed", "judged", "management"],
)
def test_a_client_that_leaves_halfway_through_its_body_raises_nothing_into_the_server(
    gateway_factory: Callable[..., Gateway],  # noqa: F811
    fake_provider: RunningFakeProvider,
    caplog: pytest.LogCaptureFixture,
    holds_key: bool,
    path: str,
    key: bytes,
) -> None:
    """Starlette raises `ClientDisconnect` where the app reads a body its client stopped sending. The
    gateway let it out of every route that reads one (the cache's, a streamed upload's, a body judged
    for a `_method`, a management call's): every caller that hung up mid-upload wrote an ERROR and a
    traceback into the server's log, as an exception of the app. It is now the client's leaving,
    noted at INFO; nothing reaches the upstream whole."""
    upstream = {"base_url": fake_provider.openai_base_url, **({"api_key": UPSTREAM_KEY} if holds_key else {})}
    gateway = gateway_factory({"upstreams": {"openai": upstream}})
    body = orjson.dumps({**BODY, "input": "x" * 50_000})
    head = b"POST %s HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n%s\r\n" % (path.encode(), key)
    ending = _Ending(gateway.server.port)
    caplog.set_level(logging.INFO, logger="llm_cache.middleware.gateway")
    loggers = [logging.getLogger("uvicorn.error"), logging.getLogger("llm_cache.middleware.gateway")]
    for logger in loggers:
        logger.addHandler(ending)
    try:
        parts = urlsplit(gateway.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
            connection.sendall(head + b"content-length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])
        assert ending.heard.wait(10), "the gateway said nothing of the request within 10 s"
    finally:
        for logger in loggers:
            logger.removeHandler(ending)
    assert [record.exc_info is None and "client left" in record.getMessage() for record in ending.records] == [True]
    assert fake_provider.count() == 0


def test_host_and_forwarding_headers_choose_neither_the_upstream_nor_the_key(
    gateway_factory: Callable[..., Gateway],  # noqa: F811
    fake_provider: RunningFakeProvider,
) -> None:
    """The upstream comes from the config and the key names its URL: what a caller says its request
    was addressed to, or came through, changes neither. Checked and found to hold (with every host let
    in: on 127.0.0.1 the gateway answers only loopback ones by default)."""
    gateway = gateway_factory({"server": {"allowed_hosts": ["*"]}})
    body = orjson.dumps(BODY)
    length = b"content-length: %d\r\nconnection: close\r\n" % len(body)
    keys = []
    for host in (
        b"host: gw\r\n",
        b"host: api.openai.com\r\n",
        b"host: gw\r\nx-forwarded-host: evil.example\r\nx-forwarded-proto: https\r\nx-forwarded-prefix: /x\r\n",
        b"host: gw\r\nforwarded: for=192.0.2.1;host=evil.example;proto=https\r\n",
    ):
        answer = exchange(gateway.url, chat_request(body, length).replace(b"host: localhost\r\n", host, 1))
        head = dict(line.split(b": ", 1) for line in answer.split(b"\r\n\r\n")[0].split(b"\r\n")[1:])
        keys.append(head[b"x-cache-key"])
    assert len(set(keys)) == 1 and fake_provider.count() == 1
    assert fake_provider.last.headers["host"] == f"{fake_provider.host}:{fake_provider.port}"


# -- management never answers 500 -----------------------------------------------------------------

ODD_BODIES = [
    b'{"path": "/v1/chat/completions", "body": {"model": "m"}, "headers": {"authorization": 5, "x": [1, {"y": null}]}}',
    b'{"path": "/v1/chat/completions", "body": {"model": "m"}, "headers": ["a"]}',
    b'{"path": "/v1/../../etc", "body": {}}',
    b'{"path": 5, "body": 5}',
    b'{"key": {"a": 1}}',
    b'{"key": ""}',
    b'{"namespace": 5}',
    b'{"prefix": ["x"]}',
    b'{"all": "yes"}',
    b'{"path": "/v1/chat/completions", "body": {"model": 1e400, "n": 123456789012345678901234567890}}',
    b'{"path": "/v1/chat/completions", "body": {"messages": NaN}}',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b"\xff\xfe\x00garbage",
    b'{"path": "/v1/chat/completions", "body": {"model": "m", "messages": [' + b'{"x":1},' * 100000 + b"1]}}",
    b"x" * (2 * 1024 * 1024),
]


@pytest.mark.parametrize("body", ODD_BODIES, ids=range(len(ODD_BODIES)))
@pytest.mark.parametrize("endpoint", ["/cache/delete", "/cache/flush"])
def test_management_answers_odd_bodies_without_a_500(gateway: Gateway, endpoint: str, body: bytes) -> None:
    answer = gateway.admin("POST", endpoint, content=body)
    assert answer.status_code < 500, answer.text
    assert "error" in answer.json() or answer.status_code == 200


# -- web pages: DNS rebinding and cross-site requests ---------------------------------------------


@pytest.fixture
def open_gateway(gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider) -> Gateway:  # noqa: F811
    """A developer's gateway on 127.0.0.1 holding the owner's key and asking callers for none."""
    return gateway_factory(
        {"upstreams": {"openai": {"base_url": fake_provider.openai_base_url, "api_key": UPSTREAM_KEY}}}
    )


def page_request(gateway: Gateway, host: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A chat call as a page's `fetch(..., {mode: "no-cors", body})` sends it: text/plain, no credential."""
    status, _, body = raw_request(
        gateway.url,
        "POST",
        "/v1/chat/completions",
        orjson.dumps(BODY),
        [("host", host), ("content-type", "text/plain;charset=UTF-8"), *(headers or {}).items()],
    )
    return status, body


def test_a_web_page_cannot_use_a_gateway_on_loopback_by_dns_rebinding(
    open_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """A page on evil.example makes its name resolve to 127.0.0.1 once loaded: the developer's browser then
    sends the page's requests to the gateway as same-origin ones, and hands the page every answer (the
    owner's key spent, cached answers read, /metrics). Such a request names the page's host in `Host`;
    a client on this machine names a loopback one."""
    port = urlsplit(open_gateway.url).port
    rebound = f"evil.example:{port}"
    status, body = page_request(open_gateway, rebound, {"origin": f"http://{rebound}"})
    assert status == 403, body
    assert "server.allowed_hosts" in orjson.loads(body)["error"]["message"]
    for method, path in (("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/health"), ("POST", "/cache/flush")):
        status, _, _ = raw_request(open_gateway.url, method, path, headers={"host": rebound})
        assert status == 403, path
    assert fake_provider.requests == []
    loopback = (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"app.localhost:{port}", "127.0.0.2", "[::1]")
    for host in (*loopback, f"0.0.0.0:{port}", "[::]", socket.gethostname()):  # (`serve --host 0.0.0.0` prints 0.0.0.0)
        assert page_request(open_gateway, host)[0] == 200, host


def test_a_cross_site_request_from_a_browser_is_refused(
    gateway_factory: Callable[..., Gateway],  # noqa: F811
    open_gateway: Gateway,
    fake_provider: RunningFakeProvider,
) -> None:
    """Any page can send a simple cross-site POST (text/plain, no preflight) to 127.0.0.1: it cannot read
    the answer, but it spends the owner's key. Browsers name the page in `Origin`; SDK clients send none."""
    port = urlsplit(open_gateway.url).port
    for origin in ("https://evil.example", "null", f"http://localhost:{port + 1}"):
        status, body = page_request(open_gateway, f"127.0.0.1:{port}", {"origin": origin})
        assert status == 403, origin
        assert "server.allowed_origins" in orjson.loads(body)["error"]["message"]
    assert fake_provider.requests == []
    assert page_request(open_gateway, f"127.0.0.1:{port}", {"origin": f"http://127.0.0.1:{port}"})[0] == 200
    listed = gateway_factory(
        {
            "server": {"allowed_origins": ["https://app.example"]},
            "upstreams": {"openai": {"base_url": fake_provider.openai_base_url, "api_key": UPSTREAM_KEY}},
        }
    )
    assert page_request(listed, "localhost", {"origin": "https://app.example"})[0] == 200
    assert page_request(listed, "localhost", {"origin": "https://other.example"})[0] == 403


def test_allowed_hosts_names_what_a_proxy_in_front_may_send(
    gateway_factory: Callable[..., Gateway],  # noqa: F811
    fake_provider: RunningFakeProvider,
) -> None:
    upstreams = {"openai": {"base_url": fake_provider.openai_base_url}}
    named = gateway_factory({"server": {"allowed_hosts": ["gw.example"]}, "upstreams": upstreams})
    assert page_request(named, "gw.example")[0] == 200
    assert page_request(named, "GW.example:443")[0] == 200
    assert page_request(named, "localhost")[0] == 200
    assert page_request(named, "other.example")[0] == 403
    anyone = gateway_factory({"server": {"allowed_hosts": ["*"]}, "upstreams": upstreams})
    assert page_request(anyone, "other.example")[0] == 200


async def test_a_connection_to_another_address_is_judged_by_host_only_once_allowed_hosts_is_set(
    fake_provider: RunningFakeProvider,
) -> None:
    """A gateway bound to 0.0.0.0 in a container is reached on its network address under any name the
    network gives it; on that address no `Host` is refused until the operator names the hosts."""
    upstreams = {"openai": {"base_url": fake_provider.openai_base_url}}
    for server, expected in (({}, 200), ({"allowed_hosts": ["gw.example"]}, 403)):
        app = create_gateway(
            parse_config({"cache": {"store": {"type": "memory"}}, "server": server, "upstreams": upstreams})
        )
        async with app.router.lifespan_context(app):
            transport = httpx2.ASGITransport(app=app)  # the connection reached 192.0.2.10, as the URL says
            async with httpx2.AsyncClient(transport=transport, base_url="http://192.0.2.10:4000") as client:
                answer = await client.post(
                    "/v1/chat/completions", json=BODY, headers={"host": "any.name", "x-api-key": "k"}
                )
        assert answer.status_code == expected, (server, answer.text)


async def test_a_gateway_under_a_root_path_routes_on_the_path_after_it(fake_provider: RunningFakeProvider) -> None:
    """Under `uvicorn --root-path /llm` (or a Starlette `Mount`) the scope's path begins with the mount:
    the gateway works out the family, the upstream and the forwarded path from what follows it, as
    CacheMiddleware does (`_paths.mount_root`); the mount is never sent upstream."""
    upstreams = {"openai": {"base_url": fake_provider.openai_base_url}}
    app = create_gateway(parse_config({"cache": {"store": {"type": "memory"}}, "upstreams": upstreams}))
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app, root_path="/llm")
        async with httpx2.AsyncClient(transport=transport, base_url="http://localhost/llm") as client:
            answers = [
                await client.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer sk-a"})
                for _ in range(2)
            ]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    assert [a.headers.get("x-cache") for a in answers] == ["MISS", "HIT"]
    assert fake_provider.last.path == "/v1/chat/completions"
    assert len(fake_provider.requests) == 1  # the second was a hit: the entry is keyed on the real upstream


async def test_under_a_root_path_the_gateway_key_guards_what_it_guards_at_the_root(
    fake_provider: RunningFakeProvider,
) -> None:
    """The operations (`/health`, `/cache/...`) are told from model calls on the path after the mount:
    a probe of `/llm/health` is not asked for the gateway key, a model call still is."""
    upstreams = {"openai": {"base_url": fake_provider.openai_base_url}}
    config = {"cache": {"store": {"type": "memory"}}, "auth": {"keys": [GATEWAY_KEY]}, "upstreams": upstreams}
    app = create_gateway(parse_config(config))
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app, root_path="/llm")
        async with httpx2.AsyncClient(transport=transport, base_url="http://localhost/llm") as client:
            health = await client.get("/health")
            unkeyed = await client.post("/v1/chat/completions", json=BODY)
    assert (health.status_code, unkeyed.status_code) == (200, 401)
    assert fake_provider.requests == []


@pytest.mark.parametrize(
    ("server", "named"),
    [
        ({"allowed_hosts": ["https://gw.example"]}, "server.allowed_hosts"),
        ({"allowed_hosts": ["gw.example:443"]}, "server.allowed_hosts"),
        ({"allowed_origins": ["app.example"]}, "server.allowed_origins"),
        ({"allowed_origins": ["https://app.example/path"]}, "server.allowed_origins"),
    ],
)
def test_a_host_or_origin_the_rules_could_never_match_is_a_config_error(server: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        parse_config({"server": server}, env={})
