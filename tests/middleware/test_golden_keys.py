"""Golden keys: the exact key of known requests, so a change to the canonical form cannot pass unseen.

Every stored entry in every user's store is found by these keys. A change that alters any of them
orphans all of those entries at once, so it must be made on purpose: bump `KEY_FORMAT`, replace the
table, and say so in the changelog (see "Key anatomy" in the README and docs/testing.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from llm_cache.middleware import Cache, KeyRequest, ScopeRequest, default_digest
from llm_cache.middleware._keys import KEY_FORMAT

SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/bedrock/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0123456789abcdef"
)
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.2}
MESSAGES = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
CONTENTS = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
CONVERSE = {"messages": [{"role": "user", "content": [{"text": "Hi"}]}], "inferenceConfig": {"maxTokens": 64}}
ALICE = {"authorization": "Bearer sk-alice"}
VERDICT = {"type": "object", "properties": {"reasoning": {"type": "string"}, "answer": {"type": "string"}}}


def tenant_of(request: ScopeRequest) -> str | None:
    return request.headers.get("x-tenant")


@dataclass(frozen=True)
class Known:
    """One request, the settings of the cache that keys it, and the key it must get."""

    path: str
    body: dict[str, Any] | bytes
    headers: dict[str, str] = field(default_factory=lambda: dict(ALICE))
    query: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    key: str = ""


GOLDEN: dict[str, Known] = {
    # families
    "openai chat": Known(
        "/v1/chat/completions",
        CHAT,
        key="default:c099295a3784e1bd368dc348843a7398c:b61013bf512630f3566c6175e70ed7cebd01fd6b6798013bec5d88ac8c96cc63",
    ),
    "openai chat, streamed (same entry)": Known(
        "/v1/chat/completions",
        {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        key="default:c099295a3784e1bd368dc348843a7398c:b61013bf512630f3566c6175e70ed7cebd01fd6b6798013bec5d88ac8c96cc63",
    ),
    "openai chat at a full upstream URL": Known(
        "https://api.openai.com/v1/chat/completions",
        CHAT,
        key="default:c099295a3784e1bd368dc348843a7398c:u82141e272189210ab931267ec91313de.b61013bf512630f3566c6175e70ed7cebd01fd6b6798013bec5d88ac8c96cc63",
    ),
    "openai responses": Known(
        "/v1/responses",
        {"model": "gpt-4o-mini", "input": "Hi"},
        key="default:c099295a3784e1bd368dc348843a7398c:d4d13c31601d9d0765b2f07ae9eca7ef0c67518a408882afcd66dd733b121359",
    ),
    "openai embeddings": Known(
        "/v1/embeddings",
        {"model": "text-embedding-3-small", "input": ["Hi"]},
        key="default:c099295a3784e1bd368dc348843a7398c:a7d9625522673ec4e614b920160c0da6d9336704a1b48152489c2ed5554c2b89",
    ),
    "openai moderations": Known(
        "/v1/moderations",
        {"model": "omni-moderation-latest", "input": "Hi"},
        key="default:c099295a3784e1bd368dc348843a7398c:31bdab20dd20a406df360df6c946c925d888689fed48d3a54bf1f162717d74e5",
    ),
    "openai legacy completions": Known(
        "/v1/completions",
        {"model": "gpt-3.5-turbo-instruct", "prompt": "Hi", "max_tokens": 8},
        key="default:c099295a3784e1bd368dc348843a7398c:bd2bdca5bb6c6b06b5e20c3df6d40683d608d4d9a0fe3fc8218a13cfccfe2b30",
    ),
    "azure chat": Known(
        "/openai/deployments/prod-4o/chat/completions",
        {"messages": CHAT["messages"]},
        {"api-key": "azure-key"},
        "api-version=2024-10-21",
        key="default:cd832c76cffcd05970d49e484ee3db983:5b54220fc18ca130606c17a3eac34a96234e63c43c9fac7370edeaf65216c506",
    ),
    "anthropic messages": Known(
        "/v1/messages",
        MESSAGES,
        {"x-api-key": "sk-ant-alice"},
        key="default:c1fa29e724e0ee6ebba8136f4ca414af2:45156b662d1a1f8bc275a4b09bca60265d16cc4e1647d632d12980735456925e",
    ),
    "anthropic messages, a version and a beta": Known(
        "/v1/messages",
        MESSAGES,
        {"x-api-key": "sk-ant-alice", "anthropic-version": "2023-06-01", "anthropic-beta": "context-1m-2025-08-07"},
        key="default:c1fa29e724e0ee6ebba8136f4ca414af2:e89d766fc5cdc5ad6f1444655520afe6430b588d6f751786d0ed1d341721c580",
    ),
    "gemini generateContent": Known(
        "/v1beta/models/gemini-2.5-flash:generateContent",
        CONTENTS,
        {"x-goog-api-key": "AIza-alice"},
        key="default:c200051022ba2bd27c1ff990b61d1e7c6:6046cd6568e961c6fdff0356d499882444f13550f710a7d545644b8b3f58e109",
    ),
    "gemini streamGenerateContent, key in the query": Known(
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        CONTENTS,
        {},
        "alt=sse&key=AIza-alice",
        key="default:c200051022ba2bd27c1ff990b61d1e7c6:6046cd6568e961c6fdff0356d499882444f13550f710a7d545644b8b3f58e109",
    ),
    "bedrock converse, SigV4 with a session token": Known(
        "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
        CONVERSE,
        {"authorization": SIGV4, "x-amz-security-token": "session-1", "x-amzn-bedrock-trace": "ENABLED"},
        key="default:c554d67008ceea277b9722ec9b7c80c28:1044e37593518f16a5a4c3867d624ac95eba12690edc3ea6e4aefde81ce8977c",
    ),
    "bedrock invoke, API key": Known(
        "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke",
        {"anthropic_version": "bedrock-2023-05-31", **{k: v for k, v in MESSAGES.items() if k != "model"}},
        {"authorization": "Bearer bedrock-api-key"},
        key="default:ce83eda6aac46f8ca5ee03fd65e3e6ada:e368671c375d94cc00442718afc867bb8ce3580da8848938086b5f689973bc5b",
    ),
    # scopes
    "scope shared": Known(
        "/v1/chat/completions",
        CHAT,
        settings={"scope": "shared"},
        key="default:shared:b61013bf512630f3566c6175e70ed7cebd01fd6b6798013bec5d88ac8c96cc63",
    ),
    "scope header:x-tenant": Known(
        "/v1/chat/completions",
        CHAT,
        {"x-tenant": "acme"},
        settings={"scope": "header:x-tenant"},
        key="default:h822b33ad87c148a0a20a5ba7cd5ebcaa:b61013bf512630f3566c6175e70ed7cebd01fd6b6798013bec5d88ac8c96cc63",
    ),
    "scope function": Known(
        "/v1/chat/completions",
        CHAT,
        {"x-tenant": "acme"},
        settings={"scope": tenant_of},
        key="default:u822b33ad87c148a0a20a5ba7cd5ebcaa:b61013bf512630f3566c6175e70ed7cebd01fd6b6798013bec5d88ac8c96cc63",
    ),
    "anonymous requests sharing": Known(
        "/v1/chat/completions",
        CHAT,
        {},
        settings={"anonymous": "shared"},
        key="default:anon:b61013bf512630f3566c6175e70ed7cebd01fd6b6798013bec5d88ac8c96cc63",
    ),
    # namespaces, prefixes and controls
    "key_prefix": Known(
        "/v1/chat/completions",
        CHAT,
        settings={"key_prefix": "v1:"},
        key="v1:default:c099295a3784e1bd368dc348843a7398c:b61013bf512630f3566c6175e70ed7cebd01fd6b6798013bec5d88ac8c96cc63",
    ),
    "namespace from x-cache-namespace": Known(
        "/v1/chat/completions",
        CHAT,
        {**ALICE, "x-cache-namespace": "faq"},
        key="faq:c099295a3784e1bd368dc348843a7398c:b61013bf512630f3566c6175e70ed7cebd01fd6b6798013bec5d88ac8c96cc63",
    ),
    "namespace from the body's cache field": Known(
        "/v1/chat/completions",
        {**CHAT, "cache": {"namespace": "faq", "ttl": 60}},
        key="faq:c099295a3784e1bd368dc348843a7398c:b61013bf512630f3566c6175e70ed7cebd01fd6b6798013bec5d88ac8c96cc63",
    ),
    "controls that leave the key alone": Known(
        "/v1/chat/completions",
        {**CHAT, "cache": {"no-store": True}},
        {**ALICE, "cache-control": "no-cache, max-age=30", "x-cache-ttl": "60"},
        key="default:c099295a3784e1bd368dc348843a7398c:b61013bf512630f3566c6175e70ed7cebd01fd6b6798013bec5d88ac8c96cc63",
    ),
    "ignored_fields": Known(
        "/v1/chat/completions",
        {**CHAT, "seed": 7},
        settings={"ignored_fields": ("seed",)},
        key="default:c099295a3784e1bd368dc348843a7398c:b61013bf512630f3566c6175e70ed7cebd01fd6b6798013bec5d88ac8c96cc63",
    ),
    "a custom key builder": Known(
        "/v1/chat/completions",
        CHAT,
        settings={"key_builder": "tests.middleware.key_builders:model_only"},
        key="default:c099295a3784e1bd368dc348843a7398c:e0d127fb2db0b2911aa085c909c94f5f00fb27d91b81370e47d590434b9f334e",
    ),
    # key order: kept outside the conversation (a structured output follows its schema's order)
    "a structured output's schema, keys unsorted": Known(
        "/v1/chat/completions",
        {**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT}}},
        key="default:c099295a3784e1bd368dc348843a7398c:87d7ae7d4414a0c23154cd8e3abb7d53d0b46b614711329ec1ec91db90367374",
    ),
    # numbers a double cannot carry
    "an integer past 64 bits": Known(
        "/v1/chat/completions",
        b'{"model":"gpt-4o-mini","messages":[],"seed":1180591620717411303424}',
        key="default:c099295a3784e1bd368dc348843a7398c:adafb5a75d28f96dbe3c7aba32ee592738d5b2db79caf1e2217ffde4d4e63069",
    ),
    "a float past a double's precision": Known(
        "/v1/chat/completions",
        b'{"model":"gpt-4o-mini","messages":[],"temperature":0.20000000000000000001}',
        key="default:c099295a3784e1bd368dc348843a7398c:41e16e9e0a5e83029dfd64fa9d94b19c4b2a76c45f63fb2c18984c3754db5e43",
    ),
}


def key_of(known: Known) -> str:
    return Cache(**known.settings).key_for(known.path, known.body, known.headers, known.query)


def test_these_are_the_keys_of_key_format_1() -> None:
    assert KEY_FORMAT == 1, "a new key format: replace GOLDEN with its keys, and keep this test's promise"


def test_a_hand_built_key_request_has_the_engines_digest() -> None:
    request = KeyRequest(
        family="openai",
        endpoint="chat.completions",
        model="gpt-4o-mini",
        target=None,
        body=CHAT,
        query=(),
        headers={},
        volatile_fields=frozenset(),
    )
    assert default_digest(request) == GOLDEN["openai chat"].key.rsplit(":", 1)[1]


@pytest.mark.parametrize("name", list(GOLDEN))
def test_a_known_request_has_a_known_key(name: str) -> None:
    assert key_of(GOLDEN[name]) == GOLDEN[name].key
