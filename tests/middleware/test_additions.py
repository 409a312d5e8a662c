"""The cache never breaks a call that works without it: an upstream that refuses what the cache adds.

The cache adds `stream_options.include_usage` to streams (so stored entries carry usage) and, when
configured, prompt-caching hints. An upstream that does not know a field answers 400 naming it
(older Azure api-versions, some OpenAI-compatible servers): the request is sent once more as the
caller wrote it, and the refusal is remembered for that upstream.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest

from llm_cache.middleware import AsyncCachingTransport, Cache, CachingTransport, PromptCaching
from llm_cache.middleware._additions import PROMPT_CACHE_HINTS, STREAM_USAGE, Additions
from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware._engine import drive
from llm_cache.middleware._hooks import Hooks
from llm_cache.middleware._types import CacheRequest, Relay, Reply
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from tests.middleware.test_plan import HEADERS, JSON, PATH, Upstream, relay_body, reply
from tests.middleware.test_relay import STREAM as CHUNKS
from tests.support.fake_provider_fixtures import RunningFakeProvider

CHAT = "/chat/completions"
MESSAGES_PATH = "/v1/messages"
SYSTEM = "You are the support assistant of a bicycle shop. " + "Policies: returns within 30 days. " * 60


def question(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def streamed_text(client: openai.OpenAI, text: str) -> str:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=question(text), stream=True)
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def test_a_stream_to_an_upstream_that_refuses_stream_options_works_and_is_remembered(
    fake_provider: RunningFakeProvider,
) -> None:
    fake_provider.refuse_field("stream_options")
    cache = Cache()
    http_client = httpx2.Client(transport=CachingTransport(cache=cache))
    client = openai.OpenAI(
        api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )

    first = streamed_text(client, "What is the capital of France?")
    assert first and fake_provider.count(CHAT) == 2  # refused once, then sent as the caller wrote it
    assert "stream_options" not in fake_provider.last.json

    second = streamed_text(client, "What is the capital of Italy?")
    assert second and fake_provider.count(CHAT) == 3  # the refusal is remembered: one call
    replay = streamed_text(client, "What is the capital of France?")
    assert replay == first and fake_provider.count(CHAT) == 3
    assert cache.stats.stored == 2


async def test_prompt_caching_hints_an_upstream_refuses_are_dropped_and_remembered(
    fake_provider: RunningFakeProvider,
) -> None:
    fake_provider.refuse_field("cache_control")
    cache = Cache(prompt_caching={"anthropic": {"mode": "breakpoints"}})
    http_client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
    client = anthropic.AsyncAnthropic(
        api_key="sk-ant-alice", base_url=fake_provider.anthropic_base_url, http_client=http_client, max_retries=0
    )

    async def ask(text: str) -> Any:
        return await client.messages.with_raw_response.create(
            model="claude-sonnet-4-6", max_tokens=64, system=SYSTEM, messages=question(text)
        )

    first = await ask("When do you open?")
    assert first.status_code == 200 and fake_provider.count("/v1/messages") == 2
    second = await ask("When do you close?")
    assert second.status_code == 200 and fake_provider.count("/v1/messages") == 3
    assert "cache_control" not in str(fake_provider.last.json)


def test_a_request_the_upstream_refuses_for_itself_is_relayed_once(fake_provider: RunningFakeProvider) -> None:
    """A 400 that names nothing the cache added is the caller's own: relayed, not retried."""
    fake_provider.refuse_field("logit_bias")
    http_client = httpx2.Client(transport=CachingTransport(cache=Cache()))
    client = openai.OpenAI(
        api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )
    with pytest.raises(openai.BadRequestError, match="logit_bias"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=question("Hi"), stream=True, logit_bias={"50256": -100}
        )
    assert fake_provider.count(CHAT) == 1


def test_a_caller_cannot_switch_an_addition_off_for_everyone(fake_provider: RunningFakeProvider) -> None:
    """A 400 about the caller's own field inside `stream_options` names `stream_options`: the request is
    sent again as written, is refused again, and the refusal is not remembered for the upstream."""
    fake_provider.refuse_field("chunk_size", named_as="stream_options.chunk_size")
    http_client = httpx2.Client(transport=CachingTransport(cache=Cache()))
    client = openai.OpenAI(
        api_key="sk-mallory", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=question("Hi"), stream=True, stream_options={"chunk_size": 1}
        )
    assert fake_provider.count(CHAT) == 2

    assert streamed_text(client, "What is the capital of Chile?")
    assert fake_provider.last.json["stream_options"] == {"include_usage": True}  # still added for everyone


async def test_a_refusal_one_caller_provokes_never_switches_the_hints_off_for_another(
    fake_provider: RunningFakeProvider,
) -> None:
    """A refusal is remembered for the caller and the model that met it. Before, it was remembered for
    the whole upstream: a caller whose own content made a hint invalid, or who named a model without
    prompt caching (the fake provider refuses `cache_control` for `claude-2*`, as Anthropic did), switched
    prompt caching off for every tenant and model of that upstream (each paying full price for its
    prompts from then on)."""
    cache = Cache(prompt_caching={"anthropic": {"mode": "breakpoints"}})
    http_client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))

    async def ask(api_key: str, text: str, model: str = "claude-2.1") -> Any:
        client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=fake_provider.anthropic_base_url, http_client=http_client, max_retries=0
        )
        answer = await client.messages.with_raw_response.create(
            model=model, max_tokens=64, system=SYSTEM, messages=question(text)
        )
        return answer.status_code, isinstance(fake_provider.last.json["system"], list)  # (hinted: blocks)

    assert await ask("sk-ant-mallory", "When do you open?") == (200, False)
    assert fake_provider.count(MESSAGES_PATH) == 2  # refused once, then sent as she wrote it
    assert await ask("sk-ant-mallory", "When do you close?") == (200, False)
    assert fake_provider.count(MESSAGES_PATH) == 3  # remembered for her and that model

    assert await ask("sk-ant-mallory", "When do you open?", "claude-sonnet-4-6") == (200, True)  # another model
    assert await ask("sk-ant-alice", "Do you sell tyres?", "claude-sonnet-4-6") == (200, True)  # another caller
    assert await ask("sk-ant-alice", "Do you fix brakes?") == (200, False)
    assert fake_provider.count(MESSAGES_PATH) == 7  # she met the refusal herself, once
    await http_client.aclose()


def test_the_gateway_retries_without_what_the_upstream_refused(fake_provider: RunningFakeProvider) -> None:
    fake_provider.refuse_field("stream_options")
    config = parse_config(
        {"cache": {"store": {"type": "memory"}}, "upstreams": {"openai": {"base_url": fake_provider.openai_base_url}}}
    )
    server = BackgroundServer(create_gateway(config)).start()
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-alice", max_retries=0)
        text = streamed_text(client, "What is the capital of Spain?")
        assert text and fake_provider.count(CHAT) == 2
        assert streamed_text(client, "What is the capital of Spain?") == text
        assert streamed_text(client, "What is the capital of Peru?") and fake_provider.count(CHAT) == 3
    finally:
        server.stop()


def test_the_usage_chunk_the_cache_asked_for_never_reaches_a_caller_of_a_gzip_stream(
    fake_provider: RunningFakeProvider,
) -> None:
    fake_provider.gzip_streams()
    cache = Cache()
    http_client = httpx2.Client(transport=CachingTransport(cache=cache))
    client = openai.OpenAI(
        api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=question("Hello?"), stream=True)
    chunks = list(stream)

    assert fake_provider.last.json["stream_options"] == {"include_usage": True}  # asked upstream
    assert chunks and all(chunk.choices for chunk in chunks)  # never a usage-only chunk for this caller
    assert all(chunk.usage is None for chunk in chunks)
    as_json = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=question("Hello?"))
    assert as_json.headers["x-cache"] == "HIT" and as_json.parse().usage is not None


def test_the_gateway_hides_the_usage_chunk_of_a_gzip_stream_too(fake_provider: RunningFakeProvider) -> None:
    fake_provider.gzip_streams()
    config = parse_config(
        {"cache": {"store": {"type": "memory"}}, "upstreams": {"openai": {"base_url": fake_provider.openai_base_url}}}
    )
    server = BackgroundServer(create_gateway(config)).start()
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-alice", max_retries=0)
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=question("Hey"), stream=True))
        assert fake_provider.last.headers["accept-encoding"] == "gzip"
        assert chunks and all(chunk.choices for chunk in chunks)
    finally:
        server.stop()


# -- the rules, driven through the plan without I/O (test_plan.py) -----------------------------------

STREAM = {"model": "gpt-4o-mini", "messages": question("What is 2+2?"), "stream": True}
MESSAGES = {"model": "claude-sonnet-4-6", "max_tokens": 64, "system": SYSTEM, "messages": question("Hours?")}
ANTHROPIC = {"x-api-key": "sk-ant-plan", "anthropic-version": "2023-06-01", "content-type": "application/json"}
SSE = {"content-type": "text/event-stream"}


def prepared(cache: Cache, body: dict[str, Any], host: str = "api.example", path: str = PATH) -> CacheRequest:
    headers = {**(ANTHROPIC if path == MESSAGES_PATH else HEADERS), "host": host}
    request = cache.prepare("POST", path, "", headers, orjson.dumps(body))
    assert isinstance(request, CacheRequest)
    return request


async def call(cache: Cache, request: CacheRequest, *answers: Reply) -> Upstream:
    """One miss through the plan, `answers` in turn from upstream; the relay is then given up."""
    upstream = Upstream(*answers)
    assert await cache.hit(request) is None
    end = await drive(cache.plan(request), upstream)
    assert isinstance(end, Relay)
    await end.recorder.abort()
    return upstream


def refusal(naming: str) -> Reply:
    return reply(400, JSON, b'{"error": {"message": "Unrecognized request argument supplied: %s"}}' % naming.encode())


@pytest.mark.parametrize("named", ["stream_options", "include_usage", "Stream_Options"])
async def test_a_400_naming_the_usage_request_in_any_case_sends_the_stream_again_without_it(named: str) -> None:
    cache = Cache()
    upstream = await call(cache, prepared(cache, STREAM), refusal(named), reply(200, SSE))
    assert [b"stream_options" in body for body in upstream.sent] == [True, False]


@pytest.mark.parametrize("named", ["cache_control", "prompt_cache_key", "prompt_cache_retention", "cachePoint"])
async def test_a_400_naming_a_prompt_caching_hint_sends_the_request_again_without_hints(
    named: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(prompt_caching={"anthropic": {"mode": "breakpoints"}})
    request = prepared(cache, MESSAGES, path=MESSAGES_PATH)
    upstream = await call(cache, request, refusal(named), reply(200, JSON))
    assert [b"cache_control" in body for body in upstream.sent] == [True, False]
    assert "refused the prompt-caching hints the cache adds" in caplog.text

    following = {**MESSAGES, "messages": question("Days?")}
    again = await call(cache, prepared(cache, following, path=MESSAGES_PATH), reply(200, JSON))
    assert again.sent == [orjson.dumps(following)]  # sent as the caller wrote it


async def test_a_400_naming_an_addition_the_request_did_not_carry_is_the_callers_own() -> None:
    """A JSON call carries no usage request: a 400 naming `stream_options` is about the caller's field."""
    cache = Cache()
    upstream = await call(cache, prepared(cache, {**STREAM, "stream": False}), refusal("stream_options"))
    assert upstream.actions == ["Forward"]


async def test_a_refusal_is_remembered_for_its_upstream_only_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    cache = Cache()
    with caplog.at_level("WARNING", logger="llm_cache.middleware"):
        await call(cache, prepared(cache, STREAM, host="old.example"), refusal("stream_options"), reply(200, SSE))
    [warning] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert warning.name == "llm_cache.middleware" and warning.getMessage() == (
        "upstream old.example chat.completions refused the stream usage capture the cache adds;"
        " sending without it for this caller and model from now on"
    )

    again = await call(cache, prepared(cache, {**STREAM, "n": 2}, host="old.example"), reply(200, SSE))
    other = await call(cache, prepared(cache, STREAM, host="new.example"), reply(200, SSE))
    assert b"stream_options" not in again.sent[0] and b"stream_options" in other.sent[0]


def test_the_refusal_warning_names_the_upstream_without_its_password_nor_a_callers_control_characters(
    fake_provider: RunningFakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """The WARNING names the upstream: the gateway's names its base URL's user info (a self-hosted server
    behind a basic-auth proxy), so the password went into the log; a `CacheMiddleware` given no upstream
    names the caller's `Host` header as sent (ESC, BEL, any length) in it. The URL is masked, the host
    escaped and cut short."""
    fake_provider.refuse_field("stream_options")
    base = fake_provider.openai_base_url.replace("http://", "http://proxy-user:pw-secret@")
    config = parse_config({"cache": {"store": {"type": "memory"}}, "upstreams": {"openai": {"base_url": base}}})
    with caplog.at_level("WARNING", logger="llm_cache.middleware"), BackgroundServer(create_gateway(config)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-alice", max_retries=0)
        assert streamed_text(client, "What is the capital of Chile?")
    [warning] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "pw-secret" not in caplog.text and "proxy-user:****@127.0.0.1" in warning

    caplog.clear()
    cache = Cache()
    host = "\x1b]0;owned\x07" + "h" * 10_000
    with caplog.at_level("WARNING", logger="llm_cache.middleware"):
        asyncio.run(call(cache, prepared(cache, STREAM, host=host), refusal("stream_options"), reply(200, SSE)))
    [warning] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert warning.isprintable() and "\\x1b]0;owned\\x07" in warning and len(warning) < 1_000


@pytest.mark.parametrize(("status", "remembered"), [(200, True), (299, True), (300, False), (500, False)])
async def test_a_refusal_is_remembered_only_once_the_request_without_the_addition_succeeds(
    status: int, remembered: bool
) -> None:
    cache = Cache()
    await call(cache, prepared(cache, STREAM), refusal("stream_options"), reply(status, SSE))
    assert prepared(cache, {**STREAM, "n": 2}).captured is not remembered


def test_the_memo_of_refusals_starts_over_past_its_bound() -> None:
    """At most 1024 (upstream, caller, model) are remembered: one more forgets them all, a known one does not."""
    cache = Cache()
    additions = Additions(PromptCaching(), cache.store, "", Hooks())

    def refuse(host: str, addition: str = STREAM_USAGE) -> None:
        request = prepared(cache, STREAM, host=host)
        request.refused = addition
        assert additions.refused(request, 200)

    def accepts(host: str, addition: str = STREAM_USAGE) -> bool:
        request = prepared(cache, STREAM, host=host)
        return additions.accepts(
            request.upstream, request.headers, request.endpoint, addition, request.scope, request.model
        )

    for n in range(1024):
        refuse(f"host-{n}.example")
    refuse("host-0.example", PROMPT_CACHE_HINTS)  # a known upstream refusing more: nothing forgotten
    assert not accepts("host-0.example") and not accepts("host-0.example", PROMPT_CACHE_HINTS)
    assert not accepts("host-1023.example")
    refuse("one-more.example")
    assert accepts("host-1.example") and not accepts("one-more.example")


@pytest.mark.parametrize("status", [401, 429, 500])
async def test_an_error_other_than_a_400_is_relayed_as_it_came_without_reading_it(status: int) -> None:
    cache = Cache(prompt_caching={"anthropic": {"mode": "breakpoints"}})
    for request in (prepared(cache, STREAM), prepared(cache, MESSAGES, path=MESSAGES_PATH)):
        upstream = await call(cache, request, reply(status, JSON, b'{"error": {"message": "stream_options"}}'))
        assert upstream.actions[-1] == "Forward" and len(upstream.sent) == 1


async def test_hints_that_cannot_be_added_leave_the_request_as_the_caller_wrote_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A body nested deeper than the rewrite can walk (a hostile one; orjson reads 1024 levels)."""
    cache = Cache(prompt_caching={"anthropic": {"mode": "breakpoints"}})
    body = orjson.dumps(MESSAGES)[:-1] + b', "metadata": {"nested": ' + b"[" * 1000 + b"]" * 1000 + b"}}"
    request = cache.prepare("POST", MESSAGES_PATH, "", ANTHROPIC, body)
    assert isinstance(request, CacheRequest)
    upstream = await call(cache, request, reply(200, JSON))
    assert upstream.sent == [request.forward_body]
    assert "rewriting the request on its way upstream failed; sending it as written" in caplog.text


async def test_a_stream_sent_again_without_the_usage_request_is_stored_as_one_without_usage() -> None:
    """So a JSON caller, who always gets usage, is not answered from it."""
    cache = Cache()
    request = prepared(cache, STREAM)
    assert await cache.hit(request) is None
    end = await drive(cache.plan(request), Upstream(refusal("stream_options"), reply(200, SSE)))
    assert isinstance(end, Relay)
    await relay_body(end, CHUNKS)
    assert cache.stats.stored == 1
    assert await cache.hit(prepared(cache, STREAM)) is not None
    assert await cache.hit(prepared(cache, {**STREAM, "stream": False})) is None
