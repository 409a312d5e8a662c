"""Where each gateway family names and mints provider-held ids (`middleware/providers/held.py`); the
gateway's use of them is specified in `tests/middleware/test_gateway_ownership.py`."""

from __future__ import annotations

from typing import Any

import pytest

from llm_cache.middleware.providers import held


@pytest.mark.parametrize(
    ("family", "path", "body", "ids"),
    [
        ("openai", "/v1/responses", {"previous_response_id": "resp_1"}, [("response", "resp_1")]),
        ("openai", "/v1/responses", {"conversation": {"id": "conv_1"}}, [("conversation", "conv_1")]),
        ("openai", "/v1/responses", {"input": [{"type": "item_reference", "id": "msg_1"}]}, [("item", "msg_1")]),
        (
            "openai",
            "/v1/responses",
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
            [("file", "file-1")],
        ),
        (
            "azure",
            "/openai/deployments/d/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-2"}}]}]},
            [("file", "file-2")],
        ),
        ("openai", "/v1/responses/resp_9/input_items", None, [("response", "resp_9")]),
        ("openai", "/v1/files/file-9/content", None, [("file", "file-9")]),
        ("openai", "/v1/responses/input_tokens", {}, []),
        (
            "anthropic",
            "/v1/messages",
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}
                ]
            },
            [("file", "file_1")],
        ),
        ("anthropic", "/v1/files/file_7", None, [("file", "file_7")]),
        (
            "anthropic",
            "/v1/messages",
            {"container": {"id": "container_1", "skills": []}},
            [("container", "container_1")],
        ),
        (
            "openai",
            "/v1/responses",
            {"tools": [{"type": "code_interpreter", "container": "cntr_1"}]},
            [("container", "cntr_1")],
        ),
        (
            "openai",
            "/v1/responses",
            {"tools": [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-3"]}}]},
            [("file", "file-3")],
        ),
        (
            "gemini",
            "/v1beta/models/m:generateContent",
            {
                "cachedContent": "cachedContents/c1",
                "contents": [
                    {
                        "parts": [
                            {"file_data": {"file_uri": "https://generativelanguage.googleapis.com/v1beta/files/f1"}}
                        ]
                    }
                ],
            },
            [("cached_content", "cachedContents/c1"), ("file", "files/f1")],
        ),
        ("gemini", "/v1beta/files/f2", None, [("file", "files/f2")]),
        (
            "openai",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "audio": {"id": "audio_1"}}]},
            [("audio", "audio_1")],
        ),
        ("openai", "/v1/chat/completions/chatcmpl-1/messages", None, [("chat_completion", "chatcmpl-1")]),
        ("azure", "/openai/v1/chat/completions/chatcmpl-2", {}, [("chat_completion", "chatcmpl-2")]),
        ("openai", "/v1/vector_stores/vs_1/files/file-1", None, [("vector_store", "vs_1"), ("file", "file-1")]),
        (
            "openai",
            "/v1/vector_stores/vs_1/files",
            {"file_id": "file-2"},
            [("vector_store", "vs_1"), ("file", "file-2")],
        ),
        ("openai", "/v1/vector_stores", {"file_ids": ["file-3"]}, [("file", "file-3")]),
        ("openai", "/v1/containers/cntr_1/files", None, [("container", "cntr_1")]),
        (
            "openai",
            "/v1/responses",
            {"tools": [{"type": "file_search", "vector_store_ids": ["vs_2"]}]},
            [("vector_store", "vs_2")],
        ),
        (
            "openai",
            "/v1/assistants",
            {
                "tool_resources": {
                    "file_search": {"vector_store_ids": ["vs_3"], "vector_stores": [{"file_ids": ["file-4"]}]},
                    "code_interpreter": {"file_ids": ["file-5"]},
                }
            },
            [("vector_store", "vs_3"), ("file", "file-4"), ("file", "file-5")],
        ),
        (
            "openai",
            "/v1/responses",
            {"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]},
            [("item", "rs_1")],
        ),
        (  # a Files URI with a query or a trailing slash is still that file's (never let through on a guess)
            "gemini",
            "/v1beta/models/m:generateContent",
            {
                "contents": [
                    {
                        "parts": [
                            {
                                "fileData": {
                                    "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/f3?alt=media"
                                }
                            }
                        ]
                    },
                    {"parts": [{"fileData": {"fileUri": "files/f4/"}}]},
                ]
            },
            [("file", "files/f3"), ("file", "files/f4")],
        ),
    ],
)
def test_the_ids_a_request_names_are_read_where_its_family_names_them(
    family: str, path: str, body: Any, ids: list[held.Held]
) -> None:
    assert sorted(held.named(family, path, body)) == sorted(ids)


def test_what_names_no_held_state_is_not_read_as_an_id() -> None:
    """An output item sent back as input cites files in `annotations` (not read by the provider); a tool
    schema's `file_id` property is a schema; `fileData` takes web and YouTube URLs; prompts are the owner's."""
    cited = {"type": "output_text", "text": "x", "annotations": [{"type": "file_citation", "file_id": "file-owner"}]}
    carried = [
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAAA"},  # stateless
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "message", "id": "msg_2", "role": "assistant", "content": [cited]},
    ]
    body = {
        "input": carried,
        "tools": [{"type": "function", "name": "f", "parameters": {"properties": {"file_id": {"type": "string"}}}}],
        "prompt": {"id": "pmpt_owner"},
    }
    assert held.named("openai", "/v1/responses", body) == []
    video = {"contents": [{"parts": [{"fileData": {"fileUri": "https://www.youtube.com/watch?v=x"}}]}]}
    assert held.named("gemini", "/v1beta/models/m:generateContent", video) == []


def test_an_answer_mints_its_ids_as_json_or_in_its_stream_events() -> None:
    answer = {"id": "resp_1", "object": "response", "output": [{"id": "msg_1", "type": "message"}]}
    assert held.minted("openai", "/v1/responses", answer) == [("response", "resp_1"), ("item", "msg_1")]
    created = {"type": "response.created", "response": {"id": "resp_2", "output": []}}
    assert held.minted("openai", "/v1/responses", created) == [("response", "resp_2")]
    assert held.minted("openai", "/v1/files", {"id": "file-1", "object": "file"}) == [("file", "file-1")]
    assert held.minted("anthropic", "/v1/files", {"id": "file_1", "type": "file"}) == [("file", "file_1")]
    assert held.minted("gemini", "/v1beta/cachedContents", {"name": "cachedContents/c"}) == [
        ("cached_content", "cachedContents/c")
    ]
    ran = {"id": "resp_3", "output": [{"id": "ci_1", "type": "code_interpreter_call", "container_id": "cntr_1"}]}
    assert held.minted("openai", "/v1/responses", ran) == [
        ("response", "resp_3"),
        ("item", "ci_1"),
        ("container", "cntr_1"),
    ]
    delta = {"type": "message_delta", "delta": {"container": {"id": "container_1", "expires_at": "x"}}}
    assert held.minted("anthropic", "/v1/messages", delta) == [("container", "container_1")]
    assert held.minted("anthropic", "/v1/messages", {"id": "msg_1", "container": None}) == []
    assert held.minting("openai", "POST", "/v1/responses") and not held.minting("openai", "GET", "/v1/responses")
    assert not held.minting("openai", "POST", "/v1/chat/completions")


def test_a_chat_completion_mints_its_audio_and_when_stored_its_id() -> None:
    spoken = {"modalities": ["text", "audio"]}
    assert held.minting("openai", "POST", "/v1/chat/completions", {"store": True})
    assert held.minting("azure", "POST", "/openai/deployments/d/chat/completions", spoken)
    assert not held.minting("openai", "POST", "/v1/chat/completions", {"store": False, "messages": []})
    answer = {"id": "chatcmpl-1", "choices": [{"message": {"role": "assistant", "audio": {"id": "audio_1"}}}]}
    assert held.minted("openai", "/v1/chat/completions", answer, spoken) == [("audio", "audio_1")]
    assert held.minted("openai", "/v1/chat/completions", answer, {"store": True}) == [
        ("chat_completion", "chatcmpl-1"),
        ("audio", "audio_1"),
    ]
    assert held.minted("openai", "/v1/vector_stores", {"id": "vs_1", "object": "vector_store"}) == [
        ("vector_store", "vs_1")
    ]


def test_a_foreign_id_is_answered_as_the_provider_answers_an_unknown_one() -> None:
    assert held.not_found("openai", "response", "resp_1")[::2] == (400, "previous_response_not_found")
    assert held.not_found("openai", "response", "resp_1", in_path=True)[0] == 404
    assert held.not_found("azure", "file", "file-1")[0] == 404
    assert held.not_found("anthropic", "file", "file_1")[0] == 404
    status, message, _ = held.not_found("gemini", "file", "files/f")
    assert status == 403 and "permission" in message
