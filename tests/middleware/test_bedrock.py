"""Amazon Bedrock's runtime through the caching transports: the real anthropic SDK's
`AnthropicBedrock` (SigV4-signed InvokeModel) and Converse, against the fake provider."""

from __future__ import annotations

from typing import Any

import httpx2
from anthropic import AnthropicBedrock

from middleware import Cache, CachingTransport
from middleware.keys import credential_of
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


def test_streaming_actions_pass_through_untouched(fake_provider: RunningFakeProvider) -> None:
    cache = Cache()
    with httpx2.Client(transport=CachingTransport(cache=cache), base_url=fake_provider.url) as client:
        answer = client.post(f"/model/{CLAUDE}/converse-stream", json={"messages": []})
    assert "x-cache" not in answer.headers  # binary event-stream framing: not the cache's business
    assert cache.stats.as_dict() == {k: 0 for k in cache.stats.as_dict()}


def test_the_sigv4_scope_is_the_access_key_id() -> None:
    signed: dict[str, Any] = {
        "authorization": "AWS4-HMAC-SHA256 Credential=AKIDALICE/20261127/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=host, Signature=abc"
    }
    assert credential_of(signed, "") == "aws:AKIDALICE"
    assert credential_of({"authorization": "Bearer sk-1"}, "") == "sk-1"
