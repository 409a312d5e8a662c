"""What every adapter shares: when a request streams, which 2xx bodies are errors, what the semantic
cache may embed, and the shape checks adapters build their `invalid` from."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llm_cache._wire import ANTHROPIC, AZURE, BEDROCK, GEMINI, OPENAI, Auth
from llm_cache.middleware.providers import DEFAULT_ENDPOINTS, Endpoint, resolve
from llm_cache.middleware.providers.anthropic import Messages
from llm_cache.middleware.providers.base import (
    NonStreamingEndpoint,
    error_object,
    not_a,
    numbers,
    objects,
    plain_text,
    split_last_turn,
    token_count,
)
from llm_cache.middleware.providers.bedrock import Converse, InvokeModel, InvokeModelStream
from llm_cache.middleware.providers.gemini import EmbedContent, GenerateContent
from llm_cache.middleware.providers.openai import ChatCompletions, Completions, Embeddings, Responses

from .streams import view

CHAT = "/v1/chat/completions"


@pytest.mark.parametrize(
    ("stream", "streams"), [(True, True), (False, False), ("true", False), (1, False), (None, False)]
)
def test_a_body_streams_only_when_stream_is_true(stream: Any, streams: bool) -> None:
    route = resolve(CHAT)
    assert route is not None
    assert ChatCompletions().is_stream(route, "", {"stream": stream}) is streams
    embeddings = resolve("/v1/embeddings")
    assert embeddings is not None and Embeddings().is_stream(embeddings, "", {"stream": True}) is False


def test_the_model_is_the_bodys_or_else_the_paths() -> None:
    azure = resolve("/openai/deployments/prod/chat/completions")
    assert azure is not None and azure.credentials is AZURE
    assert ChatCompletions().model(azure, {"model": "gpt-4o"}) == "gpt-4o"
    assert ChatCompletions().model(azure, {"model": 4}) == "prod"
    route = resolve(CHAT)
    assert route is not None and route.credentials is ChatCompletions.auth
    assert ChatCompletions().model(route, {}) is None


def test_a_non_streaming_endpoint_refuses_to_assemble_or_replay() -> None:
    with pytest.raises(TypeError, match="never streams"):
        Embeddings().assembler(view("/v1/embeddings"))
    with pytest.raises(TypeError, match="never streams"):
        Embeddings().render_stream(b"{}", view("/v1/embeddings"))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"error": {"message": "x"}}, "`error` is set"),
        ({"error": "x", "choices": []}, "`error` is set"),
        ({"type": "error", "error": None}, "`type` is error"),
        ({"__type": "ThrottlingException"}, "`__type` is set"),
        ({"Message": "denied", "output": {}}, "`Message` is set"),
        ({"message": "Too many requests"}, "only a `message`"),
        ({"error": None, "output": []}, None),
        ({"message": {"role": "assistant"}, "id": "x"}, None),
        ({"type": "message"}, None),
    ],
)
def test_a_2xx_body_in_any_familys_error_form_is_an_error(body: dict[str, Any], reason: str | None) -> None:
    assert error_object(body) == reason


def test_an_error_is_reported_before_the_shape() -> None:
    request = view(CHAT)
    assert (
        ChatCompletions().unstorable(orjson.dumps({"error": {"message": "x"}}), request) == "error body: `error` is set"
    )
    assert ChatCompletions().unstorable(b"", request) == "response is not valid JSON"
    assert ChatCompletions().unstorable(b"[]", request) == "response is not a JSON object"


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("Hi", "Hi"),
        ("", ""),
        ([{"type": "text", "text": "a"}, {"text": "b"}, {"type": "input_text", "text": "c"}], "a\nb\nc"),
        ([], None),
        ([{"type": "image_url", "image_url": {"url": "x"}}], None),
        ([{"type": "text", "text": "a"}, {"type": "document", "text": "a file's text"}], None),
        ([{"type": "text", "text": 1}], None),
        (["Hi"], None),
        (None, None),
    ],
)
def test_plain_text_is_a_string_or_text_parts_only(content: Any, text: str | None) -> None:
    assert plain_text(content) == text


@pytest.mark.parametrize(
    ("turns", "split"),
    [
        (
            [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
            ([{"role": "system", "content": "s"}], "q"),
        ),
        ([{"content": "q"}], ([], "q")),
        ([{"role": "assistant", "content": "a"}], None),
        ([{"role": "user", "content": ""}], None),
        (["q"], None),
        ([], None),
        ("q", None),
    ],
)
def test_the_semantic_cache_embeds_a_last_user_turn_of_plain_text(turns: Any, split: Any) -> None:
    body = {"model": "m", "messages": turns}
    expected = None if split is None else ({"model": "m", "messages": split[0]}, split[1])
    assert split_last_turn(body, "messages") == expected


def test_shape_checks_name_where_and_what() -> None:
    assert objects([{}, 1], "`x`") == "`x`[1] is int, not an object"
    assert objects([], "`x`", empty=False) == "`x` is empty"
    assert objects([], "`x`") is None
    assert objects(None, "`x`", optional=True) is None
    assert objects(None, "`x`") == "`x` is null or missing, not a list"
    assert not_a(str, None, "`x`") == "`x` is null or missing"
    assert not_a(str, None, "`x`", optional=True) is None
    assert not_a((str, list), 1.5, "`x`") == "`x` is float"
    assert objects("a", "`x`") == "`x` is str, not a list"
    assert numbers([1, 2.5], "`v`") is None
    assert numbers([1, None], "`v`") == "`v` holds something other than numbers"
    assert numbers(None, "`v`") == "`v` is null or missing, not a list"
    assert [token_count(v) for v in (3, 0, True, 2.0, "3", None)] == [3, 0, None, None, None, None]
    assert [token_count(v) for v in (-1, 2**53, 2**53 + 1, 10**30)] == [None, 2**53, None, None]


@pytest.mark.parametrize(
    ("endpoint", "family", "name", "operation", "auth"),
    [
        (ChatCompletions(), "openai", "chat.completions", "chat", OPENAI),
        (Completions(), "openai", "completions", "text_completion", OPENAI),
        (Responses(), "openai", "responses", "chat", OPENAI),
        (Embeddings(), "openai", "embeddings", "embeddings", OPENAI),
        (Messages(), "anthropic", "messages", "chat", ANTHROPIC),
        (GenerateContent(), "gemini", "generate_content", "chat", GEMINI),
        (EmbedContent(), "gemini", "embed_content", "embeddings", GEMINI),
        (InvokeModel(), "bedrock", "bedrock.invoke", "chat", BEDROCK),
        (InvokeModelStream(), "bedrock", "bedrock.invoke-stream", "chat", BEDROCK),
        (Converse(), "bedrock", "bedrock.converse", "chat", BEDROCK),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_each_endpoint_names_its_family_its_key_name_its_operation_and_where_its_credential_is(
    endpoint: Endpoint, family: str, name: str, operation: str, auth: Auth
) -> None:
    """The name is part of every key; the operation is OpenTelemetry's `gen_ai.operation.name`."""
    assert (endpoint.family, endpoint.name, endpoint.operation, endpoint.auth) == (family, name, operation, auth)
    assert endpoint.signed_body is (family == "bedrock")
    assert endpoint.keyed_headers  # every family takes answer-changing settings in headers (Gemini: a field mask)
    assert endpoint.streams is not isinstance(endpoint, NonStreamingEndpoint)
    assert [type(e) for e in DEFAULT_ENDPOINTS].count(type(endpoint)) == 1


def test_what_an_endpoint_reports_and_asks_for_unless_it_says_otherwise() -> None:
    """The defaults: the answer's own `model` and `id` when they are strings, SSE for streams, the
    caller's body sent as it is, the stream forwarded as it is, the upstream URL as the key names it."""
    endpoint, request = Messages(), view("/v1/messages", {"stream": True})
    assert (endpoint.response_model({"model": "claude"}), endpoint.response_id({"id": "msg_1"})) == ("claude", "msg_1")
    assert (endpoint.response_model({"model": 1}), endpoint.response_id({"id": None})) == (None, None)
    assert endpoint.stream_media_type(request) == "text/event-stream"
    assert endpoint.capture_body({"stream": True}) is None and endpoint.stream_filter(request) is None
    assert (
        endpoint.upstream_identity("https://api.anthropic.com/v1/messages") == "https://api.anthropic.com/v1/messages"
    )
    assert endpoint.asks_for_usage({"stream": True}, True) is True
    assert ChatCompletions().header_key({"openai-beta": "x"}) == ()


def test_what_telemetry_reads_unless_an_endpoint_says_otherwise() -> None:
    """The defaults are OpenAI chat's: the sampling parameters at the top of the body (or in the object
    an endpoint names), `messages`, no system instructions apart from them, and each choice's message
    and finish reason."""
    chat = ChatCompletions()
    body = {"temperature": 0.5, "messages": [{"role": "user", "content": "Hi"}]}
    assert chat.request_attributes(body) == {"gen_ai.request.temperature": 0.5}
    assert chat.input_messages(body) == [{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]
    assert chat.system_instructions(body) == []
    answer = {"choices": [{"message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]}
    assert chat.finish_reasons(answer) == ("stop",)
    assert chat.output_messages(answer) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello"}], "finish_reason": "stop"}
    ]
    gemini = GenerateContent()  # its parameters are in `generationConfig`
    assert gemini.request_attributes({"temperature": 0.5, "generationConfig": {"temperature": 0.2}}) == {
        "gen_ai.request.temperature": 0.2
    }
    assert gemini.request_attributes({"generationConfig": "hot"}) == {}


def test_an_endpoint_reads_no_form_and_splits_no_list_request_unless_it_says_so() -> None:
    """Only a `form_body` endpoint is asked to read a form, and only one whose `items` splits a request
    is asked for the rest; any other call is a mistake, never a silent None."""
    chat, route = ChatCompletions(), resolve(CHAT)
    assert route is not None and chat.items(route, {"messages": []}) is None
    with pytest.raises(NotImplementedError):
        chat.read_form("multipart/form-data; boundary=x", b"")
    with pytest.raises(NotImplementedError):
        chat.batch_body(route, {}, [0])
    with pytest.raises(NotImplementedError):
        chat.item_answers({}, 1)
    with pytest.raises(NotImplementedError):
        chat.batch_answer([], None)
