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
    body = {
        "input": [{"role": "assistant", "content": [cited]}],
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


def test_a_foreign_id_is_answered_as_the_provider_answers_an_unknown_one() -> None:
    assert held.not_found("openai", "response", "resp_1")[::2] == (400, "previous_response_not_found")
    assert held.not_found("openai", "response", "resp_1", in_path=True)[0] == 404
    assert held.not_found("azure", "file", "file-1")[0] == 404
    assert held.not_found("anthropic", "file", "file_1")[0] == 404
    status, message, _ = held.not_found("gemini", "file", "files/f")
    assert status == 403 and "permission" in message
