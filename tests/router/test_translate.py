"""The translators as pure functions: round trips between families, and streams cut anywhere.

OpenAI -> Anthropic -> OpenAI must give back every field both families support (up to the forms
that mean the same: a string or one text part, a merged system prompt, arguments as parsed JSON).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_cache.router import translate
from llm_cache.router._errors import AnswerTooLarge
from llm_cache.router.translate import Unsupported, anthropic_to_openai, openai_to_anthropic, openai_to_gemini
from llm_cache.router.translate.sse import MAX_EVENT_BYTES

MODEL = "m"
#: Every field name the translators read, so random documents reach their branches.
KEYS = [
    *[
        "model",
        "messages",
        "role",
        "content",
        "type",
        "text",
        "image_url",
        "url",
        "detail",
        "tool_calls",
        "id",
        "function",
        "name",
        "arguments",
    ],
    *[
        "tool_call_id",
        "tools",
        "parameters",
        "description",
        "strict",
        "tool_choice",
        "parallel_tool_calls",
        "stop",
        "max_tokens",
    ],
    *[
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "n",
        "seed",
        "response_format",
        "json_schema",
        "schema",
    ],
    *[
        "reasoning_effort",
        "user",
        "stream_options",
        "include_usage",
        "system",
        "input_schema",
        "source",
        "media_type",
        "data",
    ],
    *[
        "tool_use_id",
        "tool_result",
        "is_error",
        "input",
        "thinking",
        "budget_tokens",
        "output_config",
        "format",
        "effort",
        "metadata",
    ],
    *[
        "user_id",
        "stop_sequences",
        "file",
        "file_data",
        "cache_control",
        "choices",
        "message",
        "delta",
        "index",
        "finish_reason",
        "usage",
    ],
    *[
        "candidates",
        "parts",
        "functionCall",
        "args",
        "finishReason",
        "usageMetadata",
        "error",
        "event",
        "message_start",
    ],
    *["content_block", "content_block_start", "content_block_delta", "partial_json", "stop_reason"],
]
text = st.text(max_size=20)
words = st.text(alphabet="abcdefghij_", min_size=1, max_size=10)
image = st.one_of(
    st.builds(lambda d: f"data:image/png;base64,{d}", st.text(alphabet="ABCDEFabcdef0123456789+/", min_size=4)),
    st.builds(lambda n: f"https://example.com/{n}.jpg", words),
).map(lambda url: {"type": "image_url", "image_url": {"url": url}})
part = st.one_of(st.builds(lambda t: {"type": "text", "text": t}, text), image)
content = st.one_of(text, st.lists(part, min_size=1, max_size=3))
arguments = st.dictionaries(words, st.one_of(st.integers(-5, 5), text), max_size=3)
OBJECT = {"type": "object", "properties": {"a": {"type": "integer"}}}
schema = st.just({"type": "object", "properties": {"x": {"type": "string"}}})


@st.composite
def conversations(draw: Any) -> list[dict[str, Any]]:
    """system prompts, then user/assistant turns; an assistant turn may call tools, answered next."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": t} for t in draw(st.lists(text, max_size=2))]
    for turn in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(content)})
        if turn == 0 or draw(st.booleans()):
            calls = [
                {
                    "id": f"call_{turn}_{k}",
                    "type": "function",
                    "function": {"name": draw(words), "arguments": json.dumps(draw(arguments))},
                }
                for k in range(draw(st.integers(0, 2)))
            ]
            said = draw(st.one_of(st.none(), text.filter(bool))) if calls else draw(text.filter(bool))
            messages.append({"role": "assistant", "content": said, **({"tool_calls": calls} if calls else {})})
            messages += [{"role": "tool", "tool_call_id": c["id"], "content": draw(text)} for c in calls]
    return messages


@st.composite
def chat_requests(draw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"model": MODEL, "messages": draw(conversations())}
    doc["max_completion_tokens"] = draw(st.integers(5000, 100_000))
    optional = {
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "stop": st.lists(words, min_size=1, max_size=4),
        "user": words,
        "reasoning_effort": st.sampled_from(["low", "medium", "high"]),
        "response_format": schema.map(lambda s: {"type": "json_schema", "json_schema": {"name": "r", "schema": s}}),
        "tools": st.lists(
            st.builds(
                lambda n, d: {"type": "function", "function": {"name": n, "description": d, "parameters": OBJECT}},
                words,
                text,
            ),
            min_size=1,
            max_size=3,
        ),
        "tool_choice": st.one_of(
            st.sampled_from(["auto", "required", "none"]),
            words.map(lambda n: {"type": "function", "function": {"name": n}}),
        ),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            doc[key] = draw(strategy)
    if doc.get("tool_choice") not in (None, "none") and draw(st.booleans()):
        doc["parallel_tool_calls"] = False
    return doc


def parts(value: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


def normal(doc: dict[str, Any]) -> dict[str, Any]:
    """One form for requests that mean the same."""
    out = {k: v for k, v in doc.items() if k != "messages"}
    system: list[dict[str, Any]] = []
    messages = []
    for m in doc["messages"]:
        if m["role"] == "system":
            system += parts(m["content"])
            continue
        m = dict(m)
        if m["role"] == "user":
            m["content"] = parts(m["content"])
            if messages and messages[-1]["role"] == "user":  # Anthropic alternates roles: turns merge
                messages[-1]["content"] = messages[-1]["content"] + m["content"]
                continue
        for call in m.get("tool_calls", []):
            call["function"] = {**call["function"], "arguments": json.loads(call["function"]["arguments"])}
        messages.append(m)
    if system:
        messages.insert(0, {"role": "system", "content": system})
    out["messages"] = messages
    if "response_format" in out:  # Anthropic's schema has no name
        out["response_format"] = out["response_format"]["json_schema"]["schema"]
    return out


@settings(max_examples=150, deadline=None)
@given(chat_requests())
def test_openai_to_anthropic_and_back_keeps_every_field_both_support(doc):
    anthropic = openai_to_anthropic.request(json.loads(json.dumps(doc)), MODEL, False, False)
    back = anthropic_to_openai.request(anthropic.body, MODEL, False, False)
    assert back.dropped == [] and anthropic.dropped == []
    assert normal(back.body) == normal(doc)


@settings(max_examples=100, deadline=None)
@given(chat_requests(), st.lists(st.integers(1, 400), max_size=30))
def test_a_translated_stream_does_not_depend_on_where_the_bytes_were_cut(doc, cuts):
    """Providers split events across reads anywhere (mid-line, mid-UTF-8): the output is the same."""
    anthropic = openai_to_anthropic.request(doc, MODEL, True, False).body
    openai_stream = _openai_events(anthropic)
    whole = anthropic_to_openai.Stream(anthropic)
    expected = whole.feed(openai_stream) + whole.end()
    cut = anthropic_to_openai.Stream(anthropic)
    pieces, at = [], 0
    for size in cuts:
        pieces.append(openai_stream[at : at + size])
        at += size
    pieces.append(openai_stream[at:])
    assert b"".join(cut.feed(p) for p in pieces) + cut.end() == expected
    assert expected.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


def _openai_events(seed: dict[str, Any]) -> bytes:
    """A small OpenAI stream (text, a tool call, usage) whose text depends on the request."""
    said = json.dumps(seed)[:60] + " é ✓"

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        doc = {"id": "c1", "model": MODEL, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(doc, ensure_ascii=False)}\r\n\r\n".encode()

    call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    return (
        event({"role": "assistant", "content": ""})
        + b"".join(event({"content": said[i : i + 7]}) for i in range(0, len(said), 7))
        + event({"tool_calls": [call]})
        + event({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]})
        + event({}, "tool_calls")
        + f"data: {json.dumps({'id': 'c1', 'choices': [], 'usage': usage})}\n\n".encode()
        + b"data: [DONE]\n\n"
    )


def test_an_event_that_never_ends_ends_the_stream_once_past_the_bound():
    """A translated stream holds one event at a time, at most `MAX_EVENT_BYTES` of it (never scanning it
    again for each new piece): an upstream's event that never ends is an error, not a growing buffer."""
    stream = anthropic_to_openai.Stream({})
    stream.feed(b'data: {"id": "c1", "choices": [{"index": 0, "delta": {"content": "')
    piece = b"a" * 65536
    fed = 0
    with pytest.raises(AnswerTooLarge, match="longer than"):
        while fed <= MAX_EVENT_BYTES:
            assert stream.feed(piece) == b""
            fed += len(piece)
    assert MAX_EVENT_BYTES - len(piece) <= fed < MAX_EVENT_BYTES  # the piece that passed the bound raised


def test_a_stream_cut_before_its_end_never_gets_an_end_marker():
    """No [DONE] / message_stop is made up: caches must see a cut stream as incomplete."""
    cut = _openai_events({})[:-40]
    stream = anthropic_to_openai.Stream({})
    assert b"message_stop" not in stream.feed(cut) + stream.end()
    gemini = openai_to_gemini.Stream({})
    no_finish = b'data: {"candidates": [{"content": {"parts": [{"text": "hi"}]}}]}\n\n'
    assert b"[DONE]" not in gemini.feed(no_finish) + gemini.end()
    claude = openai_to_anthropic.Stream({})
    started = b'event: message_start\ndata: {"type": "message_start", "message": {"id": "m"}}\n\n'
    assert b"[DONE]" not in claude.feed(started) + claude.end()


def test_refusals_name_every_field_and_drop_params_reports_them():
    doc = {"model": MODEL, "messages": [{"role": "user", "content": "hi", "name": "bob"}], "seed": 1, "n": 2}
    with pytest.raises(Unsupported) as refused:
        openai_to_anthropic.request(doc, MODEL, False, False)
    assert refused.value.params == ["seed", "n", "messages[0].name"]
    dropped = openai_to_anthropic.request(doc, MODEL, False, True)
    assert dropped.dropped == ["seed", "n", "messages[0].name"]
    assert dropped.body["messages"] == [{"role": "user", "content": "hi"}]


# ----------------------------------------------------------------------------- total on any input

#: Values the translators branch on (roles, part and event types, reasons), mixed in with random ones.
WORDS = [
    *[
        "user",
        "assistant",
        "tool",
        "system",
        "developer",
        "text",
        "image_url",
        "file",
        "function",
        "tool_use",
        "tool_result",
        "image",
    ],
    *[
        "document",
        "base64",
        "url",
        "thinking",
        "auto",
        "required",
        "none",
        "any",
        "enabled",
        "disabled",
        "json_schema",
        "json_object",
    ],
    *[
        "message_start",
        "content_block_start",
        "content_block_delta",
        "text_delta",
        "input_json_delta",
        "thinking_delta",
    ],
    *[
        "message_delta",
        "message_stop",
        "error",
        "STOP",
        "MAX_TOKENS",
        "SAFETY",
        "end_turn",
        "tool_calls",
        "low",
        "high",
        "[DONE]",
    ],
    "data:image/png;base64,AAAA",
    "data:application/pdf;base64,AAAA",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 10_000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
    | st.sampled_from(WORDS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8), st.booleans(), st.booleans())
def test_request_translators_refuse_or_translate_any_document(doc, stream, drop):
    """Whatever the caller sends, a translator answers with a request or a refusal, never a crash."""
    for translation in translate.TRANSLATIONS.values():
        try:
            out = translation.request(doc, MODEL, stream, drop)
        except Unsupported as refused:
            assert refused.params and not drop
        else:
            assert isinstance(out.body, dict) and json.loads(translate.dumps(out.body)) is not None


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8), st.lists(json_values, max_size=4))
def test_answer_and_stream_translators_take_any_provider_output(doc, events):
    """A provider's odd answer passes through translated or unchanged; it never breaks the caller's read."""
    body = json.dumps(doc).encode()
    raw = b"".join(b"event: x\ndata: " + json.dumps(e).encode() + b"\n\n" for e in [doc, *events])
    for translation in translate.TRANSLATIONS.values():
        assert isinstance(translation.response(body, {}), bytes)
        assert isinstance(translation.error(400, body), bytes)
        stream = translation.stream(doc)
        assert isinstance(stream.feed(raw) + stream.end(), bytes)
