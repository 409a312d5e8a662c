"""Keys: what changes a key, what does not, and how scopes isolate callers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import anthropic
import httpx2
import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache._wire import OPENAI
from llm_cache.middleware import Cache, CachingTransport, KeyRequest
from llm_cache.middleware._keys import (
    DefaultDigest,
    NoIdentity,
    compose_key,
    credential_scope,
    header_scope,
    key_owner,
    key_space,
    load_callable,
    namespace_prefix,
)
from tests.support.fake_provider_fixtures import RunningFakeProvider

CHAT = "/v1/chat/completions"
ALICE = {"authorization": "Bearer sk-alice"}
BOB = {"authorization": "Bearer sk-bob"}


def body(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.2,
    }
    base.update(overrides)
    return base


def key(
    cache: Cache, payload: dict[str, object] | bytes, headers: dict[str, str] = ALICE, path: str = CHAT, query: str = ""
) -> str:
    return cache.key_for(path, payload, headers, query)


def test_key_has_prefix_namespace_scope_and_sha256_digest() -> None:
    cache = Cache(key_prefix="v7:")
    prefix, namespace, scope, digest = key(cache, body()).split(":")
    assert prefix == "v7"
    assert namespace == "default"
    assert scope.startswith("c") and len(scope) == 33
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_key_never_contains_the_credential() -> None:
    assert "sk-alice" not in key(Cache(), body())


def test_reordered_json_keys_give_the_same_key() -> None:
    cache = Cache()
    forward = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 1})
    backward = b'{"top_p":1, "messages":[{"content":"x","role":"user"}],   "model":"m"}'
    assert key(cache, forward) == key(cache, backward)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o"},
        {"temperature": 0.3},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"a_param_no_one_has_heard_of": 1},
        {"messages": [{"role": "user", "content": "Hi!"}]},
    ],
)
def test_anything_that_can_change_the_answer_changes_the_key(change: dict[str, object]) -> None:
    cache = Cache()
    assert key(cache, body()) != key(cache, body(**change))


@pytest.mark.parametrize(
    "volatile",
    [
        {"stream": True},
        {"stream_options": {"include_usage": True}},
        {"user": "u-1"},
        {"metadata": {"trace": "t"}},
        {"store": True},
        {"service_tier": "flex"},
        {"cache": {"ttl": 5}},
    ],
)
def test_volatile_fields_do_not_change_the_key(volatile: dict[str, object]) -> None:
    cache = Cache()
    assert key(cache, body()) == key(cache, body(**volatile))


def test_extra_ignored_fields_are_configurable() -> None:
    cache = Cache(ignored_fields=("seed",))
    assert key(cache, body(seed=1)) == key(cache, body(seed=2))
    assert key(Cache(), body(seed=1)) != key(Cache(), body(seed=2))


def test_credentials_are_isolated_by_default_and_shared_on_request() -> None:
    assert key(Cache(), body(), ALICE) != key(Cache(), body(), BOB)
    shared = Cache(scope="shared")
    assert key(shared, body(), ALICE) == key(shared, body(), BOB)


@pytest.mark.parametrize(
    ("header", "path"),
    [
        ("authorization", CHAT),
        ("x-api-key", "/v1/messages"),
        ("api-key", "/openai/deployments/d/chat/completions"),
        ("x-goog-api-key", "/v1beta/models/gemini-2.0-flash:generateContent"),
    ],
)
def test_every_provider_credential_header_scopes_entries(header: str, path: str) -> None:
    cache = Cache()
    assert key(cache, body(), {header: "k1"}, path) != key(cache, body(), {header: "k2"}, path)


def test_gemini_key_query_parameter_scopes_but_is_not_in_the_digest() -> None:
    cache = Cache()
    path = "/v1beta/models/gemini-2.0-flash:generateContent"
    payload = {"contents": [{"parts": [{"text": "hi"}]}]}
    first = key(cache, payload, {}, path, "key=k1")
    second = key(cache, payload, {}, path, "key=k2")
    namespace, first_scope, first_digest = first.split(":")
    _, second_scope, second_digest = second.split(":")
    assert first_scope != second_scope
    assert first_digest == second_digest


def test_header_scope_isolates_tenants() -> None:
    cache = Cache(scope="header:x-tenant")
    assert key(cache, body(), {"x-tenant": "acme"}) != key(cache, body(), {"x-tenant": "globex"})
    assert key(cache, body(), {"x-tenant": "acme", **ALICE}) == key(cache, body(), {"x-tenant": "acme", **BOB})


def test_namespace_from_header_or_body_is_part_of_the_key() -> None:
    cache = Cache()
    assert key(cache, body(), {**ALICE, "x-cache-namespace": "faq"}).split(":")[0] == "faq"
    assert key(cache, body(cache={"namespace": "faq"})).split(":")[0] == "faq"


def test_azure_api_version_query_changes_the_key() -> None:
    cache = Cache()
    path = "/openai/deployments/prod-4o/chat/completions"
    assert key(cache, body(), path=path, query="api-version=2024-10-21") != key(
        cache, body(), path=path, query="api-version=2025-01-01"
    )


def test_endpoint_is_part_of_the_key() -> None:
    cache = Cache()
    assert key(cache, body()) != key(cache, body(), path="/openai/deployments/d/chat/completions")


def test_custom_key_builder_can_wrap_the_default() -> None:
    calls = []

    def by_model_and_last_message(request, default):  # type: ignore[no-untyped-def]
        calls.append(default(request))
        return f"custom-{request.model}-{request.body['messages'][-1]['content']}"

    cache = Cache(key_builder=by_model_and_last_message)
    built = key(cache, body())
    assert "custom" not in built  # the builder's answer is hashed under the engine's scope
    assert built == key(cache, body(temperature=0.9))
    assert built != key(cache, body(messages=[{"role": "user", "content": "Bye"}]))
    assert len(calls[0]) == 64


def test_custom_key_builder_by_dotted_path() -> None:
    for path in ("tests.middleware.key_builders:model_only", "tests.middleware.key_builders.model_only"):
        cache = Cache(key_builder=path)
        assert key(cache, body(temperature=0)) == key(cache, body(temperature=1))


def test_bad_key_builder_paths_name_the_problem() -> None:
    with pytest.raises(ValueError, match="cannot import module"):
        load_callable("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="has no attribute"):
        load_callable("tests.middleware.key_builders:missing")


def test_key_for_refuses_requests_that_are_not_llm_calls() -> None:
    with pytest.raises(ValueError, match="not a cacheable"):
        Cache().key_for("/v1/models", {})


# -- exact numbers ----------------------------------------------------------------------------------


def raw(number: str) -> bytes:
    return b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"temperature":' + number.encode() + b"}"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("0.1", "0.10000000000000000001"),  # the same double, different numbers
        ("0.30000000000000004", "0.30000000000000005"),
        ("1e-400", "0"),  # underflows to 0.0
        ("1.5e-323", "1.4e-323"),  # subnormals: the same double
        ("1e400", "1e401"),  # overflow, which orjson refuses
        ("123456789012345678901234567890", "123456789012345678901234567891"),  # beyond 64 bits
        ("18446744073709551616", "18446744073709551617"),  # 2**64 and one more
        ("1234567890.1234567", "1234567890.1234568"),  # 17 digits around a point
    ],
)
def test_numbers_that_differ_in_value_give_different_keys(first: str, second: str) -> None:
    cache = Cache()
    assert key(cache, raw(first)) != key(cache, raw(second))


def test_an_integer_beyond_64_bits_is_keyed_not_passed_through() -> None:
    assert len(key(Cache(), raw("9" * 400)).split(":")[2]) == 64


def test_bodies_a_double_carries_exactly_keep_their_keys() -> None:
    cache = Cache()
    parsed = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.5}
    assert key(cache, raw("0.5")) == key(cache, parsed) == key(cache, raw("0.50"))  # one value, one key


def test_the_exact_canonical_form_never_equals_the_fast_one() -> None:
    from llm_cache.middleware._keys import digest_of

    form = ("openai", "chat.completions", "m", None, (), {"temperature": 0.5}, frozenset())
    assert digest_of(*form) != digest_of(*form, exact=True)
    cache = Cache()
    # a long digit run inside a string takes the exact path: same values, a different canonical form
    slow = key(cache, {**body(), "messages": [{"role": "user", "content": "call 1234567890123456"}]})
    fast = key(cache, {**body(), "messages": [{"role": "user", "content": "call 123456789012345"}]})
    assert slow != fast and key(cache, orjson.loads(raw("0.2").replace(b"Hi", b"call 1234567890123456"))) == slow


def test_a_body_with_many_digit_runs_is_keyed_exactly() -> None:
    cache = Cache()
    table = " ".join(str(100 + i) for i in range(40))  # more runs than the scan measures one by one
    many = body(messages=[{"role": "user", "content": table}])
    assert key(cache, many) == key(cache, many)
    assert key(cache, {**many, "temperature": orjson.Fragment(b"0.20000000000000000001")}) != key(cache, many)


@pytest.mark.parametrize("number", ["0e99999999999999999999", "1e-99999999999999999999999", "1e400", "9" * 5000])
def test_numbers_beyond_what_a_double_or_decimal_holds_are_keyed(number: str) -> None:
    cache = Cache()
    assert key(cache, raw(number)) != key(cache, raw("0"))


_JSON_NUMBER = r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][-+]?[0-9]{1,4})?"


@settings(max_examples=2000, deadline=None)
@given(st.from_regex(_JSON_NUMBER, fullmatch=True))
def test_the_fast_path_is_taken_only_for_numbers_a_double_carries_exactly(token: str) -> None:
    from decimal import Decimal

    from llm_cache.middleware._exact_json import loads_every_number

    value, exact = loads_every_number(f'{{"n":{token}}}'.encode())
    # orjson's doubles (the fast path) and the exact path's doubles must have the token's exact value
    if not exact or isinstance(value["n"], float):
        assert Decimal(repr(value["n"])) == Decimal(token)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="d.es ", max_size=60), st.integers(0, 60), st.integers(0, 20))
def test_the_scan_finds_the_first_three_digits_whichever_way_it_looks(marks: str, start: int, finds: int) -> None:
    from llm_cache.middleware._exact_json import _three_digits

    data = marks.encode()
    assert _three_digits(data, start, finds)[0] == data.find(b"ddd", start)


@pytest.mark.parametrize(
    ("tail", "exact"),
    [
        ("", False),
        (', "seed": 1234567890123456', True),  # 16 digits
        (', "scale": 1e-300', True),  # a three-digit exponent
        (', "n": [' + ", ".join(str(100 + i) for i in range(20)) + "]", False),  # many short runs
        (', "note": "' + "ab1 " * 5000 + '"', False),  # many lone digits in a long document
    ],
)
def test_a_long_body_takes_the_exact_path_only_for_numbers_a_double_cannot_carry(tail: str, exact: bool) -> None:
    from llm_cache.middleware._exact_json import loads_every_number

    long_body = b'{"messages": [{"role": "user", "content": "' + b"lorem ipsum " * 2000 + b'"}]' + tail.encode() + b"}"
    assert len(long_body) > 8192 and loads_every_number(long_body)[1] is exact


# -- the credential a scope is derived from ------------------------------------------------------

GEMINI = "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
CONTENTS = {"contents": [{"parts": [{"text": "hi"}]}]}
BEDROCK = "/model/anthropic.claude-3-haiku-20240307-v1:0/converse"
CONVERSE = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}


def sigv4(key_id: str | None, signature: str) -> str:
    credential = f"Credential={key_id}/20260101/us-east-1/bedrock/aws4_request, " if key_id else ""
    return f"AWS4-HMAC-SHA256 {credential}SignedHeaders=host, Signature={signature}"


def test_gemini_reads_its_key_among_the_other_query_parameters() -> None:
    cache = Cache()
    in_header = key(cache, CONTENTS, {"x-goog-api-key": "k1"}, GEMINI, "alt=sse")
    assert key(cache, CONTENTS, {}, GEMINI, "alt=sse&key=k1") == in_header
    assert key(cache, CONTENTS, {}, GEMINI, "key=k1&alt=sse") == in_header
    assert key(cache, CONTENTS, {"x-goog-api-key": "k1"}, GEMINI, "alt=sse&key=k1") == in_header
    assert key(cache, CONTENTS, {}, GEMINI, "alt=sse&key=k2") != in_header


def test_gemini_with_two_different_keys_is_not_cached() -> None:
    with pytest.raises(ValueError, match="never cached"):
        key(Cache(), CONTENTS, {"x-goog-api-key": "k1"}, GEMINI, "alt=sse&key=k2")


def test_a_sigv4_request_is_scoped_by_its_key_id_and_session_token_not_its_signature() -> None:
    cache = Cache()
    first = key(cache, CONVERSE, {"authorization": sigv4("AKIDALICE", "aaa")}, BEDROCK)
    assert key(cache, CONVERSE, {"authorization": sigv4("AKIDALICE", "bbb")}, BEDROCK) == first
    assert key(cache, CONVERSE, {"authorization": sigv4("AKIDBOB", "aaa")}, BEDROCK) != first
    session = {"authorization": sigv4("AKIDALICE", "aaa"), "x-amz-security-token": "t1"}
    assert key(cache, CONVERSE, session, BEDROCK) != first


def test_a_sigv4_signature_without_credential_is_scoped_by_the_whole_header() -> None:
    cache = Cache()
    first = key(cache, CONVERSE, {"authorization": sigv4(None, "aaa")}, BEDROCK)
    assert key(cache, CONVERSE, {"authorization": sigv4(None, "aaa")}, BEDROCK) == first
    assert key(cache, CONVERSE, {"authorization": sigv4(None, "bbb")}, BEDROCK) != first


@pytest.mark.parametrize("scope", ["header:", "header", 5, "no_such_module_xyz:scope"])
def test_a_scope_that_names_nothing_is_refused(scope: object) -> None:
    with pytest.raises(ValueError, match="scope"):
        Cache(scope=scope)


def test_a_header_scope_is_read_whatever_the_case_it_was_configured_in() -> None:
    cache = Cache(scope="header:X-Tenant")
    assert key(cache, body(), {"x-tenant": "acme"}) == key(Cache(scope="header:x-tenant"), body(), {"x-tenant": "acme"})


def test_a_scope_function_may_name_any_identity_even_one_that_is_not_valid_unicode() -> None:
    def lone_surrogate(request: object) -> str:
        return "\ud800"

    assert key(Cache(scope=lone_surrogate), body(), {}).split(":")[1].startswith("u")


def test_the_scope_is_a_truncated_sha256_of_the_credential() -> None:
    digest = hashlib.sha256(b"sk-alice").hexdigest()[:32]
    assert credential_scope(OPENAI, ALICE, "") == "c" + digest
    memo: dict[str, str] = {}
    assert credential_scope(OPENAI, ALICE, "", memo=memo) == "c" + digest
    assert memo == {"sk-alice": digest}


def test_the_scope_memo_holds_at_most_1024_credentials() -> None:
    memo: dict[str, str] = {}
    for n in range(1025):
        credential_scope(OPENAI, {"authorization": f"Bearer sk-{n}"}, "", memo=memo)
    assert memo == {"sk-1024": hashlib.sha256(b"sk-1024").hexdigest()[:32]}


def test_a_query_parameter_with_an_empty_value_changes_the_key() -> None:
    cache = Cache()
    assert key(cache, body(), query="api-version=") != key(cache, body())


def test_a_key_builder_is_told_which_fields_to_ignore() -> None:
    seen: list[frozenset[str]] = []

    def recording(request: KeyRequest, default: DefaultDigest) -> str:
        seen.append(request.volatile_fields)
        return default(request)

    key(Cache(key_builder=recording, ignored_fields=("seed",)), body())
    volatile = {"stream", "stream_options", "user", "metadata", "store", "service_tier", "cache", "seed"}
    assert seen and volatile <= seen[0]


def test_only_requests_without_any_identity_share_when_anonymous_requests_do() -> None:
    def failing(request: object) -> str:
        raise RuntimeError("directory down")

    shared = Cache(anonymous="shared")
    assert key(shared, CONTENTS, {}, GEMINI).split(":")[1] == "anon"
    with pytest.raises(ValueError, match="never cached"):
        key(shared, CONTENTS, {"x-goog-api-key": "k1"}, GEMINI, "key=k2")  # two credentials: ambiguous
    assert key(Cache(scope=lambda request: None, anonymous="shared"), body(), {}).split(":")[1] == "anon"
    for function in (failing, lambda request: 5):
        with pytest.raises(ValueError, match="never cached"):
            key(Cache(scope=function, anonymous="shared"), body(), {})


def test_the_stream_form_of_a_gemini_request_is_not_in_the_key() -> None:
    cache = Cache()
    plain = key(cache, CONTENTS, {"x-goog-api-key": "k1"}, GEMINI)
    for query in ("alt=sse", "$alt=sse", "alt=json", "%24alt=json", "alt=sse&$alt=sse", "alt=sse&quotaUser=u1"):
        assert key(cache, CONTENTS, {"x-goog-api-key": "k1"}, GEMINI, query) == plain, query


def test_a_gemini_answer_format_the_entry_is_not_rendered_in_is_keyed_apart() -> None:
    """Two formats named at once (which one Google reads is not ours to guess: before, `alt=json&$alt=sse`
    shared the plain entry, rendered as SSE), and the formats no stored answer is rendered in."""
    cache = Cache()
    plain = key(cache, CONTENTS, {"x-goog-api-key": "k1"}, GEMINI)
    queries = ("alt=json&$alt=sse", "alt=proto", "alt=media", "$alt=json;enum-encoding=int", "$alt=sse;x=1")
    keys = {query: key(cache, CONTENTS, {"x-goog-api-key": "k1"}, GEMINI, query) for query in queries}
    assert plain not in keys.values() and len(set(keys.values())) == len(queries), keys


def test_a_repeated_scope_header_is_ambiguous_and_never_anonymous() -> None:
    with pytest.raises(NoIdentity) as caught:
        header_scope("x-tenant", {"x-tenant": "acme"}, repeated={"x-tenant"})
    assert caught.value.anonymous is False


def test_a_header_scope_may_name_a_one_letter_header() -> None:
    assert key(Cache(scope="header:t"), body(), {"t": "acme"}).split(":")[1].startswith("h")


def test_an_empty_identity_from_a_scope_function_is_no_identity() -> None:
    assert key(Cache(scope=lambda request: "", anonymous="shared"), body(), {}).split(":")[1] == "anon"


def test_every_key_of_a_namespace_starts_with_the_prefix_its_clear_removes() -> None:
    prefix = namespace_prefix("v1:", "faq")
    assert prefix == "v1:faq:"
    assert key(Cache(key_prefix="v1:"), body(cache={"namespace": "faq"})).startswith(prefix)


@pytest.mark.parametrize("path", ["tests.middleware.key_builders:", ":model_only", "model_only"])
def test_a_dotted_path_needs_both_a_module_and_an_attribute(path: str) -> None:
    with pytest.raises(ValueError, match="expected 'package.module:function'"):
        load_callable(path)


def test_a_dotted_path_may_name_an_attribute_of_an_attribute() -> None:
    assert load_callable("json:JSONDecoder.decode") is json.JSONDecoder.decode


def test_a_dotted_path_must_name_something_callable() -> None:
    with pytest.raises(ValueError, match="is not callable"):
        load_callable("json:__version__")


def ask_claude(client: anthropic.Anthropic, headers: dict[str, str] | list[tuple[str, str]]) -> tuple[str, str]:
    """(x-cache, the answer's text) of one question with these extra headers."""
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "Plan a trip to Lyon"}],
        extra_headers=headers,  # type: ignore[arg-type]
    )
    return raw.headers["x-cache"], raw.parse().content[0].text  # type: ignore[union-attr]


def test_the_settings_anthropic_takes_in_headers_are_in_the_key(fake_provider: RunningFakeProvider) -> None:
    """`anthropic-beta` turns on features that change the answer (interleaved thinking, a longer
    context, ...) and `anthropic-version` names the API version it is given in: each value is its own
    entry, for the exact and the semantic path (the context is keyed alike)."""
    http_client = httpx2.Client(transport=CachingTransport(cache=Cache()))
    client = anthropic.Anthropic(
        api_key="sk-ant-alice", base_url=fake_provider.anthropic_base_url, http_client=http_client, max_retries=0
    )
    plain = ask_claude(client, {})
    thinking = ask_claude(client, {"anthropic-beta": "interleaved-thinking-2025-05-14"})
    both = ask_claude(client, {"anthropic-beta": "interleaved-thinking-2025-05-14,context-1m-2025-08-07"})
    older = ask_claude(client, {"anthropic-version": "2023-01-01"})
    assert [outcome for outcome, _ in (plain, thinking, both, older)] == ["MISS"] * 4
    assert "interleaved-thinking" in thinking[1] and "context-1m" in both[1] and "2023-01-01" in older[1]
    assert ask_claude(client, {}) == ("HIT", plain[1])
    assert ask_claude(client, {"anthropic-beta": "interleaved-thinking-2025-05-14"}) == ("HIT", thinking[1])
    assert fake_provider.count("/v1/messages") == 4


def test_a_header_setting_sent_twice_bypasses_the_cache(fake_provider: RunningFakeProvider) -> None:
    """The key reads one value per header name; a setting sent twice (the provider reads both) is
    never keyed as one of them: the request goes upstream uncached."""
    http_client = httpx2.Client(transport=CachingTransport(cache=Cache()))
    client = anthropic.Anthropic(
        api_key="sk-ant-alice", base_url=fake_provider.anthropic_base_url, http_client=http_client, max_retries=0
    )
    one = ask_claude(client, {"anthropic-beta": "context-1m-2025-08-07"})
    twice = [("anthropic-beta", "interleaved-thinking-2025-05-14"), ("anthropic-beta", "context-1m-2025-08-07")]
    for _ in range(2):
        raw = http_client.post(
            f"{fake_provider.anthropic_base_url}/v1/messages",
            headers=[("x-api-key", "sk-ant-alice"), ("anthropic-version", "2023-06-01"), *twice],
            json={
                "model": "claude-sonnet-4-5",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "Plan a trip to Lyon"}],
            },  # fmt: skip
        )
        assert raw.status_code == 200 and raw.headers["x-cache"] == "BYPASS"
    assert ask_claude(client, {"anthropic-beta": "context-1m-2025-08-07"}) == ("HIT", one[1])


def test_a_query_parameter_named_as_a_header_setting_bypasses_the_cache(fake_provider: RunningFakeProvider) -> None:
    """Header settings are keyed beside the query: a parameter spelled like one (which the provider
    ignores) would take the key of a request that sends the header, and be served its answer."""
    http_client = httpx2.Client(transport=CachingTransport(cache=Cache()))
    client = anthropic.Anthropic(
        api_key="sk-ant-alice", base_url=fake_provider.anthropic_base_url, http_client=http_client, max_retries=0
    )
    with_beta = ask_claude(client, {"anthropic-beta": "context-1m-2025-08-07"})
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "Plan a trip to Lyon"}],
        extra_query={"anthropic-beta": "context-1m-2025-08-07"},
    )
    assert (with_beta[0], raw.headers["x-cache"]) == ("MISS", "BYPASS")
    assert "anthropic-beta" not in raw.parse().content[0].text  # type: ignore[union-attr]


def test_the_order_of_a_schemas_properties_is_in_the_key(fake_provider: RunningFakeProvider) -> None:
    """A structured output comes in the order of its schema's properties (OpenAI documents it; a
    model told to give its `reasoning` before its `answer` also answers differently). Reordered keys
    in the conversation still share an entry."""
    http_client = httpx2.Client(transport=CachingTransport(cache=Cache()))
    client = openai.OpenAI(
        api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )

    def ask(properties: dict[str, object], content_first: bool = False) -> tuple[str, str]:
        schema = {"type": "object", "properties": properties, "required": sorted(properties)}
        said = {"role": "user", "content": "Is 17 prime?"}
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[dict(reversed(said.items())) if content_first else said],  # type: ignore[list-item]
            response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}},
        )
        return raw.headers["x-cache"], raw.parse().choices[0].message.content or ""

    text = {"type": "string"}
    reasoning_first = ask({"reasoning": text, "answer": text})
    answer_first = ask({"answer": text, "reasoning": text})
    assert (reasoning_first[0], answer_first[0]) == ("MISS", "MISS")
    assert list(json.loads(reasoning_first[1])) == ["reasoning", "answer"]
    assert list(json.loads(answer_first[1])) == ["answer", "reasoning"]
    assert ask({"reasoning": text, "answer": text}, content_first=True) == ("HIT", reasoning_first[1])
    assert ask({"answer": text, "reasoning": text}) == ("HIT", answer_first[1])
    assert fake_provider.count("/chat/completions") == 2


def tool(name: str, parameters: dict[str, object]) -> dict[str, object]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


Place = Callable[[dict[str, object]], dict[str, object]]
"""Puts a schema's `properties` somewhere in a request body."""
SCHEMA_PLACES: dict[str, Place] = {
    "tool parameters": lambda properties: {"tools": [tool("f", {"properties": properties})]},
    "nested properties": lambda properties: {"tools": [tool("f", {"properties": {"to": {"properties": properties}}})]},
    "anthropic input_schema": lambda properties: {"tools": [{"name": "f", "input_schema": {"properties": properties}}]},
    "structured output": lambda properties: {
        "response_format": {"type": "json_schema", "json_schema": {"name": "v", "schema": {"properties": properties}}}
    },
}


@pytest.mark.parametrize("place", SCHEMA_PLACES.values(), ids=list(SCHEMA_PLACES))
def test_the_order_of_a_schemas_properties_changes_the_key(
    place: Callable[[dict[str, object]], dict[str, object]],
) -> None:
    cache = Cache()
    assert key(cache, body(**place({"b": {}, "a": {}}))) != key(cache, body(**place({"a": {}, "b": {}})))
    assert key(cache, body(**place({"a": {}, "b": {}}))) == key(cache, body(**place({"a": {}, "b": {}})))


def test_the_order_of_keys_outside_the_conversation_changes_the_key_unless_sorted() -> None:
    """Tools, schemas and settings are keyed in their own key order (a schema's other keywords too:
    the rule is one for every object outside the conversation); an object already in sorted order
    has the key the sorted form gives it, and the conversation's keys are sorted."""
    cache = Cache()
    typed_first = {"tools": [tool("f", {"type": "object", "properties": {"b": {}}})]}
    typed_last = {"tools": [tool("f", {"properties": {"b": {}}, "type": "object"})]}
    assert key(cache, body(**typed_first)) != key(cache, body(**typed_last))
    thinking = {"type": "enabled", "budget_tokens": 1024}
    assert key(cache, body(thinking=thinking)) != key(cache, body(thinking=dict(sorted(thinking.items()))))
    said = [{"role": "user", "content": "Hi", "name": "ann"}]
    said_again = [{"name": "ann", "content": "Hi", "role": "user"}]
    assert key(cache, body(messages=said)) == key(cache, body(messages=said_again))


def ask_gpt(client: openai.OpenAI, headers: dict[str, str]) -> tuple[str, str]:
    """(x-cache, the answer's text) of one chat question with these extra headers."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Plan a trip to Lyon"}], extra_headers=headers
    )
    return raw.headers["x-cache"], raw.parse().choices[0].message.content or ""


def test_the_headers_a_host_routes_by_are_in_the_key(fake_provider: RunningFakeProvider) -> None:
    """OpenAI-compatible hosts and gateways choose the model that answers from headers (Azure Machine
    Learning's `azureml-model-deployment`, Azure AI Foundry's `extra-parameters`, a Portkey gateway's
    `x-portkey-*`): under a shared scope, a request routed to one deployment must never be served
    the answer another deployment gave. Headers that only label a call (Portkey's trace id) are not
    keyed, so traced repeats still hit."""
    http_client = httpx2.Client(transport=CachingTransport(cache=Cache(scope="shared")))
    client = openai.OpenAI(
        api_key="sk-alice", base_url=fake_provider.openai_base_url, http_client=http_client, max_retries=0
    )
    portkey = {"x-portkey-api-key": "pk-team", "x-portkey-provider": "openai"}
    asked = [
        ask_gpt(client, {}),
        ask_gpt(client, {"azureml-model-deployment": "blue"}),
        ask_gpt(client, {"azureml-model-deployment": "green"}),
        ask_gpt(client, {"extra-parameters": "pass-through"}),
        ask_gpt(client, {**portkey, "x-portkey-trace-id": "t-1"}),
        ask_gpt(client, {**portkey, "x-portkey-provider": "azure-openai", "x-portkey-trace-id": "t-2"}),
    ]
    assert [outcome for outcome, _ in asked] == ["MISS"] * 6
    assert len({text for _, text in asked}) == 6  # each deployment answered differently
    assert ask_gpt(client, {"azureml-model-deployment": "green"}) == ("HIT", asked[2][1])
    assert ask_gpt(client, {**portkey, "x-portkey-trace-id": "t-3"}) == ("HIT", asked[4][1])
    assert ask_gpt(client, {}) == ("HIT", asked[0][1])


def test_a_host_setting_header_is_keyed_for_anthropic_too() -> None:
    """The same headers reach Anthropic's Messages API through the same hosts and gateways."""
    cache = Cache()
    headers = {"x-api-key": "sk-ant-alice", "anthropic-version": "2023-06-01"}
    payload = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
    plain = cache.key_for("/v1/messages", payload, headers)
    blue = cache.key_for("/v1/messages", payload, {**headers, "azureml-model-deployment": "blue"})
    traced = cache.key_for("/v1/messages", payload, {**headers, "x-portkey-provider": "anthropic"})
    retraced = cache.key_for(
        "/v1/messages", payload, {**headers, "x-portkey-provider": "anthropic", "x-portkey-trace-id": "t-9"}
    )
    assert len({plain, blue, traced}) == 3 and traced == retraced


def test_portkey_headers_are_keyed_only_on_requests_to_a_portkey_gateway() -> None:
    """A Portkey gateway reads `x-portkey-*`, and every request to one carries its key, provider,
    virtual key or config; any other host ignores those headers, so a client that sets one on every
    call (a custom host, a retry setting) keeps its hits there."""
    cache = Cache()
    headers = {"authorization": "Bearer sk-alice"}
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    keys = {
        cache.key_for("/v1/chat/completions", payload, {**headers, **portkey})
        for portkey in ({}, {"x-portkey-custom-host": "http://a.internal"}, {"x-portkey-retry": '{"attempts": 3}'})
    }
    assert len(keys) == 1


def test_a_key_space_begins_no_other_and_keeps_the_usual_prefixes_keys() -> None:
    """`key_space`: one `:` at the end, so no cache's space begins another's (and nothing joined after
    one makes it another); a `name:` prefix is its own space (keys unchanged), any other is quoted."""
    from llm_cache.middleware._keys import key_space

    prefixes = ["", "v1:", "prod-v2:", "litellm.caching:", "v1", "v10", "v1~", "app:x:", "app:x", "a b:", "v1%3A~:"]
    spaces = [key_space(prefix) for prefix in prefixes]
    assert spaces[:4] == prefixes[:4]
    assert spaces[4:7] == ["v1~:", "v10~:", "v1~~:"] and spaces[7] == "app%3Ax%3A~:"
    named = [space for space in spaces if space]
    assert len(set(named)) == len(named)
    assert all(space.count(":") == 1 and space.endswith(":") for space in named)
    assert not [(a, b) for a in named for b in named if a != b and b.startswith(a)]


def test_a_keys_owner_is_its_key_space_and_scope_and_never_its_namespace() -> None:
    """What a bounded store's fairness groups keys by (`stores/_tenants.py`): one caller's namespaces
    are one owner; another scope or another cache's key space is another."""
    digest = "ab" * 32
    owners = {
        (prefix, namespace, scope): key_owner(compose_key(key_space(prefix), namespace, scope, digest))
        for prefix in ("", "v1:", "prod:v1")
        for namespace in ("default", "team-a")
        for scope in ("calice", "cbob", "anon")
    }
    for (prefix, _, scope), owner in owners.items():
        assert owner == owners[(prefix, "default", scope)]
    assert len(set(owners.values())) == 9
    assert key_owner("v1:gemini-cached-content:" + digest) == "gemini-cached-content"
    assert key_owner("__ping__") == ""
