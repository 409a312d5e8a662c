"""Keys, property-based, over the request shapes of every family: a change the provider reads is
another key; a change it does not read (key order in the conversation, whitespace, `stream`) is the
same key. Keys come from `Cache.key_for`, which prepares a request as the drivers do; the openai SDK
through the transport checks the same against the fake provider end to end."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from llm_cache.middleware import Cache, CachingTransport
from llm_cache.middleware._keys import CONVERSATION_FIELDS, DEFAULT_VOLATILE_FIELDS
from tests.support.fake_provider_fixtures import RunningFakeProvider

Json = Any
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
names = st.from_regex(r"[a-z_]{1,8}", fullmatch=True)
urls = names.map(lambda name: f"https://example.com/{name}.png")
numbers = st.one_of(st.integers(0, 8), st.floats(0, 2, allow_nan=False).map(lambda x: round(x, 2)))
SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/bedrock/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0123456789abcdef"
)


def schemas() -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(names, st.sampled_from(["string", "integer"]), min_size=1, max_size=3).map(
        lambda props: {"type": "object", "properties": {name: {"type": kind} for name, kind in props.items()}}
    )


def optional(draw: st.DrawFn, body: dict[str, Any], name: str, strategy: st.SearchStrategy[Any]) -> None:
    if draw(st.booleans()):
        body[name] = draw(strategy)


@st.composite
def chat(draw: st.DrawFn) -> dict[str, Any]:
    part = st.one_of(
        texts.map(lambda text: {"type": "text", "text": text}),
        urls.map(lambda url: {"type": "image_url", "image_url": {"url": url, "detail": "low"}}),
    )
    message = st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "user", "assistant"]),
            "content": st.one_of(texts, st.lists(part, min_size=1, max_size=3)),
        }
    )
    body = {
        "model": draw(st.sampled_from(["gpt-4o-mini", "gpt-4o"])),
        "messages": draw(st.lists(message, min_size=1, max_size=3)),
    }
    optional(draw, body, "temperature", numbers)
    optional(draw, body, "n", st.integers(1, 3))
    tool = st.builds(
        lambda name, schema: {"type": "function", "function": {"name": name, "parameters": schema}}, names, schemas()
    )
    optional(draw, body, "tools", st.lists(tool, min_size=1, max_size=2))
    return body


@st.composite
def responses(draw: st.DrawFn) -> dict[str, Any]:
    part = st.one_of(
        texts.map(lambda text: {"type": "input_text", "text": text}),
        urls.map(lambda url: {"type": "input_image", "image_url": url}),
    )
    item = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "developer"]), "content": st.lists(part, min_size=1, max_size=3)}
    )
    body = {"model": "gpt-4o-mini", "input": draw(st.one_of(texts, st.lists(item, min_size=1, max_size=3)))}
    optional(draw, body, "instructions", texts)
    optional(draw, body, "temperature", numbers)
    tool = st.builds(lambda name, schema: {"type": "function", "name": name, "parameters": schema}, names, schemas())
    optional(draw, body, "tools", st.lists(tool, min_size=1, max_size=2))
    return body


@st.composite
def embeddings(draw: st.DrawFn) -> dict[str, Any]:
    body = {"model": "text-embedding-3-small", "input": draw(texts)}
    optional(draw, body, "dimensions", st.integers(1, 512))
    return body


def anthropic_body(draw: st.DrawFn) -> dict[str, Any]:
    part = st.one_of(
        texts.map(lambda text: {"type": "text", "text": text}),
        urls.map(lambda url: {"type": "image", "source": {"type": "url", "url": url}}),
    )
    message = st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant"]),
            "content": st.one_of(texts, st.lists(part, min_size=1, max_size=3)),
        }
    )
    body = {"max_tokens": draw(st.integers(1, 64)), "messages": draw(st.lists(message, min_size=1, max_size=3))}
    optional(draw, body, "system", texts)
    optional(draw, body, "temperature", numbers)
    tool = st.builds(lambda name, schema: {"name": name, "input_schema": schema}, names, schemas())
    optional(draw, body, "tools", st.lists(tool, min_size=1, max_size=2))
    return body


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", **anthropic_body(draw)}


@st.composite
def invoke(draw: st.DrawFn) -> dict[str, Any]:
    return {"anthropic_version": "bedrock-2023-05-31", **anthropic_body(draw)}


@st.composite
def gemini(draw: st.DrawFn) -> dict[str, Any]:
    part = st.one_of(
        texts.map(lambda text: {"text": text}),
        urls.map(lambda url: {"fileData": {"mimeType": "image/png", "fileUri": url}}),
    )
    content = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "model"]), "parts": st.lists(part, min_size=1, max_size=3)}
    )
    body: dict[str, Any] = {"contents": draw(st.lists(content, min_size=1, max_size=3))}
    optional(
        draw,
        body,
        "generationConfig",
        st.fixed_dictionaries({"temperature": numbers, "candidateCount": st.integers(1, 3)}),
    )
    declaration = st.builds(lambda name, schema: {"name": name, "parameters": schema}, names, schemas())
    optional(
        draw,
        body,
        "tools",
        st.lists(declaration, min_size=1, max_size=2).map(lambda found: [{"functionDeclarations": found}]),
    )
    return body


@st.composite
def converse(draw: st.DrawFn) -> dict[str, Any]:
    part = st.one_of(
        texts.map(lambda text: {"text": text}),
        urls.map(lambda url: {"image": {"format": "png", "source": {"s3Location": {"uri": url}}}}),
    )
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant"]), "content": st.lists(part, min_size=1, max_size=3)}
    )
    body: dict[str, Any] = {"messages": draw(st.lists(message, min_size=1, max_size=3))}
    optional(draw, body, "system", st.lists(texts.map(lambda text: {"text": text}), min_size=1, max_size=2))
    optional(
        draw, body, "inferenceConfig", st.fixed_dictionaries({"maxTokens": st.integers(1, 64), "temperature": numbers})
    )
    spec = st.builds(
        lambda name, schema: {"toolSpec": {"name": name, "inputSchema": {"json": schema}}}, names, schemas()
    )
    optional(draw, body, "toolConfig", st.lists(spec, min_size=1, max_size=2).map(lambda tools: {"tools": tools}))
    return body


@dataclass(frozen=True)
class Family:
    path: str
    headers: dict[str, str]
    bodies: Callable[[], st.SearchStrategy[dict[str, Any]]]
    volatile: frozenset[str] = frozenset()
    streams_in_body: bool = False


OPENAI = {"authorization": "Bearer sk-alice"}
ANTHROPIC = {"x-api-key": "sk-ant-alice", "anthropic-version": "2023-06-01"}
BEDROCK_MODEL = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1:0"
FAMILIES = {
    "chat": Family("https://api.openai.com/v1/chat/completions", OPENAI, chat, streams_in_body=True),
    "responses": Family("https://api.openai.com/v1/responses", OPENAI, responses, streams_in_body=True),
    "embeddings": Family("https://api.openai.com/v1/embeddings", OPENAI, embeddings),
    "anthropic messages": Family("https://api.anthropic.com/v1/messages", ANTHROPIC, messages, streams_in_body=True),
    "gemini generateContent": Family(
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
        {"x-goog-api-key": "AIza-alice"},
        gemini,
        frozenset({"labels"}),
    ),
    "bedrock invoke": Family(f"{BEDROCK_MODEL}/invoke", {"authorization": SIGV4}, invoke),
    "bedrock converse": Family(
        f"{BEDROCK_MODEL}/converse", {"authorization": SIGV4}, converse, frozenset({"requestMetadata"})
    ),
}
families = st.sampled_from(sorted(FAMILIES))


def key(family: Family, body: dict[str, Any] | bytes, query: str = "") -> str:
    return Cache(scope="shared").key_for(family.path, body, family.headers, query)


Path = tuple[str | int, ...]


def places(value: Json, path: Path = ()) -> list[Path]:
    """Every position in a JSON value: each object, list and scalar, by its path."""
    found = [path]
    if isinstance(value, dict):
        for name, item in value.items():
            found += places(item, (*path, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += places(item, (*path, index))
    return found


def at(value: Json, path: Path) -> Json:
    for step in path:
        value = value[step]
    return value


def replaced(value: Json, path: Path, new: Json) -> Json:
    """A copy of `value` with the value at `path` replaced by `new`."""
    if not path:
        return new
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)  # type: ignore[index]
    return copy


def read_by_provider(family: Family, path: Path) -> bool:
    """Whether the provider reads the value at `path` (all of a body but the fields that only bill,
    label or route a call, and the stream form)."""
    return not path or path[0] not in DEFAULT_VOLATILE_FIELDS | family.volatile


@st.composite
def meaning_edits(draw: st.DrawFn, body: dict[str, Any], family: Family) -> dict[str, Any]:
    """`body` with one change the provider reads: a scalar anywhere (a text, a role, an image's URL, a
    number, a schema's type) made another, two unlike items of a list (messages, content parts, tools)
    swapped, or a field the provider may read added to an object."""
    spots = [path for path in places(body) if path and read_by_provider(family, path)]
    path = draw(st.sampled_from(spots))
    value = at(body, path)
    if isinstance(value, list) and len(value) >= 2:
        first = draw(st.integers(0, len(value) - 2))
        assume(value[first] != value[first + 1])
        swapped = [*value[:first], value[first + 1], value[first], *value[first + 2 :]]
        return replaced(body, path, swapped)  # type: ignore[no-any-return]
    if isinstance(value, dict):
        name = draw(names.map(lambda name: f"x_{name}"))
        return replaced(body, path, {**value, name: draw(st.one_of(texts, numbers, st.booleans()))})  # type: ignore[no-any-return]
    new = draw(st.one_of(texts, numbers, st.booleans(), st.none()))
    assume(json.dumps(new) != json.dumps(value))
    return replaced(body, path, new)  # type: ignore[no-any-return]


def shuffled_keys(value: Json, rng: random.Random) -> Json:
    """The same value with the keys of every object in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {name: shuffled_keys(item, rng) for name, item in items}
    if isinstance(value, list):
        return [shuffled_keys(item, rng) for item in value]
    return value


@settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_change_the_provider_reads_is_another_key(data: st.DataObject) -> None:
    family = FAMILIES[data.draw(families)]
    body = data.draw(family.bodies())
    edited = data.draw(meaning_edits(body, family))
    assert key(family, edited) != key(family, body), (body, edited)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.data(), st.randoms(use_true_random=False))
def test_what_the_provider_does_not_read_differently_is_the_same_key(data: st.DataObject, rng: random.Random) -> None:
    """Key order at the top level and in the conversation, whitespace, escapes, and `stream` where the
    body asks for it: one request as the provider reads it, so one key."""
    family = FAMILIES[data.draw(families)]
    body = data.draw(family.bodies())
    names_in_another_order = rng.sample(list(body), len(body))
    same = {
        name: shuffled_keys(body[name], rng) if name in CONVERSATION_FIELDS else body[name]
        for name in names_in_another_order
    }
    assert key(family, same) == key(family, body)
    spaced = json.dumps(body, indent=data.draw(st.sampled_from([None, 1, 4])), ensure_ascii=data.draw(st.booleans()))
    assert key(family, spaced.encode()) == key(family, body)
    if family.streams_in_body:
        assert key(family, {**body, "stream": True}) == key(family, body)


query_values = st.lists(st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True), min_size=2, max_size=3, unique=True)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(families, st.data())
def test_a_repeated_query_parameter_is_keyed_in_the_order_it_was_sent(name: str, data: st.DataObject) -> None:
    """A server reads a parameter sent twice as its first value or its last (or all, in order), so
    `?v=1&v=2` and `?v=2&v=1` may be two requests; parameters of different names are read by name,
    so their order is not."""
    family = FAMILIES[name]
    body = data.draw(family.bodies())
    values = data.draw(query_values)
    other = data.draw(
        st.from_regex(r"[a-z]{1,6}=[a-z0-9]{0,4}", fullmatch=True).filter(lambda pair: not pair.startswith("v="))
    )
    sent = "&".join(f"v={value}" for value in values)
    reordered = "&".join(f"v={value}" for value in reversed(values))
    assert key(family, body, f"{sent}&{other}") != key(family, body, f"{reordered}&{other}")
    assert key(family, body, f"{sent}&{other}") == key(family, body, f"{other}&{sent}")


def said_otherwise(body: dict[str, Any], text: str) -> dict[str, Any]:
    return {**body, "messages": [*body["messages"][:-1], {"role": "user", "content": f"{text}?"}]}


SDK_EDITS: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
    "the last message's text": said_otherwise,
    "a role": lambda body, _: {**body, "messages": [*body["messages"], {"role": "assistant", "content": "ok"}]},
    "the messages' order": lambda body, _: {
        **body,
        "messages": [{"role": "user", "content": "first"}, *body["messages"]],
    },
    "an image's URL": lambda body, text: {
        **body,
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"https://e.com/{text}.png"}}]}
        ],
    },
    "temperature": lambda body, _: {**body, "temperature": body.get("temperature", 0) + 0.5},
    "n": lambda body, _: {**body, "n": body.get("n", 1) + 1},
    "an unknown field": lambda body, text: {**body, "x_hint": text},
}


@settings(max_examples=14, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data(), st.randoms(use_true_random=False))
def test_through_the_openai_sdk_a_read_change_misses_and_a_reordered_request_hits(
    fake_provider: RunningFakeProvider, data: st.DataObject, rng: random.Random
) -> None:
    """End to end: the openai SDK through the transport to the fake provider. The body the SDK sends,
    its messages' keys in another order, is a hit; one with a change the provider reads is a miss."""
    body = data.draw(chat())
    edited = SDK_EDITS[data.draw(st.sampled_from(sorted(SDK_EDITS)))](body, data.draw(names))
    assume(edited != body)
    http_client = httpx2.Client(transport=CachingTransport(cache=Cache()))
    client = openai.OpenAI(
        api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )

    def outcome(sent: dict[str, Any]) -> str:
        rest = {name: value for name, value in sent.items() if name not in ("model", "messages")}
        raw = client.chat.completions.with_raw_response.create(
            model=sent["model"], messages=sent["messages"], extra_body=rest
        )
        return raw.headers["x-cache"]

    with http_client:
        assert outcome(body) == "MISS"
        assert outcome({**body, "messages": shuffled_keys(body["messages"], rng)}) == "HIT"
        assert outcome(edited) == "MISS"
