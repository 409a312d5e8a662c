"""LangChain's chat models and embeddings on the caching transports, against the fake provider.

How each class takes an HTTP client (langchain-openai 1.8, langchain-anthropic 1.7, langchain-google-genai 4.4;
README "LangChain"):

- `ChatOpenAI` and `OpenAIEmbeddings`: `http_client=` and `http_async_client=`, handed to the openai SDK, which
  takes clients of either library (httpx2 or httpx); Chat Completions, or the Responses API with
  `use_responses_api=True`.
- `ChatAnthropic` takes none: it builds its own anthropic clients (`_client`, `_async_client`). A subclass that
  builds them on given clients (`CachedChatAnthropic` below, httpx2 only: the anthropic SDK refuses httpx), or
  `base_url` at the gateway.
- `ChatGoogleGenerativeAI` and `GoogleGenerativeAIEmbeddings`: `client_args` reaches both of the SDK's clients
  (a sync transport in the async client), so `.client` is replaced by a `genai.Client` built with one client of
  each kind (httpx2 or httpx).

A hit gives LangChain what the miss gave: the messages equal but for what LangChain makes up on every call
(`langchain_view`). A replayed stream is the provider's stream as it was cut (docs/providers.md, "Replay"), so
streams are compared chunk by chunk.
"""

from __future__ import annotations

import asyncio
import operator
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property, reduce
from pathlib import Path
from types import ModuleType
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from google import genai
from google.genai import types
from langchain_anthropic import ChatAnthropic
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_google_genai import ChatGoogleGenerativeAI, GoogleGenerativeAIEmbeddings
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field

from llm_cache.middleware import AsyncCachingTransport, Cache, CachingTransport
from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway
from tests.support.fake_provider import WEATHER_ARGS
from tests.support.fake_provider_fixtures import RunningFakeProvider

ROOT = Path(__file__).resolve().parents[2]

WEATHER_QUESTION = "What is the weather in Paris?"  # the fake provider calls a weather tool when asked this
LANGCHAIN_RUN_ID = "lc_run-"
INVENTED_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Weather(BaseModel):
    """The weather somewhere."""

    location: str
    unit: str


def get_weather(location: str, unit: str) -> str:
    """The weather at a location."""
    return f"sunny in {location} ({unit})"


class CachedChatAnthropic(ChatAnthropic):
    """`ChatAnthropic` on given HTTP clients: langchain-anthropic builds its own and takes none."""

    http_client: Any = Field(default=None, exclude=True)
    http_async_client: Any = Field(default=None, exclude=True)

    @cached_property
    def _client(self) -> anthropic.Client:
        return anthropic.Client(**self._client_params, http_client=self.http_client)

    @cached_property
    def _async_client(self) -> anthropic.AsyncClient:
        return anthropic.AsyncClient(**self._client_params, http_client=self.http_async_client)


def clients(cache: Cache, lib: ModuleType) -> dict[str, Any]:
    """One sync and one async client of `lib` (httpx2 or httpx) on the same cache."""
    return {
        "http_client": lib.Client(transport=CachingTransport(cache=cache)),
        "http_async_client": lib.AsyncClient(transport=AsyncCachingTransport(cache=cache)),
    }


def genai_client(cache: Cache, lib: ModuleType, fake: RunningFakeProvider) -> genai.Client:
    both = clients(cache, lib)
    options = types.HttpOptions(
        base_url=fake.url,
        api_version="v1beta",
        httpx_client=both["http_client"],
        httpx_async_client=both["http_async_client"],
    )
    return genai.Client(api_key="gm-alice", http_options=options)


def chat_openai(cache: Cache, lib: ModuleType, fake: RunningFakeProvider, **options: Any) -> ChatOpenAI:
    # stream_usage: LangChain asks for usage in streams by itself only from api.openai.com
    return ChatOpenAI(
        model="gpt-4o-mini",
        api_key="sk-alice",
        base_url=fake.openai_base_url,
        stream_usage=True,
        **clients(cache, lib),
        **options,
    )


def chat_anthropic(cache: Cache, lib: ModuleType, fake: RunningFakeProvider) -> ChatAnthropic:
    return CachedChatAnthropic(
        model="claude-sonnet-4-6", api_key="sk-ant-alice", base_url=fake.anthropic_base_url, **clients(cache, lib)
    )


def chat_gemini(cache: Cache, lib: ModuleType, fake: RunningFakeProvider) -> ChatGoogleGenerativeAI:
    model = ChatGoogleGenerativeAI(model="gemini-2.5-flash", api_key="gm-alice")
    model.client = genai_client(cache, lib, fake)
    return model


@dataclass
class Chat:
    model: BaseChatModel
    structured_output: dict[str, Any]
    """`with_structured_output` options: the fake provider answers OpenAI's `json_schema` (the default) in
    JSON, and any family's `function_calling` (Anthropic's default) with a call of the weather tool."""


CHATS: dict[str, Callable[[Cache, RunningFakeProvider], Chat]] = {
    "openai-httpx2": lambda cache, fake: Chat(chat_openai(cache, httpx2, fake), {}),
    "openai-httpx": lambda cache, fake: Chat(chat_openai(cache, httpx, fake), {}),
    "openai-tools": lambda cache, fake: Chat(chat_openai(cache, httpx2, fake), {"method": "function_calling"}),
    "openai-responses": lambda cache, fake: Chat(
        chat_openai(cache, httpx2, fake, use_responses_api=True), {"method": "function_calling"}
    ),
    "anthropic-httpx2": lambda cache, fake: Chat(chat_anthropic(cache, httpx2, fake), {}),
    "gemini-httpx2": lambda cache, fake: Chat(chat_gemini(cache, httpx2, fake), {"method": "function_calling"}),
    "gemini-httpx": lambda cache, fake: Chat(chat_gemini(cache, httpx, fake), {"method": "function_calling"}),
}


@pytest.fixture(params=sorted(CHATS))
def chat(request: pytest.FixtureRequest, fake_provider_session: RunningFakeProvider) -> Chat:
    return CHATS[request.param](Cache(), fake_provider_session)


def langchain_view(message: BaseMessage) -> dict[str, Any]:
    """A message as a caller reads it, less what LangChain makes up on every call: the run id it names
    messages by (`lc_run--<uuid>`), and the ids it invents for tool calls the provider sent without one
    (Gemini's function calls)."""
    data = message.model_dump()
    if str(data.get("id") or "").startswith(LANGCHAIN_RUN_ID):
        data["id"] = None
    for key in ("tool_calls", "tool_call_chunks"):
        for call in data.get(key) or []:
            if INVENTED_ID.fullmatch(str(call.get("id"))):
                call["id"] = None
    return data


def assert_streams_read_alike(miss: list[AIMessageChunk], hit: list[AIMessageChunk]) -> None:
    """The hit's chunks are the miss's, one by one (the provider's events replayed as it cut them)."""
    assert [langchain_view(chunk) for chunk in hit] == [langchain_view(chunk) for chunk in miss]
    assert hit[-1].chunk_position == "last"


def test_an_invoke_hit_is_the_misses_message(chat: Chat, fake_provider_session: RunningFakeProvider) -> None:
    miss, hit = chat.model.invoke("What are your opening hours?"), chat.model.invoke("What are your opening hours?")

    assert langchain_view(hit) == langchain_view(miss)
    assert miss.usage_metadata and miss.response_metadata and miss.content
    assert fake_provider_session.count() == 1


async def test_ainvoke_hit_is_the_misses_message(chat: Chat, fake_provider_session: RunningFakeProvider) -> None:
    miss = await chat.model.ainvoke("Do you open on Sundays?")
    hit = await chat.model.ainvoke("Do you open on Sundays?")

    assert langchain_view(hit) == langchain_view(miss)
    assert fake_provider_session.count() == 1


def test_a_replayed_stream_aggregates_to_the_original(chat: Chat, fake_provider_session: RunningFakeProvider) -> None:
    miss = list(chat.model.stream("Tell me about your bicycles."))
    hit = list(chat.model.stream("Tell me about your bicycles."))

    assert_streams_read_alike(miss, hit)
    assert len(hit) > 3  # the fake provider streams several fragments, and so does the hit
    assert reduce(operator.add, hit).usage_metadata is not None
    assert fake_provider_session.count() == 1


async def test_a_replayed_astream_aggregates_to_the_original(
    chat: Chat, fake_provider_session: RunningFakeProvider
) -> None:
    miss = [chunk async for chunk in chat.model.astream("Tell me about your helmets.")]
    hit = [chunk async for chunk in chat.model.astream("Tell me about your helmets.")]

    assert_streams_read_alike(miss, hit)
    assert fake_provider_session.count() == 1


def test_a_batch_again_is_all_hits(chat: Chat, fake_provider_session: RunningFakeProvider) -> None:
    questions = ["Do you repair tyres?", "Do you sell locks?", "Do you rent tandems?"]

    miss, hit = chat.model.batch(questions), chat.model.batch(questions)

    assert [langchain_view(m) for m in hit] == [langchain_view(m) for m in miss]
    assert fake_provider_session.count() == len(questions)


async def test_the_same_question_in_one_abatch_goes_upstream_once(
    chat: Chat, fake_provider_session: RunningFakeProvider
) -> None:
    """`abatch` sends its inputs at once: the first is forwarded, the others wait for its answer (or hit)."""
    answers = await chat.model.abatch(["Do you deliver?"] * 3)

    assert [langchain_view(a) for a in answers[1:]] == [langchain_view(answers[0])] * 2
    assert fake_provider_session.count() == 1


def test_a_tool_call_hit_is_the_misses_whether_invoked_or_streamed(
    chat: Chat, fake_provider_session: RunningFakeProvider
) -> None:
    with_tools = chat.model.bind_tools([get_weather])

    miss, hit = with_tools.invoke(WEATHER_QUESTION), with_tools.invoke(WEATHER_QUESTION)
    streamed_miss = list(with_tools.stream("And the weather in Lyon?"))
    streamed_hit = list(with_tools.stream("And the weather in Lyon?"))

    assert langchain_view(hit) == langchain_view(miss)
    assert [(c["name"], c["args"]) for c in miss.tool_calls] == [("get_weather", WEATHER_ARGS)]
    assert_streams_read_alike(streamed_miss, streamed_hit)
    assert reduce(operator.add, streamed_hit).tool_calls[0]["args"] == miss.tool_calls[0]["args"]
    assert fake_provider_session.count() == 2


def test_structured_output_hit_parses_to_the_misses(chat: Chat, fake_provider_session: RunningFakeProvider) -> None:
    structured = chat.model.with_structured_output(Weather, include_raw=True, **chat.structured_output)

    miss, hit = structured.invoke(WEATHER_QUESTION), structured.invoke(WEATHER_QUESTION)

    assert isinstance(miss, dict) and isinstance(hit, dict)
    assert isinstance(miss["parsed"], Weather) and hit["parsed"] == miss["parsed"]
    assert langchain_view(hit["raw"]) == langchain_view(miss["raw"])
    assert fake_provider_session.count() == 1


async def test_anthropic_thinking_replays_with_its_signature(fake_provider_session: RunningFakeProvider) -> None:
    model = CachedChatAnthropic(
        model="claude-sonnet-4-6",
        api_key="sk-ant-alice",
        base_url=fake_provider_session.anthropic_base_url,
        thinking={"type": "enabled", "budget_tokens": 1024},
        max_tokens=2048,
        **clients(Cache(), httpx2),
    )

    miss = [chunk async for chunk in model.astream("Which bicycle for a hilly commute?")]
    hit = [chunk async for chunk in model.astream("Which bicycle for a hilly commute?")]

    assert_streams_read_alike(miss, hit)
    thinking = reduce(operator.add, hit).content[0]
    assert isinstance(thinking, dict) and thinking["type"] == "thinking" and thinking["signature"]
    assert fake_provider_session.count() == 1


@pytest.mark.parametrize("lib", [httpx2, httpx], ids=["httpx2", "httpx"])
async def test_openai_embeddings_hit_are_the_misses_vectors(
    lib: ModuleType, fake_provider_session: RunningFakeProvider
) -> None:
    # check_embedding_ctx_length=False sends text: the default tokenizes with tiktoken, whose encodings
    # are downloaded on first use (the cache keys token arrays the same way)
    embeddings = OpenAIEmbeddings(
        model="text-embedding-3-small",
        api_key="sk-alice",
        base_url=fake_provider_session.openai_base_url,
        check_embedding_ctx_length=False,
        **clients(Cache(), lib),
    )
    documents = ["A red bicycle.", "A blue helmet."]

    miss = embeddings.embed_documents(documents), await embeddings.aembed_query("Which bicycle?")
    hit = embeddings.embed_documents(documents), await embeddings.aembed_query("Which bicycle?")

    assert hit == miss and len(miss[0]) == 2 and all(isinstance(x, float) for x in miss[1])
    assert fake_provider_session.count("/embeddings") == 2


def test_gemini_embeddings_hit_are_the_misses_vectors(fake_provider_session: RunningFakeProvider) -> None:
    embeddings = GoogleGenerativeAIEmbeddings(model="gemini-embedding-001", api_key="gm-alice")
    embeddings.client = genai_client(Cache(), httpx2, fake_provider_session)

    miss, hit = embeddings.embed_documents(["A red bicycle."]), embeddings.embed_documents(["A red bicycle."])

    assert hit == miss and len(miss) == 1
    assert fake_provider_session.count() == 1


@pytest.fixture
def gateway(fake_provider_session: RunningFakeProvider) -> Iterator[str]:
    upstreams = {"anthropic": {"base_url": fake_provider_session.anthropic_base_url}}
    app = create_gateway(parse_config({"cache": {"store": {"type": "memory"}}, "upstreams": upstreams}))
    server = BackgroundServer(app).start()
    try:
        yield server.url
    finally:
        server.stop()


async def test_chat_anthropic_through_the_gateway_hits_as_through_the_transport(
    gateway: str, fake_provider_session: RunningFakeProvider
) -> None:
    model = ChatAnthropic(model="claude-sonnet-4-6", api_key="sk-ant-alice", base_url=gateway)

    miss, hit = model.invoke("What are your opening hours?"), await model.ainvoke("What are your opening hours?")
    streamed_miss = [chunk async for chunk in model.astream("Tell me about your bicycles.")]
    streamed_hit = list(model.stream("Tell me about your bicycles."))

    assert langchain_view(hit) == langchain_view(miss)
    assert_streams_read_alike(streamed_miss, streamed_hit)
    assert fake_provider_session.count() == 2


STALL_TIMEOUT = 3.0
"""The SDK's timeout where an answer stalls: every other call under it must end well inside it, on a
loaded 2-core machine too (0.5 s left a normal call little room)."""


def test_a_retried_timeout_stores_only_the_complete_answer(fake_provider_session: RunningFakeProvider) -> None:
    """LangChain's `max_retries` and `timeout` reach the SDK under our transport: the first answer stalls
    halfway, times out and is retried; only the retry's complete answer is stored."""
    cache = Cache()
    model = chat_openai(cache, httpx2, fake_provider_session, timeout=STALL_TIMEOUT, max_retries=1)
    fake_provider_session.break_body_after(40, stall=True)

    answer = model.invoke("What are your opening hours?")
    again = model.invoke("What are your opening hours?")

    assert langchain_view(again) == langchain_view(answer)
    assert fake_provider_session.count() == 2
    assert (cache.stats.stored, cache.stats.not_stored, cache.stats.hits) == (1, 1, 1)


async def test_a_stream_that_times_out_is_not_stored(fake_provider_session: RunningFakeProvider) -> None:
    cache = Cache()
    model = chat_openai(cache, httpx2, fake_provider_session, timeout=STALL_TIMEOUT, max_retries=0)
    fake_provider_session.break_body_after(200, stall=True)

    with pytest.raises(Exception, match="timed out|Timeout"):
        _ = [chunk async for chunk in model.astream("Tell me about your bicycles.")]
    fake_provider_session.release()
    complete = [chunk async for chunk in model.astream("Tell me about your bicycles.")]
    replayed = [chunk async for chunk in model.astream("Tell me about your bicycles.")]

    assert_streams_read_alike(complete, replayed)
    assert fake_provider_session.count() == 2
    assert (cache.stats.stored, cache.stats.not_stored) == (1, 1)


async def test_a_cancelled_astream_is_not_stored(fake_provider_session: RunningFakeProvider) -> None:
    cache = Cache()
    model = chat_openai(cache, httpx2, fake_provider_session)
    fake_provider_session.break_body_after(700, stall=True)  # two events and a half, then nothing
    first_chunk = asyncio.Event()

    async def read() -> None:
        async for _ in model.astream("Tell me about your locks."):
            first_chunk.set()

    reading = asyncio.create_task(read())
    await asyncio.wait_for(first_chunk.wait(), timeout=30)
    reading.cancel()
    # LangChain's astream is cancelled once its pending read returns: released, the read ends in the cut
    fake_provider_session.release()
    with pytest.raises((asyncio.CancelledError, openai.APIConnectionError)):
        await reading
    end = time.monotonic() + 30
    while cache._flights._flights:  # the cancelled call's work has run its course (on a loaded machine: later)
        assert time.monotonic() < end, cache._flights._flights
        await asyncio.sleep(0.01)
    complete = [chunk async for chunk in model.astream("Tell me about your locks.")]
    replayed = [chunk async for chunk in model.astream("Tell me about your locks.")]

    assert_streams_read_alike(complete, replayed)
    assert fake_provider_session.count() == 2
    assert (cache.stats.stored, cache.stats.hits) == (1, 1)


def readme_examples() -> list[str]:
    """The code blocks under `<!-- langchain-example -->` in README.md: the models, then the subclass."""
    after = (ROOT / "README.md").read_text().split("<!-- langchain-example -->", 1)[1]
    return [block.split("```", 1)[0] for block in after.split("```python\n")[1:3]]


def test_the_readme_langchain_example_caches_every_model(
    gateway: str, fake_provider_session: RunningFakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-alice")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_provider_session.openai_base_url)
    monkeypatch.setenv("GOOGLE_API_KEY", "gm-alice")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_provider_session.url)
    monkeypatch.setenv("GOOGLE_GENAI_API_VERSION", "v1beta")  # the fake serves Gemini's v1beta API
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-alice")
    models, subclass = readme_examples()
    models = models.replace("http://127.0.0.1:4000", gateway)
    # offline: tiktoken would download its encoding to tokenize first
    models = models.replace("OpenAIEmbeddings(", "OpenAIEmbeddings(check_embedding_ctx_length=False, ")
    namespace: dict[str, Any] = {}
    for code in (models, subclass):
        exec(compile(code, "README.md", "exec", dont_inherit=True), namespace)
    in_process = namespace["CachedChatAnthropic"](
        model="claude-sonnet-4-6",
        base_url=fake_provider_session.anthropic_base_url,
        http_client=namespace["sync_client"],
        http_async_client=namespace["async_client"],
    )

    for model in ("gpt", "gemini", "claude"):
        assert namespace[model].invoke("Hello?").content == namespace[model].invoke("Hello?").content
    assert in_process.invoke("Hello again?").content == in_process.invoke("Hello again?").content
    assert namespace["embeddings"].embed_query("Hello?") == namespace["embeddings"].embed_query("Hello?")

    assert fake_provider_session.count() == 5
    assert namespace["cache"].stats.hits == 4  # the gateway's hit is counted by its own cache
