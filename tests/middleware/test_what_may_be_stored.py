"""What may be stored: only a success of the endpoint's own shape, and never an answer that depends
on state the provider holds. Driven through the real caching transport against the fake provider.

A 200 whose body is an error object or a shape the adapter cannot read reaches the caller byte for
byte, is counted as not stored (with its reason), and the next identical request goes upstream.
Requests that name server-side state (a conversation, a container, a mutable store, a draft) are
counted BYPASSes: never looked up, never stored.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2
import openai
import orjson
import pytest

from llm_cache.middleware import AsyncCachingTransport, Cache, CacheMiddleware, CachingTransport
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.stores import CountingStore

CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDALICE/20261127/us-east-1/bedrock/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0123abcd"
)
QUESTION = "What is the capital of France?"


@dataclass(frozen=True)
class Call:
    """One endpoint's request, as a client would send it."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def but(self, **changes: Any) -> Call:
        return Call(self.path, {**self.body, **changes}, self.headers)

    def send(self, client: Any, headers: dict[str, str] | None = None) -> Any:
        """POST through an `httpx2` or `httpx` client."""
        return client.post(self.path, content=orjson.dumps(self.body), headers={**self.headers, **(headers or {})})


OPENAI = {"authorization": "Bearer sk-alice", "content-type": "application/json"}
BEDROCK = {"authorization": SIGV4, "x-amz-date": "20261127T050000Z", "content-type": "application/json"}
ASK = [{"role": "user", "content": QUESTION}]
CHAT = Call("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK}, OPENAI)
COMPLETIONS = Call("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": QUESTION}, OPENAI)
EMBEDDINGS = Call("/v1/embeddings", {"model": "text-embedding-3-small", "input": QUESTION}, OPENAI)
RESPONSES = Call("/v1/responses", {"model": "gpt-4o-mini", "input": QUESTION}, OPENAI)
MESSAGES = Call(
    "/v1/messages",
    {"model": "claude-3-5-haiku-latest", "max_tokens": 64, "messages": [{"role": "user", "content": QUESTION}]},
    {"x-api-key": "sk-ant-alice", "anthropic-version": "2023-06-01", "content-type": "application/json"},
)
GEMINI_KEY = {"x-goog-api-key": "AIza-alice", "content-type": "application/json"}
GENERATE = Call(
    "/v1beta/models/gemini-2.0-flash:generateContent",
    {"contents": [{"role": "user", "parts": [{"text": QUESTION}]}]},
    GEMINI_KEY,
)
EMBED = Call("/v1beta/models/text-embedding-004:embedContent", {"content": {"parts": [{"text": QUESTION}]}}, GEMINI_KEY)
INVOKE = Call(
    f"/model/{CLAUDE}/invoke",
    {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64, "messages": [{"role": "user", "content": QUESTION}]},
    BEDROCK,
)
CONVERSE = Call(
    f"/model/{CLAUDE}/converse",
    {"messages": [{"role": "user", "content": [{"text": QUESTION}]}], "inferenceConfig": {"maxTokens": 64}},
    BEDROCK,
)
ENDPOINTS = {
    "chat": CHAT,
    "completions": COMPLETIONS,
    "embeddings": EMBEDDINGS,
    "responses": RESPONSES,
    "messages": MESSAGES,
    "generate": GENERATE,
    "embed": EMBED,
    "invoke": INVOKE,
    "converse": CONVERSE,
}

ERROR_BODIES = {
    "openai": {"error": {"message": "The server had an error", "type": "server_error", "code": None}},
    "anthropic": {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    "gemini": {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
    "aws-type": {"__type": "ThrottlingException", "message": "Too many requests"},
    "aws-message": {"message": "Too many requests, please wait before trying again."},
    "aws-Message": {"Message": "The security token included in the request is invalid."},
}

CHOICE = {"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}
MALFORMED: dict[str, list[Any]] = {
    "chat": [
        {"id": "chatcmpl-1", "object": "chat.completion"},
        {"choices": "Paris"},
        {"choices": []},
        {"choices": [1]},
        {"choices": [{"index": 0, "message": "Paris", "finish_reason": "stop"}]},
        {"choices": [{"index": 0, "message": {"content": 5}, "finish_reason": "stop"}]},
        {"choices": [{"index": 0, "message": {"content": None, "tool_calls": ["call"]}, "finish_reason": "stop"}]},
        {"choices": [{**CHOICE, "finish_reason": 1}]},
        {"choices": [CHOICE], "usage": "lots"},
    ],
    "completions": [
        {"choices": {"text": "Paris"}},
        {"choices": [{"index": 0, "text": ["Paris"], "finish_reason": "stop"}]},
        {"choices": [{"index": 0, "finish_reason": "stop"}]},
    ],
    "embeddings": [
        {"object": "list", "data": []},
        {"object": "list", "data": {"embedding": [0.1]}},
        {"object": "list", "data": [{"embedding": [0.1, "x"]}]},
        {"object": "list", "data": [{"embedding": {"values": [0.1]}}]},
        {"object": "list", "data": [{"embedding": [0.1, True]}]},
    ],
    "responses": [
        {"object": "response", "status": "completed"},
        {"object": "response", "status": "completed", "output": "Paris"},
        {"object": "response", "status": "completed", "output": [1]},
        {"object": "response", "status": "completed", "output": [{"type": "message", "content": "Paris"}]},
        {"object": "response", "status": "completed", "output": [{"type": "reasoning", "summary": ["x"]}]},
        {"object": "response", "status": "completed", "output": [], "usage": [1]},
    ],
    "messages": [
        {"role": "assistant", "content": [{"type": "text", "text": "Paris"}]},
        {"type": "message", "content": "Paris"},
        {"type": "message", "content": [{"type": "text", "text": 5}]},
        {"type": "message", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]},
        {"type": "message", "content": [{"text": "Paris"}]},
        {"type": "message", "content": [], "usage": "x"},
    ],
    "generate": [
        {"promptFeedback": {"blockReason": "SAFETY"}},
        {"candidates": []},
        {"candidates": {"content": {}}},
        {"candidates": [{"content": "Paris", "finishReason": "STOP"}]},
        {"candidates": [{"content": {"parts": "Paris"}, "finishReason": "STOP"}]},
        {"candidates": [{"content": {"parts": [{"text": "Paris"}]}}]},
        {"candidates": [{"content": {"parts": []}, "finishReason": "STOP"}], "usageMetadata": 7},
    ],
    "embed": [
        {"embedding": [0.1, 0.2]},
        {"embedding": {"values": "0.1"}},
        {"embeddings": [{"values": [0.1, None]}]},
        {"embeddings": []},
    ],
    "invoke": [
        {"content": [{"type": "text", "text": "Paris"}], "stop_reason": "end_turn"},
        {"type": "message", "content": {"type": "text"}},
    ],
    "converse": [
        {"output": "Paris", "stopReason": "end_turn"},
        {"output": {"message": {"content": "Paris"}}, "stopReason": "end_turn"},
        {"output": {"message": {"content": [{"text": "Paris"}]}}},
    ],
}


def answer_next(fake: RunningFakeProvider, body: bytes, content_type: str = "application/json") -> None:
    """The fake's next answer is a 200 with exactly `body`."""
    fake.fail_next(1, status=200, body=body, headers={"content-type": content_type})


LIBS = pytest.mark.parametrize("lib", [httpx2, httpx], ids=["httpx2", "httpx"])
"""The sync transport in a client of each library."""


def client(cache: Cache, fake: RunningFakeProvider, lib: Any = httpx2) -> Any:
    return lib.Client(transport=CachingTransport(cache=cache), base_url=fake.url)


def refused_then_asked_again(
    fake: RunningFakeProvider, call: Call, body: bytes, content_type: str, lib: Any = httpx2
) -> Cache:
    """Sends `call` twice, the first answered with `body`: checks the caller got it untouched, that
    it was not stored, and that the second went upstream (and, answered properly, was stored)."""
    cache = Cache()
    answer_next(fake, body, content_type)
    with client(cache, fake, lib) as http:
        first = call.send(http)
        assert (first.status_code, first.content) == (200, body)
        assert first.headers["x-cache"] == "MISS"
        assert (cache.stats.stored, cache.stats.not_stored) == (0, 1)
        second = call.send(http)
    assert second.headers["x-cache"] == "MISS" and second.content != body
    assert fake.count() == 2
    assert (cache.stats.stored, cache.stats.not_stored) == (1, 1)
    return cache


def not_stored_reasons(cache: Cache) -> set[str]:
    return {labels[0] for labels in cache.telemetry.snapshot()["llm_cache_not_stored"]}


# -- 4. only a success of the endpoint's own shape is stored -----------------------------------


@pytest.mark.parametrize("error", ERROR_BODIES.values(), ids=ERROR_BODIES.keys())
@pytest.mark.parametrize("endpoint", ENDPOINTS.values(), ids=ENDPOINTS.keys())
def test_a_200_error_object_of_any_family_is_passed_on_and_never_stored(
    fake_provider_session: RunningFakeProvider, endpoint: Call, error: dict[str, Any]
) -> None:
    cache = refused_then_asked_again(fake_provider_session, endpoint, orjson.dumps(error), "application/json")
    assert not_stored_reasons(cache) == {"error"}


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [(ENDPOINTS[name], body) for name, bodies in MALFORMED.items() for body in bodies],
    ids=[f"{name}-{i}" for name, bodies in MALFORMED.items() for i in range(len(bodies))],
)
def test_a_200_the_adapter_cannot_read_is_passed_on_and_never_stored(
    fake_provider_session: RunningFakeProvider, endpoint: Call, body: Any
) -> None:
    cache = refused_then_asked_again(fake_provider_session, endpoint, orjson.dumps(body), "application/json")
    assert not_stored_reasons(cache) == {"invalid"}


def _sse(*events: tuple[str | None, dict[str, Any] | str]) -> bytes:
    out = b""
    for name, data in events:
        payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
        out += (b"event: " + name.encode() + b"\n" if name else b"") + b"data: " + payload + b"\n\n"
    return out


COMPLETED = {"id": "resp_1", "object": "response", "status": "completed"}
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": []}
STREAMS = {
    # A chat stream that finishes without a single choice.
    "chat-no-choice": (
        CHAT.but(stream=True),
        _sse((None, {"id": "c", "object": "chat.completion.chunk", "choices": []}), (None, "[DONE]")),
    ),
    # A completed response whose items are not objects: replaying it as events would raise.
    "responses-output-not-objects": (
        RESPONSES.but(stream=True),
        _sse(("response.completed", {"type": "response.completed", "response": {**COMPLETED, "output": ["Paris"]}})),
    ),
    # Items from `output_item.done` fill in the output: one that is not an object.
    "responses-item-not-an-object": (
        RESPONSES.but(stream=True),
        _sse(
            ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": 7}),
            ("response.completed", {"type": "response.completed", "response": COMPLETED}),
        ),
    ),
    # A message whose start does not say it is a message.
    "messages-start-not-a-message": (
        MESSAGES.but(stream=True),
        _sse(
            ("message_start", {"type": "message_start", "message": {**MESSAGE, "type": "completion"}}),
            ("message_stop", {"type": "message_stop"}),
        ),
    ),
    # Gemini chunks whose parts are not a list: merged as they came, unreadable by the SDK.
    "gemini-parts-not-a-list": (
        Call("/v1beta/models/gemini-2.0-flash:streamGenerateContent", GENERATE.body, GEMINI_KEY),
        orjson.dumps([{"candidates": [{"content": {"parts": "Paris"}, "finishReason": "STOP"}]}]),
    ),
}


@pytest.mark.parametrize(("endpoint", "stream"), STREAMS.values(), ids=STREAMS.keys())
@LIBS
def test_a_complete_stream_that_assembles_into_an_unreadable_answer_is_never_stored(
    fake_provider_session: RunningFakeProvider, endpoint: Call, stream: bytes, lib: Any
) -> None:
    media = "application/json" if stream.startswith(b"[") else "text/event-stream"
    cache = refused_then_asked_again(fake_provider_session, endpoint, stream, media, lib)
    assert not_stored_reasons(cache) == {"invalid"}


@pytest.mark.parametrize("endpoint", ENDPOINTS.values(), ids=ENDPOINTS.keys())
@LIBS
def test_the_providers_own_answers_are_stored_and_replayed(
    fake_provider_session: RunningFakeProvider, endpoint: Call, lib: Any
) -> None:
    """The rule refuses shapes, not providers: every endpoint's real answer is still stored."""
    cache = Cache()
    with client(cache, fake_provider_session, lib) as http:
        first, second = endpoint.send(http), endpoint.send(http)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.json() == first.json()


def with_a_duplicate_key(body: dict[str, Any]) -> bytes:
    """`body` with its first key sent twice: first with another value of its type, then its own.
    The key reads the last (as orjson, Python and Go do); a provider that reads the first answers
    another request."""
    name, value = next(iter(body.items()))
    other = "x" + value if isinstance(value, str) else type(value)()
    return b"{" + orjson.dumps({name: other})[1:-1] + b"," + orjson.dumps(body)[1:]


DUPLICATED = {
    **ENDPOINTS,
    "chat-stream": CHAT.but(stream=True),
    "messages-stream": MESSAGES.but(stream=True),
    "embeddings-list": EMBEDDINGS.but(input=[QUESTION, "And of Spain?"]),  # served item by item
}


@pytest.mark.parametrize("endpoint", DUPLICATED.values(), ids=DUPLICATED.keys())
def test_the_answer_to_a_body_with_a_duplicate_key_is_relayed_and_never_stored(
    fake_provider_session: RunningFakeProvider, endpoint: Call
) -> None:
    """Under a shared scope, a caller who sends `{"model": "gpt-4o", "model": "gpt-4o-mini", ...}`
    to a provider that reads the first value would otherwise store gpt-4o's answer under the key of
    the gpt-4o-mini request, for every other caller to be served."""
    cache = Cache(scope="shared")
    hostile = with_a_duplicate_key(endpoint.body)
    with client(cache, fake_provider_session) as http:
        sent = [http.post(endpoint.path, content=hostile, headers=endpoint.headers) for _ in range(2)]
        assert [(r.status_code, r.headers["x-cache"]) for r in sent] == [(200, "MISS")] * 2
        assert (cache.stats.stored, cache.stats.not_stored) == (0, 2)
        assert [endpoint.send(http).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert fake_provider_session.count() == 3
    assert not_stored_reasons(cache) == {"duplicate"}


def test_a_duplicate_key_anywhere_in_the_body_is_found_and_one_inside_a_string_is_not(
    fake_provider_session: RunningFakeProvider,
) -> None:
    cache = Cache()
    nested = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi","content":"Bye"}]}'
    escaped = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi","\\u0063ontent":"Bye"}]}'
    quoted = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": '{"a": 1, "a": 2}'}]})
    with client(cache, fake_provider_session) as http:
        outcomes = [
            [http.post(CHAT.path, content=body, headers=OPENAI).headers["x-cache"] for _ in range(2)]
            for body in (nested, escaped, quoted)
        ]
    assert outcomes == [["MISS", "MISS"], ["MISS", "MISS"], ["MISS", "HIT"]]


# -- 5. server-side state is never cached ------------------------------------------------------

CONTAINER_TOOL = {"type": "code_interpreter", "container": "cntr_abc123"}
AUTO_CONTAINER_TOOL = {"type": "code_interpreter", "container": {"type": "auto"}}
DRAFT_GUARDRAIL = {"guardrailIdentifier": "gr1", "guardrailVersion": "DRAFT"}
VERSIONED_GUARDRAIL = {"guardrailIdentifier": "gr1", "guardrailVersion": "1"}
MCP_TOOL = {
    "type": "mcp",
    "server_label": "issues",
    "server_url": "https://mcp.example.com/sse",
    "require_approval": "never",
}
"""A remote MCP server: the provider lists its tools and calls them, and they answer from their own data."""
STATEFUL = {
    "chat-store-true": CHAT.but(store=True),
    "responses-store-true": RESPONSES.but(store=True),
    "responses-previous-response-id": RESPONSES.but(previous_response_id="resp_abc123"),
    "responses-conversation-id": RESPONSES.but(conversation="conv_abc123"),
    "responses-conversation-object": RESPONSES.but(conversation={"id": "conv_abc123"}),
    "responses-prompt-without-version": RESPONSES.but(prompt={"id": "pmpt_abc123", "variables": {"city": "Paris"}}),
    "responses-file-search": RESPONSES.but(tools=[{"type": "file_search", "vector_store_ids": ["vs_abc123"]}]),
    "responses-code-interpreter-container": RESPONSES.but(tools=[CONTAINER_TOOL]),
    "responses-mcp-tool": RESPONSES.but(tools=[MCP_TOOL]),
    "messages-container": MESSAGES.but(container="container_abc123"),
    "messages-mcp-servers": MESSAGES.but(
        mcp_servers=[{"type": "url", "url": MCP_TOOL["server_url"], "name": "issues"}]
    ),
    "messages-container-skills": MESSAGES.but(container={"skills": [{"type": "anthropic", "skill_id": "pptx"}]}),
    "gemini-file-search": GENERATE.but(tools=[{"fileSearch": {"fileSearchStoreNames": ["fileSearchStores/abc"]}}]),
    "gemini-file-search-snake-case": GENERATE.but(tools=[{"file_search": {"file_search_store_names": ["x"]}}]),
    "converse-draft-guardrail": CONVERSE.but(guardrailConfig=DRAFT_GUARDRAIL),
    "converse-draft-prompt": Call(
        "/model/arn:aws:bedrock:us-east-1:123456789012:prompt%2FPROMPT12345/converse",
        {"promptVariables": {"city": {"text": "Paris"}}},
        BEDROCK,
    ),
    "invoke-draft-guardrail": Call(
        INVOKE.path,
        INVOKE.body,
        {**BEDROCK, "x-amzn-bedrock-guardrailidentifier": "gr1", "x-amzn-bedrock-guardrailversion": "DRAFT"},
    ),
}
STATELESS = {
    "chat-store-false": CHAT.but(store=False),
    "responses-store-default": RESPONSES,
    "responses-store-false": RESPONSES.but(store=False),
    "responses-prompt-with-version": RESPONSES.but(prompt={"id": "pmpt_abc123", "version": "2"}),
    "responses-code-interpreter-auto": RESPONSES.but(tools=[AUTO_CONTAINER_TOOL]),
    "messages-no-container": MESSAGES.but(container=None),
    "messages-no-mcp-servers": MESSAGES.but(mcp_servers=[]),
    "converse-versioned-guardrail": CONVERSE.but(guardrailConfig=VERSIONED_GUARDRAIL),
    "converse-versioned-prompt": Call(
        "/model/arn:aws:bedrock:us-east-1:123456789012:prompt%2FPROMPT12345:3/converse",
        {"promptVariables": {"city": {"text": "Paris"}}},
        BEDROCK,
    ),
}


@pytest.mark.parametrize("call", STATEFUL.values(), ids=STATEFUL.keys())
def test_a_request_that_depends_on_state_the_provider_holds_bypasses_the_cache(
    fake_provider_session: RunningFakeProvider, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache()
    with caplog.at_level(logging.DEBUG, logger="llm_cache.middleware"), client(cache, fake_provider_session) as http:
        answers = [call.send(http) for _ in range(2)]
    assert [a.headers["x-cache"] for a in answers] == ["BYPASS", "BYPASS"]
    assert all(a.status_code == 200 and "x-cache-key" not in a.headers for a in answers)
    assert fake_provider_session.count() == 2
    assert (cache.stats.bypasses, cache.stats.stored, cache.stats.hits) == (2, 0, 0)
    bypasses = [r.getMessage() for r in caplog.records if r.getMessage().startswith("CACHE BYPASS path=")]
    assert len(bypasses) == 2 and all("reason=" in m and len(m.split("reason=", 1)[1]) > 10 for m in bypasses)
    requests = cache.telemetry.snapshot()["llm_cache_requests"]
    assert sum(n for labels, n in requests.items() if labels[0] == "bypass") == 2


@pytest.mark.parametrize("call", STATELESS.values(), ids=STATELESS.keys())
def test_the_same_families_without_server_state_are_cached(
    fake_provider_session: RunningFakeProvider, call: Call
) -> None:
    cache = Cache()
    with client(cache, fake_provider_session) as http:
        answers = [call.send(http) for _ in range(2)]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT"]
    assert fake_provider_session.count() == 1


def test_a_gemini_cached_content_the_caller_names_is_cached_under_its_name(
    fake_provider_session: RunningFakeProvider,
) -> None:
    """Its contents cannot change once created and its name is in the key: two names never share."""
    cache = Cache()
    with client(cache, fake_provider_session) as http:
        names = []
        for topic in ("France", "Spain"):
            created = http.post(
                "/v1beta/cachedContents",
                json={"model": "models/gemini-2.0-flash", "systemInstruction": {"parts": [{"text": topic * 1200}]}},
                headers=GEMINI_KEY,
            )
            names.append(created.json()["name"])
        answers = [GENERATE.but(cachedContent=name).send(http) for name in (names[0], names[0], names[1])]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT", "MISS"]
    assert answers[0].headers["x-cache-key"] != answers[2].headers["x-cache-key"]


UNROUTED = [
    "/v1/threads/thread_abc/runs",
    "/v1/threads/runs",
    "/v1/assistants",
    "/v1/conversations/conv_abc/items",
    "/v1/responses/resp_abc/cancel",
    "/v1/chat/completions/chatcmpl-abc",
    "/v1/messages/count_tokens",
    "/v1/messages/batches",
    "/v1beta/interactions",
]


@pytest.mark.parametrize("path", UNROUTED)
def test_stateful_apis_are_not_even_routed(fake_provider_session: RunningFakeProvider, path: str) -> None:
    """Assistants, threads, conversations, stored completions, batches: no adapter owns them."""
    cache = Cache()
    with client(cache, fake_provider_session) as http:
        answers = [Call(path, {"model": "gpt-4o-mini"}, OPENAI).send(http) for _ in range(2)]
    assert all("x-cache" not in a.headers for a in answers)
    assert fake_provider_session.count() == 2
    assert cache.stats.as_dict() == Cache().stats.as_dict()


@LIBS
def test_a_stream_the_assembler_cannot_finish_reaches_the_caller_and_is_not_stored(
    fake_provider_session: RunningFakeProvider, lib: Any
) -> None:
    """Choices numbered 0 and null: the assembler fails at the end, after the caller had every byte."""
    chunk = {"id": "c", "object": "chat.completion.chunk"}
    stream = _sse(
        (None, {**chunk, "choices": [{"index": 0, "delta": {"content": "Pa"}, "finish_reason": "stop"}]}),
        (None, {**chunk, "choices": [{"index": None, "delta": {"content": "ris"}, "finish_reason": "stop"}]}),
        (None, "[DONE]"),
    )
    cache = refused_then_asked_again(fake_provider_session, CHAT.but(stream=True), stream, "text/event-stream", lib)
    assert not_stored_reasons(cache) == {"stream"}


AFTER_STOP = {
    "text": (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
    ),
    "error": ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    "another stop": ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}}),
}


@pytest.mark.parametrize("after", AFTER_STOP.values(), ids=AFTER_STOP.keys())
@LIBS
def test_a_messages_stream_that_goes_on_after_message_stop_is_passed_on_and_not_stored(
    fake_provider_session: RunningFakeProvider, after: tuple[str, dict[str, Any]], lib: Any
) -> None:
    """The anthropic SDK reads a stream to its end: text after `message_stop` is added to the message
    its caller gets, and an `error` event there raises. Stored as of `message_stop`, the next caller
    was served another answer than the first got (or a success where the first got an error)."""
    stream = _sse(
        ("message_start", {"type": "message_start", "message": MESSAGE}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Paris"}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
        ),
        ("message_stop", {"type": "message_stop"}),
        ("ping", {"type": "ping"}),
        after,
    )
    cache = refused_then_asked_again(fake_provider_session, MESSAGES.but(stream=True), stream, "text/event-stream", lib)
    assert not_stored_reasons(cache) == {"stream"}


ANSWERED = {
    **COMPLETED,
    "created_at": 1,
    "model": "gpt-4o",
    "output": [
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Paris", "annotations": []}],
        }
    ],
    "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
}
AFTER_COMPLETED = {
    "error event": ("error", {"type": "error", "code": "server_error", "message": "boom", "sequence_number": 9}),
    "error object": (None, {"error": {"message": "boom", "type": "server_error"}}),
    "text": ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "!", "sequence_number": 9}),
}


@pytest.mark.parametrize("after", AFTER_COMPLETED.values(), ids=AFTER_COMPLETED.keys())
def test_a_responses_stream_that_goes_on_after_response_completed_is_passed_on_and_not_stored(
    fake_provider_session: RunningFakeProvider, after: tuple[str | None, dict[str, Any]]
) -> None:
    """The openai SDK reads a Responses stream to its end (there is no `[DONE]`): what follows
    `response.completed` reaches its caller, and an error object raises there."""
    stream = _sse(("response.completed", {"type": "response.completed", "response": ANSWERED}), after, (None, "[DONE]"))
    cache = refused_then_asked_again(fake_provider_session, RESPONSES.but(stream=True), stream, "text/event-stream")
    assert not_stored_reasons(cache) == {"stream"}


def test_a_responses_stream_closed_by_done_after_response_completed_is_stored(
    fake_provider_session: RunningFakeProvider,
) -> None:
    """A compatible server's `[DONE]` after `response.completed` changes no answer."""
    stream = _sse(("response.completed", {"type": "response.completed", "response": ANSWERED}), (None, "[DONE]"))
    answer_next(fake_provider_session, stream, "text/event-stream")
    cache = Cache()
    with client(cache, fake_provider_session) as http:
        first, second = (RESPONSES.but(stream=True).send(http) for _ in range(2))
    assert (first.headers["x-cache"], second.headers["x-cache"], cache.stats.stored) == ("MISS", "HIT", 1)


@pytest.mark.parametrize(
    "choices",
    [
        [{"index": 0, "delta": {"content": "Par"}, "finish_reason": None}],
        [
            {"index": 0, "delta": {"content": "Paris"}, "finish_reason": "stop"},
            {"index": 1, "delta": {"content": "Par"}, "finish_reason": None},
        ],
    ],
    ids=["its-choice-never-finished", "one-choice-of-two-never-finished"],
)
@LIBS
def test_a_stream_that_ends_before_its_choices_finish_is_passed_on_and_not_stored(
    fake_provider_session: RunningFakeProvider, choices: list[dict[str, Any]], lib: Any
) -> None:
    """`[DONE]` after a choice that never said why it stopped: a generation cut short (a proxy that
    ends the stream cleanly when its upstream dropped), which would be replayed as the whole answer."""
    chunk = {"id": "c", "object": "chat.completion.chunk"}
    stream = _sse(*((None, {**chunk, "choices": [choice]}) for choice in choices), (None, "[DONE]"))
    cache = refused_then_asked_again(fake_provider_session, CHAT.but(stream=True), stream, "text/event-stream", lib)
    assert not_stored_reasons(cache) == {"response"}  # not final, as an answer in progress


@LIBS
def test_a_gemini_sse_stream_closed_early_is_not_stored_though_every_candidate_seen_had_finished(
    fake_provider: RunningFakeProvider, lib: Any
) -> None:
    """Gemini's SSE form has no terminal event: a chunk in which every candidate seen so far finished
    may be followed by another candidate (`candidateCount`) or the final usage. It is stored only once
    read to its end; a caller that closes it sooner stores nothing, so a later request is not served
    one candidate of two."""

    def candidate(index: int, text: str) -> dict[str, Any]:
        return {"index": index, "content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}

    first = {"candidates": [candidate(0, "Paris")], "usageMetadata": {"promptTokenCount": 7}}
    second = {
        "candidates": [candidate(1, "It is Paris.")],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 5, "totalTokenCount": 12},
    }
    fake_provider.stream_next([first, second])
    fake_provider.break_body_after(len(b"data: " + orjson.dumps(first) + b"\n\n"), stall=True)  # after the first
    http = client(Cache(), fake_provider, lib)
    ask = GENERATE.but(generationConfig={"candidateCount": 2})
    stream_path = ask.path.replace(":generateContent", ":streamGenerateContent") + "?alt=sse"
    try:
        with http.stream("POST", stream_path, content=orjson.dumps(ask.body), headers=ask.headers) as streamed:
            chunks = streamed.iter_raw()  # (held: an iterator dropped now would end the stream now)
            assert b"Paris" in next(chunks)
    finally:
        fake_provider.release()
    assert ask.send(http).headers["x-cache"] == "MISS"
    assert fake_provider.count(":generateContent") == 1


def test_an_answer_is_kept_no_longer_than_the_audio_it_names(fake_provider: RunningFakeProvider) -> None:
    """A spoken answer's `audio.id` (which a later turn sends back) expires (`expires_at`, an hour at
    OpenAI): the entry is kept until then at most, whatever the TTL, so a hit never names dead audio."""
    for ttl in (None, 30.0, 86400.0):
        store = CountingStore()
        http = httpx2.Client(transport=CachingTransport(cache=Cache(store, ttl=ttl)))
        client = openai.OpenAI(
            api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http, max_retries=0
        )
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-audio-preview",
            modalities=["text", "audio"],
            audio={"voice": "alloy", "format": "wav"},
            messages=[{"role": "user", "content": QUESTION}],
        )
        audio = raw.parse().choices[0].message.audio
        assert raw.headers["x-cache"] == "MISS" and audio is not None
        (kept,) = store.ttls
        lifetime = audio.expires_at - time.time()
        assert kept is not None and kept <= lifetime + 1
        assert kept == (ttl if ttl is not None and ttl < lifetime else pytest.approx(lifetime, abs=5))


CHAT_ANSWER = orjson.dumps(
    {"id": "chatcmpl-1", "object": "chat.completion", "choices": [CHOICE], "usage": {"prompt_tokens": 7}}
)
STREAMED_ANSWER = _sse(
    (None, {"id": "c", "object": "chat.completion.chunk", "choices": [{**CHOICE, "delta": CHOICE["message"]}]}),
    (None, "[DONE]"),
)


@pytest.mark.parametrize(
    ("call", "body", "length"),
    [
        (CHAT, CHAT_ANSWER, str(len(CHAT_ANSWER) - 5)),
        (CHAT, CHAT_ANSWER, str(len(CHAT_ANSWER) + 5)),
        (CHAT, CHAT_ANSWER, f"{len(CHAT_ANSWER)}, {len(CHAT_ANSWER) + 5}"),
        (CHAT, CHAT_ANSWER, "lots"),
        (CHAT.but(stream=True), STREAMED_ANSWER, str(len(STREAMED_ANSWER) - 5)),
    ],
    ids=["json-said-shorter", "json-said-longer", "json-said-twice", "json-not-a-length", "stream-said-shorter"],
)
async def test_an_answer_whose_content_length_is_not_its_length_is_relayed_and_never_stored(
    fake_provider_session: RunningFakeProvider, call: Call, body: bytes, length: str
) -> None:
    """An ASGI server that does not hold an app to its `content-length` (httpx's `ASGITransport`
    does not) passes such an answer on as the app sent it; it is not what the app meant to say
    (cut, or padded), so it is never stored. (uvicorn and httpx fail it: nothing to store either.)"""
    fake = fake_provider_session
    cache = Cache()
    media = "text/event-stream" if call.body.get("stream") else "application/json"
    fake.fail_next(1, status=200, body=body, headers={"content-type": media, "content-length": length})
    asgi = httpx2.ASGITransport(app=CacheMiddleware(fake.provider.app, cache=cache))
    async with httpx2.AsyncClient(transport=asgi, base_url="http://llm.test") as http:
        first = await http.post(call.path, content=orjson.dumps(call.body), headers=call.headers)
        assert (first.status_code, first.content, first.headers["x-cache"]) == (200, body, "MISS")
        assert (cache.stats.stored, cache.stats.not_stored) == (0, 1)
        second = await http.post(call.path, content=orjson.dumps(call.body), headers=call.headers)
    assert second.headers["x-cache"] == "MISS" and second.content != body
    assert not_stored_reasons(cache) == {"content-length"}


def test_a_list_answer_the_upstream_marks_no_store_stores_none_of_its_items(
    fake_provider_session: RunningFakeProvider,
) -> None:
    """The items of a list served item by item follow the upstream's Cache-Control as one answer does."""
    fake_provider_session.send_headers({"cache-control": "no-store"})
    cache = Cache()
    listed = EMBEDDINGS.but(input=[QUESTION, "And of Spain?"])
    with client(cache, fake_provider_session) as http:
        answers = [listed.send(http) for _ in range(2)]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "MISS"]
    assert (cache.stats.stored, cache.stats.not_stored) == (0, 2)
    assert not_stored_reasons(cache) == {"upstream-no-store"}


LIES = {
    # A JSON answer's content-type on an event stream, to a request that did not stream.
    "sse-body-said-json": (CHAT, STREAMED_ANSWER, "application/json"),
    # An event stream's content-type on a JSON answer, to a request that streamed.
    "json-body-said-sse": (CHAT.but(stream=True), CHAT_ANSWER, "text/event-stream"),
    # A stream of the right type and shape that never sends its terminal event.
    "stream-without-done": (
        CHAT.but(stream=True),
        STREAMED_ANSWER.removesuffix(b"data: [DONE]\n\n"),
        "text/event-stream",
    ),
    "messages-without-message-stop": (
        MESSAGES.but(stream=True),
        _sse(
            ("message_start", {"type": "message_start", "message": MESSAGE}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}}),
        ),
        "text/event-stream",
    ),
}


@pytest.mark.parametrize(("call", "body", "media"), LIES.values(), ids=LIES.keys())
@LIBS
def test_an_answer_that_lies_about_its_form_reaches_its_caller_as_sent_and_is_never_stored(
    fake_provider_session: RunningFakeProvider, call: Call, body: bytes, media: str, lib: Any
) -> None:
    """Checked and found to hold: the content-type names the form the Recorder reads, and a body of the
    other form (or a stream without its end) is never assembled into an answer."""
    refused_then_asked_again(fake_provider_session, call, body, media, lib)


async def test_a_stream_past_max_response_bytes_is_passed_on_whole_and_nothing_of_it_is_held() -> None:
    """Past `max_response_bytes` the Recorder stops recording a stream (it will not be stored) and
    lets go of what it had recorded: an upstream streaming an endless answer to many callers costs
    the cache nothing per stream once past the bound. Before, each such stream kept its assembled
    part (several times the bound, as parsed events) until it ended."""
    cap, piece = 2 * 1024 * 1024, "y" * 60_000
    event = _sse(
        (None, {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]})
    )
    count = 3 * cap // len(event)
    go_on = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield event
        await go_on.wait()
        yield STREAMED_ANSWER

    def upstream(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=endless())

    cache = Cache(max_response_bytes=cap)
    transport = AsyncCachingTransport(cache=cache, inner=httpx2.MockTransport(upstream))
    tracemalloc.start()
    try:
        async with httpx2.AsyncClient(transport=transport, base_url="http://llm.test") as http:
            ask = CHAT.but(stream=True)
            async with http.stream("POST", ask.path, content=orjson.dumps(ask.body), headers=ask.headers) as streamed:
                chunks, received = streamed.aiter_raw(), 0
                while received < count * len(event):
                    received += len(await anext(chunks))
                held = tracemalloc.get_traced_memory()[0]
                go_on.set()
                rest = b"".join([chunk async for chunk in chunks])
    finally:
        tracemalloc.stop()
    assert rest.endswith(b"data: [DONE]\n\n")
    assert held < cap // 4, f"{held / 2**20:.1f} MiB held"
    assert not_stored_reasons(cache) == {"response"}


DEEP = b"[" * 100_000 + b"]" * 100_000
NESTED = {
    "whole-body": (CHAT, DEEP, "application/json"),
    "a-field": (CHAT, CHAT_ANSWER[:-1] + b',"x":' + DEEP + b"}", "application/json"),
    "a-stream-event": (CHAT.but(stream=True), b"data: " + DEEP + b"\n\n" + STREAMED_ANSWER, "text/event-stream"),
}


@pytest.mark.parametrize(("call", "body", "media"), NESTED.values(), ids=NESTED.keys())
def test_an_answer_nested_100000_deep_is_relayed_and_never_stored(
    fake_provider_session: RunningFakeProvider, call: Call, body: bytes, media: str
) -> None:
    """Checked and found to hold: the parser's depth limit refuses it (no recursion without bound)."""
    refused_then_asked_again(fake_provider_session, call, body, media)


async def test_a_compressed_stream_decoded_for_its_caller_is_decoded_a_bounded_piece_at_a_time() -> None:
    """A stream the cache asked usage of is decoded for its caller (to hide the usage chunk). A gzip
    chunk can decode to a thousand times its size: 128 KiB of it to 128 MiB of events. The caller gets
    every decoded byte, a bounded piece at a time. Before, each upstream chunk was decoded whole, and
    copied by the usage filter: hundreds of MiB at once in the cache's process for one chunk."""
    event = _sse((None, {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}}]}))
    padding = b": " + b" " * (1024 * 1024) + b"\n\n"  # an SSE comment: a MiB of spaces
    decoded = event + padding * 128 + STREAMED_ANSWER
    compressed = gzip.compress(decoded, 9)
    assert len(compressed) < 256 * 1024

    async def upstream_body() -> AsyncIterator[bytes]:
        yield compressed  # one chunk, as a proxy that buffered it may send it

    def upstream(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/event-stream", "content-encoding": "gzip"}
        return httpx2.Response(200, headers=headers, content=upstream_body())

    transport = AsyncCachingTransport(cache=Cache(), inner=httpx2.MockTransport(upstream))
    tracemalloc.start()
    try:
        async with httpx2.AsyncClient(transport=transport, base_url="http://llm.test") as http:
            ask = CHAT.but(stream=True)  # (no stream_options: the cache asks for usage, and hides it)
            async with http.stream("POST", ask.path, content=orjson.dumps(ask.body), headers=ask.headers) as streamed:
                assert "content-encoding" not in streamed.headers
                received = 0
                async for piece in streamed.aiter_raw():
                    received += len(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert received == len(decoded)
    assert peak < 48 * 1024 * 1024, f"{peak / 2**20:.0f} MiB at once"
