"""A Bedrock stream hit is indistinguishable from the provider's answer, with the anthropic SDK's
`AnthropicBedrock` as the oracle.

Each fixture (tests/support/bedrock_streams.py) is streamed once from the provider through the cache
(a miss, stored) and again (hits, replayed as event-stream frames), through the caching transport
and through `CacheMiddleware`. The SDK's final message of the replay must be that of the original,
and the replay's events, as the SDK reads them, must be the provider's, one by one, Bedrock's own
fields (invocation metrics, guardrail action and trace) included.

`converse-stream` likewise, with boto3's own parsers as the oracle (boto3 does not send through
HTTPX, so botocore reads the bytes the caller got): the fixtures cover every documented
ConverseStream event and delta; the reading of the original stream, of the replay and of the JSON
`converse` hit (which shares the entry) must agree, and the replay's events be the original's.
"""

from __future__ import annotations

import base64
from typing import Any

import botocore.session
import httpx
import httpx2
import msgpack
import pytest
from anthropic import AnthropicBedrock, AsyncAnthropicBedrock
from botocore.parsers import RestJSONParser

from llm_cache.middleware import Cache, CacheMiddleware, CachingTransport
from llm_cache.middleware._entry import unpack
from llm_cache.middleware.stores import MemoryStore
from tests.support.bedrock_streams import BIG, CLAUDE, CONVERSE_STREAMS, INVOKE_STREAMS, boto_events, converse_reading
from tests.support.fake_provider_fixtures import RunningFakeProvider

Read = tuple[dict[str, Any], str, list[dict[str, Any]]]
"""(the SDK's final message, the x-cache header, the raw events of one more stream of it)."""

CREDENTIALS = {"aws_access_key": "AKIDFIDELITY", "aws_secret_key": "secret", "aws_region": "us-east-1"}


@pytest.fixture(params=["transport", "middleware"])
def layer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def original_and_replay(layer: str, fake: RunningFakeProvider, question: str) -> tuple[Read, Read]:
    """The stream read twice with `messages.stream()` (a miss, then a hit), then once more as the
    SDK's raw events (a hit), whose fields the SDK's own stream events do not all keep."""
    request: dict[str, Any] = {"model": CLAUDE, "max_tokens": 1024, "messages": [{"role": "user", "content": question}]}
    if layer == "transport":
        client = AnthropicBedrock(
            base_url=fake.url, http_client=httpx2.Client(transport=CachingTransport(cache=Cache())), **CREDENTIALS
        )

        def final() -> tuple[dict[str, Any], str]:
            with client.messages.stream(**request) as stream:
                return stream.get_final_message().to_dict(), stream.response.headers["x-cache"]

        first, second = final(), final()
        return (*first, []), (*second, [event.to_dict() for event in client.messages.create(stream=True, **request)])
    asgi = httpx2.ASGITransport(app=CacheMiddleware(fake.provider.app, cache=Cache()))
    aio = AsyncAnthropicBedrock(
        base_url="http://bedrock.test", http_client=httpx2.AsyncClient(transport=asgi), **CREDENTIALS
    )

    async def final_async() -> tuple[dict[str, Any], str]:
        async with aio.messages.stream(**request) as stream:
            return (await stream.get_final_message()).to_dict(), stream.response.headers["x-cache"]

    first, second = await final_async(), await final_async()
    raw = [event.to_dict() async for event in await aio.messages.create(stream=True, **request)]
    return (*first, []), (*second, raw)


@pytest.mark.parametrize("name", sorted(INVOKE_STREAMS))
async def test_a_bedrock_stream_replay_is_what_the_sdk_made_of_the_original(
    name: str, layer: str, fake_provider: RunningFakeProvider
) -> None:
    sent = INVOKE_STREAMS[name]
    fake_provider.stream_next(sent, eventstream=True)

    (original, first, _), (replay, second, replay_events) = await original_and_replay(layer, fake_provider, name)

    assert (first, second) == ("MISS", "HIT")
    assert fake_provider.count("/invoke-with-response-stream") == 1
    assert replay == original
    # Every event as sent, fragment by fragment (the SDK yields no `ping`).
    assert replay_events == [event for event in sent if event.get("type") != "ping"]


async def test_bedrock_s_own_fields_ride_on_the_replay_s_last_event(fake_provider: RunningFakeProvider) -> None:
    fake_provider.stream_next(INVOKE_STREAMS["guardrail intervened"], eventstream=True)

    _, (_, _, events) = await original_and_replay("transport", fake_provider, "guardrail")

    assert events[-1]["type"] == "message_stop"
    assert events[-1]["amazon-bedrock-guardrailAction"] == "INTERVENED"
    assert events[-1]["amazon-bedrock-invocationMetrics"]["invocationLatency"] == 812
    assert "topicPolicy" in events[-1]["amazon-bedrock-trace"]["guardrail"]["input"]["gr-1"]


async def test_integers_beyond_64_bits_in_a_bedrock_tool_input_are_replayed_exactly(
    fake_provider: RunningFakeProvider,
) -> None:
    fake_provider.stream_next(INVOKE_STREAMS["parallel tool use"], eventstream=True)

    (original, _, _), (replay, _, _) = await original_and_replay("transport", fake_provider, "order")

    assert original["content"][2]["input"] == replay["content"][2]["input"] == {"order_id": BIG, "rush": True}


def converse_parsed(body: bytes) -> dict[str, Any]:
    """A JSON Converse answer as boto3's `converse` hands it to an application."""
    operation = botocore.session.get_session().get_service_model("bedrock-runtime").operation_model("Converse")
    parsed = RestJSONParser().parse({"body": body, "headers": {}, "status_code": 200}, operation.output_shape)
    parsed.pop("ResponseMetadata", None)
    return parsed


@pytest.mark.parametrize("name", sorted(CONVERSE_STREAMS))
async def test_a_converse_stream_hit_is_what_boto3_made_of_the_original(
    name: str, layer: str, fake_provider: RunningFakeProvider
) -> None:
    sent = CONVERSE_STREAMS[name]
    fake_provider.stream_next(sent, eventstream=True)
    signed = {"authorization": "AWS4-HMAC-SHA256 Credential=AKIDFIDELITY/20261206/us-east-1/bedrock/aws4_request"}
    body = {"messages": [{"role": "user", "content": [{"text": name}]}]}
    url = f"/model/{CLAUDE}/converse"
    if layer == "transport":
        with httpx2.Client(transport=CachingTransport(cache=Cache()), base_url=fake_provider.url) as client:
            answers = [client.post(url + form, json=body, headers=signed) for form in ("-stream", "-stream", "")]
    else:
        asgi = httpx2.ASGITransport(app=CacheMiddleware(fake_provider.provider.app, cache=Cache()))
        async with httpx2.AsyncClient(transport=asgi, base_url="http://bedrock.test") as aclient:
            answers = [await aclient.post(url + form, json=body, headers=signed) for form in ("-stream", "-stream", "")]

    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT", "HIT"]
    assert fake_provider.count("/converse-stream") == 1 and fake_provider.count("/converse") == 0
    original, replay = boto_events(answers[0].content), boto_events(answers[1].content)
    # boto3 reads every event, every documented field as sent (its padding `p` is not in the model).
    assert as_json(original) == [{kind: {k: v for k, v in payload.items() if k != "p"}} for kind, payload in sent]
    assert converse_reading(replay) == converse_reading(original)
    assert converse_reading(original) == converse_parsed(answers[2].content)
    assert as_json(replay) == as_json(original)  # every event as sent, fragment by fragment


def as_json(value: Any) -> Any:
    """botocore's reading in JSON terms: blobs (`redactedContent`) back in base64."""
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return base64.b64encode(value).decode() if isinstance(value, bytes) else value


SIGNED = {"authorization": "AWS4-HMAC-SHA256 Credential=AKIDFIDELITY/20261206/us-east-1/bedrock/aws4_request"}


@pytest.fixture(params=["transport", "transport on httpx", "middleware"])
def wire_layer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def posted_twice(layer: str, fake: RunningFakeProvider, path: str, body: dict[str, Any]) -> list[Any]:
    """The same signed Bedrock request sent twice, through the caching transport (on an httpx2 or an
    httpx client) or `CacheMiddleware`."""
    if layer.startswith("transport"):
        library: Any = httpx if layer.endswith("httpx") else httpx2
        with library.Client(transport=CachingTransport(cache=Cache()), base_url=fake.url) as client:
            return [client.post(path, json=body, headers=SIGNED) for _ in range(2)]
    asgi = httpx2.ASGITransport(app=CacheMiddleware(fake.provider.app, cache=Cache()))
    async with httpx2.AsyncClient(transport=asgi, base_url="http://bedrock.test") as aclient:
        return [await aclient.post(path, json=body, headers=SIGNED) for _ in range(2)]


@pytest.mark.parametrize("name", sorted(INVOKE_STREAMS))
async def test_an_invoke_stream_hit_is_the_miss_byte_for_byte_padding_included(
    name: str, wire_layer: str, fake_provider: RunningFakeProvider
) -> None:
    """Bedrock pads each `chunk` frame with `p` (a prefix of its alphabet, beside `bytes`) to hide the
    event's length: the hit pads each frame as much, in the same characters, so its frames are the miss's."""
    fake_provider.stream_next(INVOKE_STREAMS[name], eventstream=True)
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": name}],
    }

    miss, hit = await posted_twice(wire_layer, fake_provider, f"/model/{CLAUDE}/invoke-with-response-stream", body)

    assert [miss.headers["x-cache"], hit.headers["x-cache"]] == ["MISS", "HIT"]
    assert b'"p":"abc' in miss.content
    assert hit.content == miss.content


async def test_an_invoke_stream_entry_is_one_a_release_before_byte_exact_hits_refuses_to_replay(
    fake_provider: RunningFakeProvider,
) -> None:
    """An invoke stream's cut keeps whole `chunk` payloads (padding and the event in `bytes`), where
    releases before kept the bare Messages events in a cut of four elements: a pod of such a release
    sharing the store (a rolling upgrade, a rollback) read the new cut as one of its own and framed each
    payload as an event, a stream no SDK reads. The cut carries its spelling always, a fifth element
    those releases refuse (they synthesise the stream from the answer), while this one replays it."""
    fake_provider.stream_next(INVOKE_STREAMS[sorted(INVOKE_STREAMS)[0]], eventstream=True)
    store = MemoryStore()
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with httpx2.Client(transport=CachingTransport(cache=Cache(store)), base_url=fake_provider.url) as client:
        miss, hit = [
            client.post(f"/model/{CLAUDE}/invoke-with-response-stream", json=body, headers=SIGNED) for _ in range(2)
        ]
    stored = await store.get(miss.headers["x-cache-key"])
    assert stored is not None
    cut = unpack(stored).cut
    assert cut is not None and hit.headers["x-cache"] == "HIT" and hit.content == miss.content

    with pytest.raises(ValueError):  # how the releases before unpacked a cut (`cuts.replay`): refused
        version, sources, templates, sequence = msgpack.unpackb(cut, ext_hook=msgpack.ExtType)


@pytest.mark.parametrize("name", sorted(CONVERSE_STREAMS))
async def test_a_converse_stream_hit_is_the_miss_byte_for_byte_padding_included(
    name: str, wire_layer: str, fake_provider: RunningFakeProvider
) -> None:
    fake_provider.stream_next(CONVERSE_STREAMS[name], eventstream=True)
    body = {"messages": [{"role": "user", "content": [{"text": name}]}]}

    miss, hit = await posted_twice(wire_layer, fake_provider, f"/model/{CLAUDE}/converse-stream", body)

    assert [miss.headers["x-cache"], hit.headers["x-cache"]] == ["MISS", "HIT"]
    assert hit.content == miss.content
