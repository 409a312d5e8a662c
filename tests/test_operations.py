"""`llm_cache._operations`: what each API operation does on the provider, declared once for the cache's
provider modules (`Endpoint.api_operation`) and the router (`_repeat.repeatable`). (That it is neutral:
`tests/test_wire.py::test_the_neutral_modules_import_neither_package`.)"""

from __future__ import annotations

import pytest

from llm_cache import _operations as operations
from llm_cache.middleware.providers import DEFAULT_ENDPOINTS
from llm_cache.router._repeat import repeatable

ENDPOINTS = {
    # endpoint: (paths it owns, creates nothing on the provider: what the provider's API reference says)
    "chat.completions": (["/v1/chat/completions", "/openai/deployments/prod/chat/completions"], True),
    "completions": (["/v1/completions", "/openai/deployments/prod/completions"], True),
    # a model response (kept for retrieval when `store`: a record of the answer, not work left to do;
    # `background: true` is a job, `test_a_background_response_creates_something`)
    "responses": (["/v1/responses", "/openai/v1/responses"], True),
    "embeddings": (["/v1/embeddings", "/openai/deployments/ada/embeddings"], True),
    "moderations": (["/v1/moderations"], True),
    "audio.transcriptions": (["/v1/audio/transcriptions"], True),
    "audio.translations": (["/v1/audio/translations"], True),
    "messages": (["/v1/messages", "/anthropic/v1/messages"], True),
    "generate_content": (
        [
            "/v1beta/models/gemini-2.0-flash:generateContent",
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent",
        ],
        True,
    ),
    "embed_content": (
        ["/v1beta/models/text-embedding-004:embedContent", "/v1beta/models/text-embedding-004:batchEmbedContents"],
        True,
    ),
    "bedrock.invoke": (["/model/anthropic.claude-3-haiku-20240307-v1:0/invoke"], True),
    "bedrock.invoke-stream": (["/model/anthropic.claude-3-haiku-20240307-v1:0/invoke-with-response-stream"], True),
    "bedrock.converse": (
        ["/model/amazon.nova-lite-v1:0/converse", "/model/amazon.nova-lite-v1:0/converse-stream"],
        True,
    ),
    "rerank": (["/v1/rerank"], True),
}
"""Every endpoint the cache serves, with what its provider's API reference says a call does."""
ROUTER_ONLY = {
    # paths the router sends that no cache endpoint serves, with the same reading of their references
    "/v1/images/generations": True,
    "/v1/images/edits": True,
    "/v1/audio/speech": True,
    "/v1/messages/count_tokens": True,
    "/v1beta/models/gemini-2.0-flash:countTokens": True,
    "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude:rawPredict": True,
    "/v1/threads/thread_1/messages": False,  # adds a message to a thread (its path ends as Anthropic's)
    "/v1/threads/runs": False,
}
UNDECLARED = [
    "/v1/fine_tuning/jobs",
    "/v1/batches",
    "/v1/files",
    "/v1/assistants",
    "/v1/videos",
    "/v1/vector_stores",
    "/v1beta/cachedContents",
    "/v1/responses/resp_1/cancel",
]
"""Paths no operation declares: they may create something."""


@pytest.mark.parametrize("endpoint", DEFAULT_ENDPOINTS, ids=[endpoint.name for endpoint in DEFAULT_ENDPOINTS])
def test_every_endpoint_declares_what_its_providers_reference_says_a_call_does(endpoint: object) -> None:
    paths, creates_nothing = ENDPOINTS[endpoint.name]  # type: ignore[attr-defined]
    assert endpoint.creates_nothing is creates_nothing  # type: ignore[attr-defined]
    for path in paths:
        assert endpoint.match(path) is not None, path  # type: ignore[attr-defined]
        # the router reads the very declaration the endpoint names: one list
        assert operations.operation_of(path) is endpoint.api_operation, path  # type: ignore[attr-defined]
        assert repeatable("POST", path, {}) is creates_nothing, path


def test_the_table_names_every_endpoint() -> None:
    assert sorted(endpoint.name for endpoint in DEFAULT_ENDPOINTS) == sorted(ENDPOINTS)


@pytest.mark.parametrize(("path", "creates_nothing"), ROUTER_ONLY.items(), ids=ROUTER_ONLY.keys())
def test_a_path_only_the_router_sends_is_declared_too(path: str, creates_nothing: bool) -> None:
    operation = operations.operation_of(path)
    assert operation is not None and operation.creates_nothing is creates_nothing
    assert repeatable("POST", path, {}) is creates_nothing


@pytest.mark.parametrize("path", UNDECLARED)
def test_a_path_no_operation_declares_may_create_something(path: str) -> None:
    assert operations.operation_of(path) is None
    assert not repeatable("POST", path, {})
    assert repeatable("GET", path, None) and repeatable("DELETE", path, None)  # idempotent methods


def test_a_background_response_creates_something() -> None:
    assert operations.RESPONSES.creates_something({"background": True})
    assert not operations.RESPONSES.creates_something({"background": False, "store": True})
    assert not repeatable("POST", "/v1/responses", {"input": "hi", "background": True})
