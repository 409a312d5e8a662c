"""Provider-native prompt caching: the hints requests carry upstream, and what the provider says back.

The real anthropic and openai SDKs talk through the caching transport (and, once, the gateway) to the
fake provider, which reports cache writes and reads the way Anthropic and OpenAI do.
"""

from __future__ import annotations

import copy
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from llm_cache.middleware import AsyncCachingTransport, Cache, CachingTransport, PromptCaching
from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.config import ConfigError, parse_config
from llm_cache.middleware.gateway import create_gateway
from tests.support.fake_provider_fixtures import RunningFakeProvider

CLAUDE = "claude-sonnet-4-6"
SYSTEM = "You are the support assistant of a bicycle shop. " + "Policies: returns within 30 days. " * 60
BREAKPOINTS = {"anthropic": {"mode": "breakpoints"}}
EPHEMERAL = {"type": "ephemeral"}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def async_anthropic(cache: Cache, fake: RunningFakeProvider) -> anthropic.AsyncAnthropic:
    http_client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
    return anthropic.AsyncAnthropic(
        api_key="sk-ant-alice", base_url=fake.anthropic_base_url, http_client=http_client, max_retries=0
    )


async def ask_claude(
    client: anthropic.AsyncAnthropic, messages: list[dict[str, Any]], **extra: Any
) -> tuple[Any, anthropic.types.Message]:
    """(the response headers, the message)."""
    params: dict[str, Any] = {"model": CLAUDE, "max_tokens": 64, "messages": messages, **extra}
    raw = await client.messages.with_raw_response.create(**params)
    return raw.headers, await raw.parse()


def sent(fake: RunningFakeProvider, path_suffix: str) -> list[dict[str, Any]]:
    """The JSON bodies the provider received on paths ending with `path_suffix`, in order."""
    return [r.json for r in fake.requests if r.path.endswith(path_suffix)]


def rewrites(cache: Cache) -> dict[tuple[str, ...], float]:
    return cache.telemetry.snapshot()["llm_cache_prompt_cache_rewrites"]


# -- Anthropic --------------------------------------------------------------------------------------


async def test_anthropic_breakpoint_on_a_shared_system_prompt_is_written_once_then_read(
    fake_provider: RunningFakeProvider,
) -> None:
    cache = Cache(prompt_caching=BREAKPOINTS)
    client = async_anthropic(cache, fake_provider)

    first_headers, first = await ask_claude(client, [user("Can I return a helmet?")], system=SYSTEM)
    second_headers, second = await ask_claude(client, [user("Do you sell tyres?")], system=SYSTEM)

    assert [h["x-cache"] for h in (first_headers, second_headers)] == ["MISS", "MISS"]
    bodies = sent(fake_provider, "/v1/messages")
    assert [b["system"] for b in bodies] == [[{"type": "text", "text": SYSTEM, "cache_control": EPHEMERAL}]] * 2
    assert [b["messages"] for b in bodies] == [[user("Can I return a helmet?")], [user("Do you sell tyres?")]]
    written, read = first.usage, second.usage
    assert written.cache_creation_input_tokens > 0 and not written.cache_read_input_tokens
    assert read.cache_read_input_tokens == written.cache_creation_input_tokens and not read.cache_creation_input_tokens

    assert rewrites(cache) == {("anthropic", "anthropic_breakpoints"): 2}
    provider_cached = cache.telemetry.snapshot()["llm_cache_provider_cached_tokens"]
    assert provider_cached == {
        ("anthropic", CLAUDE, "cache_creation"): written.cache_creation_input_tokens,
        ("anthropic", CLAUDE, "cache_read"): read.cache_read_input_tokens,
    }


async def test_the_rewrite_never_changes_the_exact_cache_key(fake_provider: RunningFakeProvider) -> None:
    with_hints = Cache(prompt_caching=BREAKPOINTS)
    without = Cache()
    question = [user("Can I return a helmet?")]

    first_headers, first = await ask_claude(async_anthropic(with_hints, fake_provider), question, system=SYSTEM)
    again_headers, again = await ask_claude(async_anthropic(with_hints, fake_provider), question, system=SYSTEM)
    plain_headers, _ = await ask_claude(async_anthropic(without, fake_provider), question, system=SYSTEM)

    assert (first_headers["x-cache"], again_headers["x-cache"]) == ("MISS", "HIT")
    assert first_headers["x-cache-key"] == again_headers["x-cache-key"] == plain_headers["x-cache-key"]
    assert again.content == first.content
    assert fake_provider.count("/v1/messages") == 2  # the hit never went upstream


async def test_a_request_with_its_own_cache_control_is_sent_as_the_caller_wrote_it(
    fake_provider: RunningFakeProvider,
) -> None:
    cache = Cache(prompt_caching=BREAKPOINTS)
    own = [{"role": "user", "content": [{"type": "text", "text": "A long document.", "cache_control": EPHEMERAL}]}]

    await ask_claude(async_anthropic(cache, fake_provider), own, system=SYSTEM)

    (body,) = sent(fake_provider, "/v1/messages")
    assert body["system"] == SYSTEM  # not turned into a marked block
    assert body["messages"] == own
    assert rewrites(cache) == {}


async def test_anthropic_auto_mode_lets_the_next_turn_read_the_conversation_so_far(
    fake_provider: RunningFakeProvider,
) -> None:
    cache = Cache(prompt_caching={"anthropic": {"mode": "auto", "ttl": "1h"}})
    client = async_anthropic(cache, fake_provider)
    turn = [user("Can I return a helmet?")]

    _, first = await ask_claude(client, turn, system=SYSTEM)
    turn += [{"role": "assistant", "content": first.content[0].text}, user("And a worn one?")]
    _, second = await ask_claude(client, turn, system=SYSTEM)

    bodies = sent(fake_provider, "/v1/messages")
    assert [b["cache_control"] for b in bodies] == [{"type": "ephemeral", "ttl": "1h"}] * 2
    assert bodies[1]["messages"] == turn  # the prompt itself is untouched
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens > 0
    assert rewrites(cache) == {("anthropic", "anthropic_auto"): 2}


def test_breakpoints_skip_thinking_and_stop_at_four_keeping_the_latest_messages() -> None:
    caching = PromptCaching.model_validate(
        {
            "anthropic": {
                "mode": "breakpoints",
                "ttl": "1h",
                "points": [
                    {"location": "message", "index": 0},
                    {"location": "message", "role": "user"},
                    {"location": "message", "role": "assistant"},
                    {"location": "message", "role": "system"},
                    {"location": "tools"},
                    {"location": "message", "index": -1},  # the last user message again: one breakpoint
                ],
            }
        }
    )
    body: dict[str, Any] = {
        "model": CLAUDE,
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}, {"name": "order", "input_schema": {}}],
        "system": "Be brief.",
        "messages": [
            user("first"),
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "ok"}, {"type": "thinking", "thinking": "...", "signature": "s"}],
            },
            user("second"),
        ],
    }
    original = copy.deepcopy(body)

    assert caching.rewrite("anthropic", "messages", body) == ["anthropic_breakpoints"]

    marker = {"type": "ephemeral", "ttl": "1h"}
    assert "cache_control" not in body["tools"][0] and body["tools"][1]["cache_control"] == marker
    assert body["system"] == [{"type": "text", "text": "Be brief.", "cache_control": marker}]
    assert body["messages"][0] == original["messages"][0]  # a fifth breakpoint: the earliest message goes
    assert body["messages"][1]["content"][0]["cache_control"] == marker  # not the thinking block
    assert "cache_control" not in body["messages"][1]["content"][1]
    assert body["messages"][2]["content"] == [{"type": "text", "text": "second", "cache_control": marker}]
    assert caching.rewrite("anthropic", "messages", body) == []  # marked now: left alone


async def test_an_empty_text_block_is_never_marked(fake_provider: RunningFakeProvider) -> None:
    """Anthropic refuses `cache_control` on a text block without text, which the caller's request as
    written would not have met: the breakpoint goes on the last block with text. Before, such a system
    prompt (ending with `{"type": "text", "text": ""}`) was refused and sent again without hints."""
    cache = Cache(prompt_caching=BREAKPOINTS)
    system = [{"type": "text", "text": SYSTEM}, {"type": "text", "text": ""}]
    headers, _ = await ask_claude(
        async_anthropic(cache, fake_provider), [user("Can I return a helmet?")], system=system
    )

    assert headers["x-cache"] == "MISS" and fake_provider.count("/v1/messages") == 1
    (body,) = sent(fake_provider, "/v1/messages")
    assert body["system"] == [
        {"type": "text", "text": SYSTEM, "cache_control": EPHEMERAL},
        {"type": "text", "text": ""},
    ]


async def test_a_deferred_tool_is_never_marked(fake_provider: RunningFakeProvider) -> None:
    """Anthropic refuses `cache_control` on a tool with `defer_loading: true` (tool search loads it later,
    outside the cached prefix), which the caller's request as written would not have met: the breakpoint
    goes on the last tool that is loaded up front. Before, the request was refused, sent again without
    hints, and the hints were switched off for that caller and model from then on."""
    cache = Cache(prompt_caching=BREAKPOINTS)
    search = {"type": "tool_search_tool_regex_20251119", "name": "tool_search_tool_regex"}
    weather = {"name": "get_weather", "description": "The weather.", "input_schema": {"type": "object"}}
    deferred = {"name": "get_tides", "description": "Tides.", "input_schema": {"type": "object"}, "defer_loading": True}
    client = async_anthropic(cache, fake_provider)

    for question in ("Can I return a helmet?", "Do you sell tyres?"):
        headers, _ = await ask_claude(client, [user(question)], system=SYSTEM, tools=[search, weather, deferred])
        assert headers["x-cache"] == "MISS"

    assert fake_provider.count("/v1/messages") == 2  # each sent once
    for body in sent(fake_provider, "/v1/messages"):
        assert body["tools"] == [search, {**weather, "cache_control": EPHEMERAL}, deferred]
        assert body["system"][-1]["cache_control"] == EPHEMERAL


def test_an_injection_point_names_one_target() -> None:
    with pytest.raises(ValueError, match="exactly one of 'role' or 'index'"):
        PromptCaching.model_validate({"anthropic": {"points": [{"location": "message"}]}})
    with pytest.raises(ValueError, match="takes no 'role' or 'index'"):
        PromptCaching.model_validate({"anthropic": {"points": [{"location": "tools", "role": "user"}]}})


# -- OpenAI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("lib", [httpx2, httpx], ids=["httpx2", "httpx"])
def test_openai_requests_with_the_same_instructions_share_a_prompt_cache_key(
    fake_provider: RunningFakeProvider, lib: Any
) -> None:
    cache = Cache(prompt_caching={"openai": {"prompt_cache_key": "prefix", "retention": "24h"}})
    http_client = lib.Client(transport=CachingTransport(cache=cache))
    client = openai.OpenAI(
        api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )

    def ask(system: str, question: str, **extra: Any) -> Any:
        messages = [{"role": "system", "content": system}, user(question)]
        return client.chat.completions.create(model="gpt-4o-mini", messages=messages, **extra)

    first = ask(SYSTEM, "Can I return a helmet?")
    second = ask(SYSTEM, "Do you sell tyres?")
    other = ask("You answer questions about trains.", "Do you sell tyres?")
    own = ask(SYSTEM, "Is it open on Sunday?", prompt_cache_key="tenant-7")

    keys = [b.get("prompt_cache_key") for b in sent(fake_provider, "/chat/completions")]
    assert keys[0] == keys[1] and keys[0].startswith("llmc-")
    assert keys[2] not in (keys[0], None)
    assert keys[3] == "tenant-7"
    assert {b["prompt_cache_retention"] for b in sent(fake_provider, "/chat/completions")} == {"24h"}
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens > 0  # same prefix, same key: the provider's cache
    assert other.usage.prompt_tokens_details.cached_tokens == 0
    assert own.choices[0].message.content
    assert rewrites(cache) == {
        ("openai", "openai_prompt_cache_key"): 3,
        ("openai", "openai_prompt_cache_retention"): 4,
    }


async def test_openai_stream_carries_both_the_usage_request_and_the_cache_key(
    fake_provider: RunningFakeProvider,
) -> None:
    cache = Cache(prompt_caching={"openai": {"prompt_cache_key": "prefix"}})
    http_client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
    client = openai.AsyncOpenAI(
        api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )
    messages = [{"role": "system", "content": SYSTEM}, user("Can I return a helmet?")]

    async def streamed() -> tuple[str, list[Any]]:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
        chunks = [chunk async for chunk in stream]
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks

    text, chunks = await streamed()
    replayed, _ = await streamed()

    (body,) = sent(fake_provider, "/chat/completions")  # the second stream was a replay
    assert body["prompt_cache_key"].startswith("llmc-")
    assert body["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks)  # the caller did not ask for the usage chunk
    assert replayed == text


def test_responses_api_key_comes_from_the_instructions() -> None:
    caching = PromptCaching.model_validate({"openai": {"prompt_cache_key": "prefix"}})
    first = {"model": "gpt-5", "instructions": SYSTEM, "input": "Can I return a helmet?"}
    second = {"model": "gpt-5", "instructions": SYSTEM, "input": "Do you sell tyres?"}
    bare = {"model": "gpt-5", "input": "Do you sell tyres?"}
    for body in (first, second, bare):
        caching.rewrite("openai", "responses", body)
    assert first["prompt_cache_key"] == second["prompt_cache_key"]
    assert "prompt_cache_key" not in bare  # nothing static to share


# -- through the gateway, from a guide-style config ------------------------------------------------


def test_gateway_reads_litellm_style_injection_points(fake_provider: RunningFakeProvider) -> None:
    config = parse_config(
        {
            "caching": {"type": "in-memory"},
            "cache_control_injection_points": [{"location": "message", "role": "system"}],
        }
    )
    config.upstreams.anthropic.base_url = fake_provider.anthropic_base_url
    app = create_gateway(config)
    server = BackgroundServer(app).start()
    try:
        client = anthropic.Anthropic(base_url=server.url, api_key="sk-ant-a", max_retries=0)
        for question in ("Can I return a helmet?", "Do you sell tyres?"):
            client.messages.create(model=CLAUDE, max_tokens=64, system=SYSTEM, messages=[user(question)])
    finally:
        server.stop()
    bodies = sent(fake_provider, "/v1/messages")
    assert [b["system"][0]["cache_control"] for b in bodies] == [EPHEMERAL, EPHEMERAL]
    assert (
        app.state.cache.telemetry.snapshot()["llm_cache_provider_cached_tokens"][("anthropic", CLAUDE, "cache_read")]
        > 0
    )


def test_a_bad_prompt_caching_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"cache\.prompt_caching\.anthropic\.mode"):
        parse_config({"cache": {"prompt_caching": {"anthropic": {"mode": "always"}}}})
    with pytest.raises(ConfigError, match="cache_control_injection_points: expected a list"):
        parse_config({"caching": {"type": "in-memory"}, "cache_control_injection_points": {"role": "system"}})


# -- Gemini: explicit cachedContents --------------------------------------------------------------------

GEMINI_SYSTEM = {"parts": [{"text": "You are the support assistant of a bicycle shop. " + "Policy text. " * 400}]}
GEMINI_PATH = "/v1beta/models/gemini-2.5-flash:generateContent"
CACHED_CONTENTS = {"gemini": {"cached_contents": True}}


def gemini_body(question: str, system: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "systemInstruction": system or GEMINI_SYSTEM,
        "contents": [{"role": "user", "parts": [{"text": question}]}],
        "generationConfig": {"temperature": 0.2},
    }


def gemini_client(cache: Cache, fake: RunningFakeProvider) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        transport=AsyncCachingTransport(cache=cache),
        base_url=fake.url,
        headers={"x-goog-api-key": "gm-alice"},
    )


def created(fake: RunningFakeProvider) -> list[dict[str, Any]]:
    return sent(fake, "/v1beta/cachedContents")


async def test_a_long_gemini_system_instruction_goes_into_one_cached_content(
    fake_provider: RunningFakeProvider,
) -> None:
    cache = Cache(prompt_caching=CACHED_CONTENTS)
    client = gemini_client(cache, fake_provider)

    answers = [await client.post(GEMINI_PATH, json=gemini_body(q)) for q in ("Can I return a helmet?", "Tyres?")]

    assert [a.status_code for a in answers] == [200, 200]
    (creation,) = created(fake_provider)  # once, for both requests
    assert creation["model"] == "models/gemini-2.5-flash" and creation["systemInstruction"] == GEMINI_SYSTEM
    assert creation["ttl"] == "3600s"
    (name,) = fake_provider.cached_contents
    bodies = sent(fake_provider, ":generateContent")
    assert [b.get("cachedContent") for b in bodies] == [name, name]
    assert all("systemInstruction" not in b for b in bodies)
    assert [b["contents"] for b in bodies] == [gemini_body(q)["contents"] for q in ("Can I return a helmet?", "Tyres?")]
    assert all(a.json()["usageMetadata"]["cachedContentTokenCount"] > 0 for a in answers)
    assert rewrites(cache) == {("gcp.gemini", "gemini_cached_content"): 2}
    assert cache.telemetry.snapshot()["llm_cache_provider_cached_tokens"][
        ("gcp.gemini", "gemini-2.5-flash", "cache_read")
    ] == sum(a.json()["usageMetadata"]["cachedContentTokenCount"] for a in answers)
    again = await client.post(GEMINI_PATH, json=gemini_body("Can I return a helmet?"))
    assert again.headers["x-cache"] == "HIT"  # the exact key is the caller's body's, as always


FORBIDDEN = {"error": {"code": 403, "message": "The caller does not have permission", "status": "PERMISSION_DENIED"}}


@pytest.mark.parametrize("refusal", ["deleted", "bare 403"])
async def test_a_cached_content_gone_upstream_is_forgotten_and_the_request_sent_as_written(
    fake_provider: RunningFakeProvider, refusal: str
) -> None:
    """Deleted or expired on Gemini's side (a 404), or refused with a PERMISSION_DENIED that need not name it."""
    cache = Cache(prompt_caching=CACHED_CONTENTS)
    client = gemini_client(cache, fake_provider)
    await client.post(GEMINI_PATH, json=gemini_body("Can I return a helmet?"))
    if refusal == "deleted":
        fake_provider.cached_contents.clear()
    else:
        fake_provider.fail_next(1, status=403, body=FORBIDDEN)

    answer = await client.post(GEMINI_PATH, json=gemini_body("Do you sell tyres?"))

    assert answer.status_code == 200 and answer.headers["x-cache"] == "MISS"
    refused, resent = sent(fake_provider, ":generateContent")[1:]
    assert "cachedContent" in refused and resent == gemini_body("Do you sell tyres?")
    await client.post(GEMINI_PATH, json=gemini_body("Do you rent bikes?"))
    assert len(created(fake_provider)) == 2  # a fresh one for the next request


async def test_a_prefix_gemini_will_not_cache_is_sent_as_written_and_not_tried_again(
    fake_provider: RunningFakeProvider,
) -> None:
    cache = Cache(prompt_caching={"gemini": {"cached_contents": True, "min_chars": 100}})
    client = gemini_client(cache, fake_provider)
    short = {"parts": [{"text": "Be brief and helpful to every customer of the shop, always."}]}
    tiny = {"parts": [{"text": "Be brief."}]}

    for question in ("Can I return a helmet?", "Do you sell tyres?"):
        answer = await client.post(GEMINI_PATH, json=gemini_body(question, short))
        assert answer.status_code == 200
    await client.post(GEMINI_PATH, json=gemini_body("Hello?", tiny))  # under min_chars: no attempt at all

    assert len(created(fake_provider)) == 1  # refused once (too small for the model), remembered
    assert [b.get("systemInstruction") for b in sent(fake_provider, ":generateContent")] == [short, short, tiny]
    assert rewrites(cache) == {}


async def test_pods_sharing_a_store_share_the_cached_content(fake_provider: RunningFakeProvider) -> None:
    from llm_cache.middleware.stores import MemoryStore

    shared = MemoryStore()
    one, two = Cache(shared, prompt_caching=CACHED_CONTENTS), Cache(shared, prompt_caching=CACHED_CONTENTS)
    await gemini_client(one, fake_provider).post(GEMINI_PATH, json=gemini_body("Can I return a helmet?"))
    await gemini_client(two, fake_provider).post(GEMINI_PATH, json=gemini_body("Do you sell tyres?"))
    assert len(created(fake_provider)) == 1

    other_key = httpx2.AsyncClient(
        transport=AsyncCachingTransport(cache=two), base_url=fake_provider.url, headers={"x-goog-api-key": "gm-bob"}
    )
    await other_key.post(GEMINI_PATH, json=gemini_body("Do you sell tyres?"))
    assert len(created(fake_provider)) == 2  # a cachedContent belongs to its credential


def test_the_sync_transport_names_the_cached_content_too(fake_provider: RunningFakeProvider) -> None:
    cache = Cache(prompt_caching=CACHED_CONTENTS)
    with httpx2.Client(
        transport=CachingTransport(cache=cache), base_url=fake_provider.url, headers={"x-goog-api-key": "gm-alice"}
    ) as client:
        answers = [client.post(GEMINI_PATH, json=gemini_body(q)) for q in ("Can I return a helmet?", "Tyres?")]
        fake_provider.cached_contents.clear()
        resent = client.post(GEMINI_PATH, json=gemini_body("Do you rent bikes?"))
    assert [a.status_code for a in answers] == [200, 200] and resent.status_code == 200
    assert [b.get("cachedContent") is not None for b in sent(fake_provider, ":generateContent")] == [
        True,
        True,
        True,  # refused: gone upstream
        False,  # sent again as written
    ]


def test_the_gateway_creates_and_names_cached_contents_through_its_own_proxy(
    fake_provider: RunningFakeProvider,
) -> None:
    config = parse_config({"cache": {"store": {"type": "memory"}, "prompt_caching": CACHED_CONTENTS}})
    config.upstreams.gemini.base_url = fake_provider.url
    server = BackgroundServer(create_gateway(config)).start()
    try:
        with httpx2.Client(base_url=server.url, headers={"x-goog-api-key": "gm-alice"}, timeout=10) as client:
            first = client.post(GEMINI_PATH, json=gemini_body("Can I return a helmet?"))
            fake_provider.cached_contents.clear()
            second = client.post(GEMINI_PATH, json=gemini_body("Do you sell tyres?"))
            streamed = client.post(
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                params={"alt": "sse"},
                json=gemini_body("Do you rent bikes?"),
            )
    finally:
        server.stop()
    assert (first.status_code, second.status_code, streamed.status_code) == (200, 200, 200)
    assert first.json()["usageMetadata"]["cachedContentTokenCount"] > 0
    assert "cachedContentTokenCount" not in second.json()["usageMetadata"]  # refused, then sent as written
    assert b"cachedContentTokenCount" in streamed.content  # a fresh cachedContent
    assert len(created(fake_provider)) == 2


async def test_snake_case_fields_are_cached_too(fake_provider: RunningFakeProvider) -> None:
    cache = Cache(prompt_caching=CACHED_CONTENTS)
    client = gemini_client(cache, fake_provider)
    for question in ("Can I return a helmet?", "Do you sell tyres?"):
        body = gemini_body(question)
        body["system_instruction"] = body.pop("systemInstruction")
        assert (await client.post(GEMINI_PATH, json=body)).status_code == 200
    assert len(created(fake_provider)) == 1
    assert [set(b) & {"system_instruction", "cachedContent"} for b in sent(fake_provider, ":generateContent")] == [
        {"cachedContent"},
        {"cachedContent"},
    ]


async def test_a_request_gemini_refuses_for_itself_is_not_sent_twice(fake_provider: RunningFakeProvider) -> None:
    cache = Cache(prompt_caching=CACHED_CONTENTS)
    client = gemini_client(cache, fake_provider)
    await client.post(GEMINI_PATH, json=gemini_body("Can I return a helmet?"))
    fake_provider.fail_next(1, status=400)  # a bad request, not a missing cachedContent

    refused = await client.post(GEMINI_PATH, json=gemini_body("Do you sell tyres?"))
    after = await client.post(GEMINI_PATH, json=gemini_body("Do you rent bikes?"))

    assert refused.status_code == 400 and refused.json()["error"]["code"] == 400
    assert after.status_code == 200
    assert len(sent(fake_provider, ":generateContent")) == 3  # once each: the 400 was relayed, not retried
    assert len(created(fake_provider)) == 1  # and the cachedContent was kept


async def test_concurrent_first_requests_share_one_creation(fake_provider: RunningFakeProvider) -> None:
    import asyncio

    cache = Cache(prompt_caching=CACHED_CONTENTS)
    client = gemini_client(cache, fake_provider)
    answers = await asyncio.gather(
        *(client.post(GEMINI_PATH, json=gemini_body(f"Question {i}: do you sell tyres?")) for i in range(8))
    )
    assert {a.status_code for a in answers} == {200}
    assert len(created(fake_provider)) == 1
    assert len({b["cachedContent"] for b in sent(fake_provider, ":generateContent")}) == 1


async def test_a_creation_that_lands_while_another_request_reads_the_store_is_not_made_again(
    fake_provider: RunningFakeProvider,
) -> None:
    """A request that found nothing in the store, and joins only after the first request's creation
    has landed (a slow store read, or a sync caller's thread hop between the two steps), takes the
    name that creation gave instead of creating a second cachedContent."""
    import asyncio

    from llm_cache.middleware.stores import MemoryStore

    class SlowFirstRead(MemoryStore):
        """Answers its first registry read with what it held then, but only once `release` is set."""

        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()
            self.reading = asyncio.Event()

        async def get(self, key: str) -> bytes | None:
            value = await super().get(key)
            if "gemini-cached-content" in key and not self.reading.is_set():
                self.reading.set()
                await asyncio.wait_for(self.release.wait(), timeout=10)
            return value

    store = SlowFirstRead()
    client = gemini_client(Cache(store, prompt_caching=CACHED_CONTENTS), fake_provider)
    slow = asyncio.create_task(client.post(GEMINI_PATH, json=gemini_body("Do you sell tyres?")))
    await asyncio.wait_for(store.reading.wait(), timeout=10)
    first = await client.post(GEMINI_PATH, json=gemini_body("Can I return a helmet?"))
    store.release.set()
    second = await asyncio.wait_for(slow, timeout=10)

    assert (first.status_code, second.status_code) == (200, 200)
    assert len(created(fake_provider)) == 1
    assert len({b["cachedContent"] for b in sent(fake_provider, ":generateContent")}) == 1


def test_concurrent_first_requests_of_sync_threads_share_one_creation(fake_provider: RunningFakeProvider) -> None:
    from concurrent.futures import ThreadPoolExecutor

    cache = Cache(prompt_caching=CACHED_CONTENTS)
    with httpx2.Client(
        transport=CachingTransport(cache=cache), base_url=fake_provider.url, headers={"x-goog-api-key": "gm-alice"}
    ) as client:

        def ask(i: int) -> httpx2.Response:
            return client.post(GEMINI_PATH, json=gemini_body(f"Question {i}: do you sell tyres?"))

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(ask, range(6)))
    assert {a.status_code for a in answers} == {200}
    assert len(created(fake_provider)) == 1
    assert len({b["cachedContent"] for b in sent(fake_provider, ":generateContent")}) == 1


async def test_a_malformed_record_in_the_store_is_ignored(fake_provider: RunningFakeProvider) -> None:
    from llm_cache.middleware.stores import MemoryStore

    store = MemoryStore()
    cache = Cache(store, prompt_caching=CACHED_CONTENTS)
    client = gemini_client(cache, fake_provider)
    await client.post(GEMINI_PATH, json=gemini_body("Can I return a helmet?"))
    (key,) = [k for k in store._data if "gemini-cached-content" in k]
    await store.set(key, b'{"name": 5, "until": 9999999999}', None)

    fresh = Cache(store, prompt_caching=CACHED_CONTENTS)  # another pod, reading the store
    for question in ("Do you sell tyres?", "Do you rent bikes?"):
        assert (
            await gemini_client(fresh, fake_provider).post(GEMINI_PATH, json=gemini_body(question))
        ).status_code == 200
    names = [b.get("cachedContent") for b in sent(fake_provider, ":generateContent")]
    assert all(isinstance(name, str) for name in names)


def long_system(topic: str) -> dict[str, Any]:
    return {"parts": [{"text": f"You answer questions about {topic}. " + "Policy text. " * 400}]}


async def test_a_caller_cannot_make_the_cache_create_cached_contents_without_bound(
    fake_provider: RunningFakeProvider,
) -> None:
    """Each cachedContent is storage billed by the hour on the caller's key: a caller sending many
    distinct long prefixes gets at most `max_per_credential` live ones; the rest go as written, and
    another credential still gets its own."""
    cache = Cache(prompt_caching={"gemini": {"cached_contents": True, "max_per_credential": 2}})
    client = gemini_client(cache, fake_provider)
    topics = [f"topic {i}" for i in range(5)]

    answers = [await client.post(GEMINI_PATH, json=gemini_body("Hello?", long_system(t))) for t in topics]
    again = await client.post(GEMINI_PATH, json=gemini_body("Hello again?", long_system(topics[0])))

    assert {a.status_code for a in [*answers, again]} == {200}
    assert len(created(fake_provider)) == 2
    named = [b.get("cachedContent") for b in sent(fake_provider, ":generateContent")]
    assert [name is not None for name in named] == [True, True, False, False, False, True]
    assert [b.get("systemInstruction") for b in sent(fake_provider, ":generateContent")][2:5] == [
        long_system(t) for t in topics[2:]
    ]
    other = httpx2.AsyncClient(
        transport=AsyncCachingTransport(cache=cache), base_url=fake_provider.url, headers={"x-goog-api-key": "gm-bob"}
    )
    assert (await other.post(GEMINI_PATH, json=gemini_body("Hello?", long_system("bob's")))).status_code == 200
    assert len(created(fake_provider)) == 3


async def test_a_key_gemini_lets_create_but_refuses_to_answer_cannot_make_the_cache_create_without_bound(
    fake_provider: RunningFakeProvider,
) -> None:
    """A key allowed to create cachedContents but refused generateContent (a bare PERMISSION_DENIED, as
    an IAM role can give): each refusal sends the request again as written and forgets the handle, but
    the content it named still lives (and is billed) until it expires, so it still counts in the
    credential's `max_per_credential`: the creations stop there."""
    cache = Cache(prompt_caching={"gemini": {"cached_contents": True, "max_per_credential": 2}})
    client = gemini_client(cache, fake_provider)
    fake_provider.fail_next(20, status=403, body=FORBIDDEN, path_suffix=":generateContent")

    answers = [await client.post(GEMINI_PATH, json=gemini_body(f"Question {i}?")) for i in range(6)]

    assert {answer.status_code for answer in answers} == {403}
    assert len(created(fake_provider)) == 2


async def test_one_oauth_token_billing_two_projects_never_names_one_projects_cached_content_for_the_other(
    fake_provider: RunningFakeProvider,
) -> None:
    """With an OAuth token, `x-goog-user-project` says which project a request is billed to, and a
    cachedContent belongs to the project it was created in: another project's is refused (403)."""
    cache = Cache(prompt_caching=CACHED_CONTENTS)
    transport = AsyncCachingTransport(cache=cache)
    answers = []
    for project, question in (("shop-a", "Can I return a helmet?"), ("shop-b", "Do you sell tyres?")):
        client = httpx2.AsyncClient(
            transport=transport,
            base_url=fake_provider.url,
            headers={"authorization": "Bearer ya29.token", "x-goog-user-project": project},
        )
        answers.append(await client.post(GEMINI_PATH, json=gemini_body(question)))

    assert [a.status_code for a in answers] == [200, 200]
    assert len(created(fake_provider)) == 2
    first, second = (r for r in fake_provider.requests if r.path.endswith(":generateContent"))
    assert first.json["cachedContent"] != second.json["cachedContent"]


@pytest.mark.parametrize("parameter", ["access_token", "oauth_token"])
async def test_an_oauth_token_sent_as_a_query_parameter_creates_the_cached_content_it_names(
    fake_provider: RunningFakeProvider, parameter: str
) -> None:
    """Google takes an OAuth token as `?access_token=` (or `?oauth_token=`) as it takes `Authorization:
    Bearer`: the cachedContent is created with that token, so it is the caller's and Gemini serves the
    requests that name it (created without it, it was nobody's: each request was refused, sent again as
    written, and made another)."""
    cache = Cache(prompt_caching=CACHED_CONTENTS)
    client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache), base_url=fake_provider.url)
    path = f"{GEMINI_PATH}?{parameter}=ya29.token"

    answers = [await client.post(path, json=gemini_body(q)) for q in ("Can I return a helmet?", "Tyres?")]

    assert [a.status_code for a in answers] == [200, 200]
    (creation,) = [r for r in fake_provider.requests if r.path.endswith("/cachedContents")]
    assert creation.query == f"{parameter}=ya29.token"
    (name,) = fake_provider.cached_contents
    assert [b.get("cachedContent") for b in sent(fake_provider, ":generateContent")] == [name, name]


@pytest.mark.parametrize("status", [429, 503])
async def test_a_creation_gemini_cannot_serve_now_is_not_tried_again_by_every_request(
    fake_provider: RunningFakeProvider, status: int
) -> None:
    """While Gemini is out of quota or failing, a creation before every request would double the calls
    against that quota (and make each request wait for it): the failure is remembered for a minute,
    and requests go out as written meanwhile."""
    cache = Cache(prompt_caching=CACHED_CONTENTS)
    client = gemini_client(cache, fake_provider)
    fake_provider.fail_next(1, status=status)  # the creation

    answers = [await client.post(GEMINI_PATH, json=gemini_body(q)) for q in ("Can I return a helmet?", "Tyres?")]

    assert [a.status_code for a in answers] == [200, 200]
    assert len([r for r in fake_provider.requests if r.path.endswith("/cachedContents")]) == 1
    assert [b.get("systemInstruction") for b in sent(fake_provider, ":generateContent")] == [GEMINI_SYSTEM] * 2


async def test_a_hit_replays_the_usage_the_rewritten_miss_reported_and_counts_no_provider_caching(
    fake_provider: RunningFakeProvider,
) -> None:
    """The answer to a rewritten request is stored under the caller's own key, usage and all: a hit
    replays what the miss returned (cache writes and reads the caller's request as written would not
    have shown), and the provider-cached-tokens counter, which counts what the provider did, does not
    count it again."""
    cache = Cache(prompt_caching={**BREAKPOINTS, **CACHED_CONTENTS})
    claude = async_anthropic(cache, fake_provider)
    _, miss = await ask_claude(claude, [user("Can I return a helmet?")], system=SYSTEM)
    gemini = gemini_client(cache, fake_provider)
    gemini_miss = await gemini.post(GEMINI_PATH, json=gemini_body("Can I return a helmet?"))
    counted = dict(cache.telemetry.snapshot()["llm_cache_provider_cached_tokens"])

    hit_headers, hit = await ask_claude(claude, [user("Can I return a helmet?")], system=SYSTEM)
    gemini_hit = await gemini.post(GEMINI_PATH, json=gemini_body("Can I return a helmet?"))

    assert (hit_headers["x-cache"], gemini_hit.headers["x-cache"]) == ("HIT", "HIT")
    assert hit.usage == miss.usage and miss.usage.cache_creation_input_tokens
    assert gemini_hit.json()["usageMetadata"] == gemini_miss.json()["usageMetadata"]
    assert gemini_miss.json()["usageMetadata"]["cachedContentTokenCount"] > 0
    assert cache.telemetry.snapshot()["llm_cache_provider_cached_tokens"] == counted


async def test_a_creation_cut_short_by_the_callers_cancellation_holds_nothing_back(
    fake_provider: RunningFakeProvider,
) -> None:
    """The caller gives up while the cachedContent is being created: its slot of the credential's
    budget is given back and nothing is remembered, so the next request creates one and names it."""
    import asyncio

    cache = Cache(prompt_caching={"gemini": {"cached_contents": True, "max_per_credential": 1}})
    client = gemini_client(cache, fake_provider)
    fake_provider.hold()
    cut = asyncio.create_task(client.post(GEMINI_PATH, json=gemini_body("Can I return a helmet?")))
    await fake_provider.wait_for_in_flight_async(1)  # the creation
    cut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(cut, timeout=10)
    fake_provider.release()

    answer = await asyncio.wait_for(client.post(GEMINI_PATH, json=gemini_body("Do you sell tyres?")), timeout=10)

    assert answer.status_code == 200
    (named,) = sent(fake_provider, ":generateContent")
    assert named.get("cachedContent") in fake_provider.cached_contents


def test_a_gateway_holding_the_gemini_key_never_spends_it_on_cached_contents_by_default(
    fake_provider: RunningFakeProvider,
) -> None:
    """Its callers do not hold the key the cachedContents would be billed to: the `cachedContents`
    path is not in the default `allow` list, so requests go out as written."""
    config = parse_config({"cache": {"store": {"type": "memory"}, "prompt_caching": CACHED_CONTENTS}})
    config.upstreams.gemini.base_url = fake_provider.url
    config.upstreams.gemini.api_key = "gm-operator"
    server = BackgroundServer(create_gateway(config)).start()
    try:
        with httpx2.Client(base_url=server.url, timeout=10) as client:
            answers = [
                client.post(GEMINI_PATH, headers={"x-goog-api-key": f"junk-{i}"}, json=gemini_body(f"Q{i}?"))
                for i in range(3)
            ]
    finally:
        server.stop()
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert created(fake_provider) == []
    assert [b.get("systemInstruction") for b in sent(fake_provider, ":generateContent")] == [GEMINI_SYSTEM] * 3
