"""Hostile requests for `test_hostile_input.py`: hypothesis strategies and a stand-in upstream.

The strategies build request bodies as JSON *text*, so they can say what a Python value cannot:
duplicate keys, numbers past 64 bits or past double range, `NaN`/`Infinity`, lone surrogate
escapes, raw bytes that are not UTF-8, nesting hundreds or thousands of levels deep. Headers are
bytes a server hands over (latin-1, tabs, control characters), queries are raw bytes.

The upstream stands in for the provider only: every call gets a well-formed success of the family
its path names, marked with `x-upstream: echo`, so a test can tell an answer that went upstream
from one the cache gave itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import Response

UPSTREAM_MARK = ("x-upstream", "echo")
LATIN1_HEADER = ("x-upstream-note", "caf\xe9")
"""Upstreams send latin-1 header values too; they reach the caller as they came."""

# -- paths ---------------------------------------------------------------------------------------

PATHS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/messages",
    "/v1beta/models/x:generateContent",
    "/openai/deployments/d/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/model/x/invoke",
)
"""One path of every provider family (the gateway serves all but Bedrock, which it answers 404)."""

STREAM_TWIN = {
    "/v1beta/models/x:generateContent": ("/v1beta/models/x:streamGenerateContent", b"alt=sse"),
    "/model/x/invoke": ("/model/x/invoke-with-response-stream", b""),
}
"""Where the stream form of a family is chosen by the path (and query) instead of the body."""

DEPTHS = (200, 253, 254, 255, 256, 512, 1000, 1022, 1023, 1024, 1025, 2000)
"""Nesting depths around the JSON parser's (1024) and encoder's (254) limits, from 200 to 2,000."""

PLACES = ("messages", "metadata", "cache", "stream_options", "model", "<top>")
"""Where a deep value goes: a field the adapters read, a volatile one, the cache control, the body."""


def deep(depth: int, kind: str) -> bytes:
    """A JSON value `depth` levels deep: nested arrays or nested objects."""
    if kind == "array":
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def placed(value: bytes, place: str) -> bytes:
    """A chat-like body carrying `value` at `place` (`<top>`: the body is `value` itself)."""
    if place == "<top>":
        return value
    return b'{"model":"m","messages":[{"role":"user","content":"hi"}],"' + place.encode() + b'":' + value + b"}"


# -- JSON text -----------------------------------------------------------------------------------

KEYS = (
    "model",
    "messages",
    "role",
    "content",
    "stream",
    "stream_options",
    "include_usage",
    "cache",
    "no-cache",
    "no-store",
    "ttl",
    "s-maxage",
    "namespace",
    "use-cache",
    "input",
    "prompt",
    "contents",
    "parts",
    "text",
    "type",
    "metadata",
    "user",
    "store",
    "previous_response_id",
    "conversation",
    "tools",
    "name",
    "system",
    "max_tokens",
    "anthropic_version",
    "cachedContent",
    "generationConfig",
    "choices",
    "",
    "\u0000",
    "é",
)
"""Field names the adapters, the policy and the key read, and a few odd ones."""

NUMBER_TEXTS = (
    "0",
    "-0",
    "-0.0e-0",
    "1E+2",
    "123456789012345678901234567890",
    "18446744073709551616",
    "-9223372036854775809",
    "9" * 400,
    "0.1000000000000000000000000001",
    "1e308",
    "1e309",
    "1e400",
    "-1e400",
    "1e-400",
    "NaN",
    "Infinity",
    "-Infinity",
)
"""Numbers past 64 bits, past double range or precision, and the non-standard NaN/Infinity."""

STRING_TEXTS = (
    b'"\\ud800"',
    b'"\\udc00\\ud800"',
    b'"a\\ud83d"',
    b'"\\u0000"',
    b'"\xff\xfe"',
    b'"\xed\xa0\x80"',
    b'"\xc0\xaf"',
    b'"\x01\x1f"',
    b'"\\/\\b\\f\\n\\r\\t\\""',
)
"""Lone surrogates (escaped and UTF-8-encoded), raw non-UTF-8 bytes, raw and escaped control characters."""


def _number(value: int | float) -> bytes:
    if value != value:
        return b"NaN"
    if value in (float("inf"), float("-inf")):
        return b"Infinity" if value > 0 else b"-Infinity"
    return repr(value).encode()


scalars = st.one_of(
    st.sampled_from((b"true", b"false", b"null")),
    st.sampled_from(NUMBER_TEXTS).map(str.encode),
    st.integers().map(_number),
    st.floats().map(_number),
    st.sampled_from(STRING_TEXTS),
    st.text(max_size=20).map(orjson.dumps),
)


def _array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def _object(pairs: list[tuple[str, bytes]]) -> bytes:
    """An object from pairs: repeated keys stay repeated (duplicate keys)."""
    return b"{" + b",".join(orjson.dumps(key) + b":" + value for key, value in pairs) + b"}"


def _values(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.lists(children, max_size=5).map(_array),
        st.lists(st.tuples(st.sampled_from(KEYS), children), max_size=5).map(_object),
    )


values = st.recursive(scalars, _values, max_leaves=20)
deep_values = st.builds(deep, st.integers(200, 2000), st.sampled_from(("array", "object")))
huge_arrays = st.integers(10_000, 100_000).map(lambda n: b"[" + b",".join([b"0"] * n) + b"]")

MEANINGFUL = {
    "cache": (
        b'{"no-store":true}',
        b'{"ttl":5}',
        b'{"namespace":"ns.1"}',
        b'{"namespace":"ns\\n"}',
        b'{"namespace":"ns.1\\n"}',
        b'{"use-cache":false}',
        b'{"use-cache":true,"no-cache":true}',
        b'{"s-maxage":0}',
        b'{"ttl":123456789012345678901234567890}',
        b'{"ttl":1e308,"s-maxage":-0}',
        b"null",
        b"{}",
    ),
    "stream": (b"true", b"true", b"false", b'"true"', b"1", b"null"),
    "stream_options": (b'{"include_usage":true}', b'{"include_usage":"yes"}', b"{}", b"[]", b"null", b'{"a":1}'),
    "model": (b'"gpt-4o"', b'""', b'"\\u0000"', b'"m\\u00e9"', b"1", b"null", b'["m"]', b'{"id":"m"}'),
    "messages": (
        b"[]",
        b'[{"role":"user","content":[{"type":"text","text":"hi"}]}]',
        b'[{"role":"user","content":[{"type":"text","text":1}]}]',
        b'[{"role":"user","content":null}]',
        b'[{"role":"user","content":"hi","name":1}]',
        b'[{"role":1,"content":"hi"}]',
        b"[1]",
        b'{"role":"user"}',
        b'"hi"',
    ),
    "input": (
        b"[]",
        b'[{"role":"user","content":"x"}]',
        b'[{"content":[{"type":"input_text","text":"x"}]}]',
        b'""',
        b"1",
    ),
    "contents": (b'[{"parts":[{"text":"x"}]}]', b'[{"role":"user","parts":"x"}]', b"[null]", b"{}"),
    "prompt": (b'["a"]', b'""', b'"p"', b"[1,2]"),
    "previous_response_id": (b'"resp_1"', b"null"),
    "anthropic_version": (b'"bedrock-2023-05-31"', b"2"),
}
"""Values the adapters, the policy and the key read, in their right and wrong types."""

fields = st.one_of(
    st.sampled_from(sorted(MEANINGFUL)).flatmap(lambda key: st.tuples(st.just(key), st.sampled_from(MEANINGFUL[key]))),
    st.tuples(st.sampled_from(KEYS), values),
)

BASES = {
    "/v1/chat/completions": [("model", b'"gpt-4o-mini"'), ("messages", b'[{"role":"user","content":"hi"}]')],
    "/v1/completions": [("model", b'"m"'), ("prompt", b'"hi"')],
    "/v1/messages": [("model", b'"claude"'), ("max_tokens", b"16"), ("messages", b'[{"role":"user","content":"hi"}]')],
    "/v1beta/models/x:generateContent": [("contents", b'[{"role":"user","parts":[{"text":"hi"}]}]')],
    "/openai/deployments/d/chat/completions": [("messages", b'[{"role":"user","content":"hi"}]')],
    "/v1/responses": [("model", b'"gpt-4o-mini"'), ("input", b'"hi"')],
    "/v1/embeddings": [("model", b'"e"'), ("input", b'"hi"')],
    "/model/x/invoke": [("anthropic_version", b'"v"'), ("messages", b'[{"role":"user","content":"hi"}]')],
}
"""A valid body of each family: most generated bodies are this plus hostile fields, so they get keyed."""


@st.composite
def bodies(draw: st.DrawFn, path: str) -> bytes:
    """A request body for `path`: mostly its family's valid body with odd fields added or repeated;
    sometimes any JSON value, a deep or huge one, or bytes that are not JSON at all."""
    kind = draw(st.sampled_from(("extended", "extended", "extended", "value", "deep", "huge", "bytes")))
    if kind == "value":
        return draw(values)
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "huge":
        return _object([*BASES[path], (draw(st.sampled_from(KEYS)), draw(huge_arrays))])
    some = st.tuples(st.sampled_from(KEYS), deep_values) if kind == "deep" else fields
    extra = draw(st.lists(some, min_size=1, max_size=4))
    pairs = BASES[path] + extra
    if draw(st.booleans()):
        pairs = extra + BASES[path]  # the generated fields first: the base's keys win duplicates
    return _object(pairs)


def stream_twin(path: str, query: bytes, body: bytes) -> tuple[str, bytes, bytes]:
    """The same request asking for the stream form (it shares the key, so a stored answer is replayed
    as a stream): by path for Gemini and Bedrock, by a leading `"stream":true` for the others."""
    if path in STREAM_TWIN:
        twin_path, twin_query = STREAM_TWIN[path]
        return twin_path, twin_query + (b"&" + query if query and twin_query else query), body
    if body.startswith(b"{") and body[1:2] not in (b"}", b""):
        return path, query, b'{"stream":true,' + body[1:]
    return path, query, body


# -- headers and queries ---------------------------------------------------------------------------

HEADER_NAMES = (
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-amz-security-token",
    "cache-control",
    "x-cache-ttl",
    "x-cache-namespace",
    "x-amzn-bedrock-trace",
    "accept",
    "accept-encoding",
    "content-type",
    "connection",
    "host",
    "x-custom",
)
"""The headers the cache reads (credentials, controls, keyed settings) and a few it should not care about."""

HEADER_VALUES = (
    b"Bearer sk-a",
    b"bearer ",
    b"Bearer \xe9\xff",
    b"AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request, Signature=x",
    b"AWS4-HMAC-SHA256 Credential=",
    b"no-cache, no-store",
    b"max-age=1e400",
    b"max-age=-1",
    b"max-age=NaN",
    b"max-age=" + b"9" * 400,
    b'max-age="3", only-if-cached',
    b"only-if-cached",
    b"1e400",
    b"-0",
    b"ns.1",
    b"\xe9t\xe9",
    b"gzip, deflate, br",
    b"close, x-api-key",
    b"text/event-stream",
    b"[",
    b"[::1",
    b"a:b:c",
    b"h:99999",
)

_FIELD_BYTES = [9, *range(0x20, 0x7F), *range(0x80, 0x100)]
"""Bytes HTTP/1.1 allows in a field value: HTAB, visible ASCII and space, obs-text (latin-1)."""
_CONTROL_BYTES = [b for b in range(0x20) if b not in (0, 10, 13)] + [0x7F]
"""Control characters some servers pass on in field values (never CR, LF or NUL)."""

field_values = st.binary(max_size=40).map(lambda raw: bytes(_FIELD_BYTES[b % len(_FIELD_BYTES)] for b in raw))
control_values = st.binary(max_size=20).map(
    lambda raw: bytes((_FIELD_BYTES + _CONTROL_BYTES)[b % (len(_FIELD_BYTES) + len(_CONTROL_BYTES))] for b in raw)
)
header_values = st.one_of(st.sampled_from(HEADER_VALUES), field_values, control_values)
headers = st.lists(
    st.tuples(st.sampled_from(HEADER_NAMES).map(str.encode), header_values), max_size=6
)  # repeated names stay repeated

_QUERY_PIECES = (
    b"key=",
    b"key=k1",
    b"key=k1&key=k2",
    b"alt=sse",
    b"$alt=sse",
    b"alt=json",
    b"%00=%ff",
    b"a=%ED%A0%80",
    b"%zz",
    b"&&=&",
    b"api-version=2024-10-21",
    b";",
    b"x=\xe9",
)
queries = st.lists(
    st.one_of(st.sampled_from(_QUERY_PIECES), st.binary(max_size=12).map(lambda raw: raw.replace(b"#", b""))),
    max_size=4,
).map(b"&".join)
"""Raw query bytes as a server passes them on (never `#`, which ends a URL's query)."""

printable_queries = queries.map(lambda raw: bytes(b for b in raw if 0x21 <= b < 0x7F and b != ord("#")))
"""The same, restricted to what an HTTP client puts in a URL as it is."""


# -- the stand-in upstream -------------------------------------------------------------------------

_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "m",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 1},
}
_ANSWERS: tuple[tuple[str, dict[str, object]], ...] = (
    (
        "/chat/completions",
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
    ),
    (
        "/completions",
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "text": "ok", "logprobs": None, "finish_reason": "stop"}],
        },
    ),
    (
        "/responses",
        {
            "id": "resp_1",
            "object": "response",
            "status": "completed",
            "model": "m",
            "output": [
                {
                    "type": "message",
                    "id": "m1",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "ok", "annotations": []}],
                }
            ],
            "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
        },
    ),
    (
        "/embeddings",
        {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}], "model": "e"},
    ),
    ("/messages", _MESSAGE),
    ("/invoke", _MESSAGE),
    (
        "Content",
        {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
        },
    ),
)


@dataclass
class Upstream:
    """Answers every call with a success of its path's family; remembers the bodies it received."""

    received: list[bytes] = field(default_factory=list)

    def answer(self, path: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        self.received.append(body)
        payload = next((answer for suffix, answer in _ANSWERS if path.endswith(suffix)), {"ok": True})
        response_headers = [("content-type", "application/json"), UPSTREAM_MARK, LATIN1_HEADER]
        return 200, response_headers, orjson.dumps(payload)

    def httpx_handler(self, request: object) -> object:
        """A `MockTransport` handler for httpx2 and httpx alike (the response type follows the request's)."""
        import sys

        library = sys.modules[type(request).__module__.partition(".")[0]]
        status, response_headers, content = self.answer(request.url.path, request.read())  # type: ignore[attr-defined]
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response_headers]
        return library.Response(status, headers=raw, content=content)

    async def asgi(self, request: Request) -> Response:
        status, response_headers, content = self.answer(request.scope["path"], await request.body())
        return Response(content, status, headers=dict(response_headers))
