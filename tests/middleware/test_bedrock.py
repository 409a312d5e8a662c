"""Amazon Bedrock's runtime through the caching transports: the real anthropic SDK's
`AnthropicBedrock` (SigV4-signed InvokeModel) and Converse, against the fake provider."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from anthropic import AnthropicBedrock

from llm_cache._wire import BEDROCK
from llm_cache.middleware import Cache, CachingTransport
from tests.support.fake_provider_fixtures import RunningFakeProvider

CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def bedrock(cache: Cache, fake: RunningFakeProvider, access_key: str = "AKIDALICE") -> AnthropicBedrock:
    return AnthropicBedrock(
        aws_access_key=access_key,
        aws_secret_key="secret",
        aws_region="us-east-1",
        base_url=fake.url,
        http_client=httpx2.Client(transport=CachingTransport(cache=cache)),
        max_retries=0,
    )


def test_a_signed_invoke_is_cached_by_its_access_key_not_its_signature(fake_provider: RunningFakeProvider) -> None:
    cache = Cache()
    alice = bedrock(cache, fake_provider)

    first = alice.messages.with_raw_response.create(model=CLAUDE, max_tokens=64, messages=QUESTION)
    second = alice.messages.with_raw_response.create(model=CLAUDE, max_tokens=64, messages=QUESTION)
    bob = bedrock(cache, fake_provider, "AKIDBOB").messages.with_raw_response.create(
        model=CLAUDE, max_tokens=64, messages=QUESTION
    )

    assert [r.headers["x-cache"] for r in (first, second, bob)] == ["MISS", "HIT", "MISS"]
    assert second.parse().content[0].text == first.parse().content[0].text
    assert fake_provider.count("/invoke") == 2
    signatures = {r.headers["authorization"] for r in fake_provider.requests}
    assert len(signatures) == 2  # each request signed anew; only the key id scopes the cache
    requests = cache.telemetry.snapshot()["llm_cache_requests"]
    assert requests[("hit", "aws.bedrock", CLAUDE, "exact")] == 1


def converse(client: httpx2.Client, key_id: str, text: str) -> httpx2.Response:
    # A SigV4-shaped Authorization header, as boto3 or any signer sends it (the fake checks the shape).
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={key_id}/20261127/us-east-1/bedrock/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={abs(hash(text)):x}"
    )
    return client.post(
        f"/model/{CLAUDE}/converse",
        json={"messages": [{"role": "user", "content": [{"text": text}]}], "inferenceConfig": {"maxTokens": 64}},
        headers={"authorization": authorization, "x-amz-date": "20261127T050000Z"},
    )


def test_converse_is_cached_and_its_usage_counted(fake_provider: RunningFakeProvider) -> None:
    cache = Cache()
    with httpx2.Client(transport=CachingTransport(cache=cache), base_url=fake_provider.url) as client:
        answers = [converse(client, "AKIDALICE", "What is the capital of France?") for _ in range(2)]
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT"]
    assert answers[1].json() == answers[0].json()
    usage = answers[0].json()["usage"]
    avoided = cache.telemetry.snapshot()["llm_cache_tokens_avoided"]
    assert avoided[("aws.bedrock", CLAUDE, "input")] == usage["inputTokens"]
    assert avoided[("aws.bedrock", CLAUDE, "output")] == usage["outputTokens"]


def test_a_converse_answer_is_replayed_to_converse_stream_as_event_stream_frames(
    fake_provider: RunningFakeProvider,
) -> None:
    from llm_cache.middleware.providers.eventstream import EventStreamDecoder

    cache = Cache()
    with httpx2.Client(transport=CachingTransport(cache=cache), base_url=fake_provider.url) as client:
        answer = converse(client, "AKIDALICE", "What is the capital of France?").json()
        streamed = client.post(
            f"/model/{CLAUDE}/converse-stream",
            json={
                "messages": [{"role": "user", "content": [{"text": "What is the capital of France?"}]}],
                "inferenceConfig": {"maxTokens": 64},
            },
            headers={"authorization": "AWS4-HMAC-SHA256 Credential=AKIDALICE/20261127/us-east-1/bedrock/aws4_request"},
        )

    assert streamed.headers["x-cache"] == "HIT"  # one entry for both forms
    assert streamed.headers["content-type"] == "application/vnd.amazon.eventstream"
    frames = EventStreamDecoder().feed(streamed.content)
    kinds = [headers[":event-type"] for headers, _ in frames]
    assert kinds == ["messageStart", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"]
    assert orjson.loads(frames[1][1])["delta"]["text"] == answer["output"]["message"]["content"][0]["text"]
    assert orjson.loads(frames[-1][1])["usage"] == answer["usage"]
    assert fake_provider.count("/converse-stream") == 0


def test_the_sigv4_scope_is_the_access_key_id() -> None:
    signed: dict[str, Any] = {
        "authorization": "AWS4-HMAC-SHA256 Credential=AKIDALICE/20261127/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=host, Signature=abc"
    }
    assert BEDROCK.credential(signed, "") == "aws:AKIDALICE:"
    # a temporary credential's secret session token is part of the scope: a key id alone can be guessed
    assert BEDROCK.credential({**signed, "x-amz-security-token": "tok"}, "") == "aws:AKIDALICE:tok"
    assert BEDROCK.credential({"authorization": "Bearer ABSKbedrock-api-key"}, "") == "ABSKbedrock-api-key"


def test_a_streamed_invoke_is_stored_and_replayed_as_event_stream_frames(fake_provider: RunningFakeProvider) -> None:
    cache = Cache()
    client = bedrock(cache, fake_provider)

    def streamed() -> str:
        with client.messages.stream(model=CLAUDE, max_tokens=64, messages=QUESTION) as stream:
            return "".join(stream.text_stream)

    first, second = streamed(), streamed()
    plain = client.messages.with_raw_response.create(model=CLAUDE, max_tokens=64, messages=QUESTION)

    assert first and second == first == plain.parse().content[0].text
    # The stream's entry is its own: a JSON answer of another model could not be replayed as events.
    assert plain.headers["x-cache"] == "MISS"
    assert (cache.stats.misses, cache.stats.hits) == (2, 1)
    assert fake_provider.count("/invoke-with-response-stream") == 1 and fake_provider.count("/invoke") == 1


def test_a_cut_event_stream_is_not_stored(fake_provider: RunningFakeProvider) -> None:
    cache = Cache()
    client = bedrock(cache, fake_provider)
    fake_provider.cut_stream_after(3)
    # anthropic 2.17+ wraps a failed body read in APIConnectionError; earlier releases raise httpx2's error.
    with (
        pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)) as raised,
        client.messages.stream(model=CLAUDE, max_tokens=64, messages=QUESTION) as stream,
    ):
        "".join(stream.text_stream)
    cause = raised.value if isinstance(raised.value, httpx2.RemoteProtocolError) else raised.value.__cause__
    assert isinstance(cause, httpx2.RemoteProtocolError)
    assert cache.stats.stored == 0
    with client.messages.stream(model=CLAUDE, max_tokens=64, messages=QUESTION) as stream:
        assert "".join(stream.text_stream)
    assert cache.stats.stored == 1 and fake_provider.count("/invoke-with-response-stream") == 2


def test_event_stream_frames_round_trip_whatever_the_chunking() -> None:
    from llm_cache.middleware.providers.eventstream import EventStreamDecoder, encode_message

    frames = encode_message({":event-type": "chunk"}, b'{"bytes":"e30="}') + encode_message({"a": "b"}, b"")
    decoder = EventStreamDecoder()
    messages = [m for i in range(len(frames)) for m in decoder.feed(frames[i : i + 1])]
    assert messages == [({":event-type": "chunk"}, b'{"bytes":"e30="}'), ({"a": "b"}, b"")]
    assert not decoder.pending


def test_a_corrupt_frame_breaks_the_stream_so_nothing_is_stored() -> None:
    from llm_cache.middleware.providers.bedrock import InvokeModelStream
    from llm_cache.middleware.providers.eventstream import EventStreamDecoder, EventStreamError

    final = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": "Paris."}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }
    endpoint = InvokeModelStream()
    frames = endpoint.render_stream(orjson.dumps(final), None)  # type: ignore[arg-type]
    whole = endpoint.assembler(None)  # type: ignore[arg-type]
    whole.feed(frames)
    assert whole.complete and orjson.loads(whole.result() or b"{}")["content"] == final["content"]

    corrupt = bytearray(frames)
    corrupt[40] ^= 0xFF
    broken = endpoint.assembler(None)  # type: ignore[arg-type]
    broken.feed(bytes(corrupt))
    assert not broken.complete and broken.result() is None
    with pytest.raises(EventStreamError, match="checksum"):
        EventStreamDecoder().feed(bytes(corrupt))


def test_settings_in_headers_and_inference_profile_arns_are_keyed(fake_provider: RunningFakeProvider) -> None:
    cache = Cache()
    client = bedrock(cache, fake_provider)
    profile = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0"
    guarded = {"X-Amzn-Bedrock-GuardrailIdentifier": "gr-1", "X-Amzn-Bedrock-GuardrailVersion": "1"}

    answers = [
        client.messages.with_raw_response.create(model=profile, max_tokens=64, messages=QUESTION),
        client.messages.with_raw_response.create(model=profile, max_tokens=64, messages=QUESTION),
        client.messages.with_raw_response.create(
            model=profile, max_tokens=64, messages=QUESTION, extra_headers=guarded
        ),
    ]

    assert [a.headers["x-cache"] for a in answers] == ["MISS", "HIT", "MISS"]  # a guardrail is another answer
    assert cache.telemetry.snapshot()["llm_cache_requests"][("hit", "aws.bedrock", profile, "exact")] == 1


def test_the_body_cache_field_is_refused_on_a_signed_body(fake_provider: RunningFakeProvider) -> None:
    client = bedrock(Cache(), fake_provider)
    with pytest.raises(anthropic.BadRequestError, match="signed body"):
        client.messages.create(model=CLAUDE, max_tokens=64, messages=QUESTION, extra_body={"cache": {"ttl": 60}})
    assert fake_provider.count("/invoke") == 0  # nothing reached Bedrock, whose signature it would have broken


def test_unreadable_frame_headers_leave_the_stream_unstored_without_failing_it() -> None:
    import struct
    import zlib

    from llm_cache.middleware.providers.bedrock import InvokeStreamAssembler

    header = b"\x02\xff\xfe\x07\x00\x01x"  # a name that is not UTF-8
    prelude = struct.pack(">II", 16 + len(header), len(header))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + header
    frame = body + struct.pack(">I", zlib.crc32(body))
    assembler = InvokeStreamAssembler()
    assembler.feed(frame)  # no exception reaches the caller's stream
    assert not assembler.complete and assembler.result() is None
