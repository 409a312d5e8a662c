"""Every documented request field and header of every endpoint the cache serves, against the key.

One row per field (family, endpoint, field, class, a pair of values), from the providers' API
references. Each row is sent through the real caching transport to the fake provider, the two
requests alike but for that field:

- **a**, the field changes the answer: the two requests get separate entries;
- **b**, it names state the provider holds that can change (a conversation, a container, a store,
  an editable draft): the request with it bypasses the cache, the one without is cached;
- **c**, it never changes the answer (metadata, abuse-tracking ids, cache-routing hints, billing
  labels): the two share one entry;
- **d**, it asks for a side effect (the provider keeps or runs the call): as for b.

`ABSENT` as a value leaves the field out. A dotted field sets a field inside an object (`a.b`).
The classification, and what is not served at all, is summarised in docs/providers.md ("Every
request field, classified").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest

from llm_cache.middleware import Cache
from tests.middleware.test_what_may_be_stored import (
    ASK,
    BEDROCK,
    CHAT,
    CLAUDE,
    COMPLETIONS,
    CONVERSE,
    EMBED,
    EMBEDDINGS,
    GENERATE,
    INVOKE,
    MESSAGES,
    OPENAI,
    RESPONSES,
    Call,
    client,
)
from tests.support.fake_provider_fixtures import RunningFakeProvider


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()
"""The field is not sent."""

ALICE = {"authorization": OPENAI["authorization"]}
AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28)
MODERATIONS = Call("/v1/moderations", {"model": "omni-moderation-latest", "input": "bake bread"}, OPENAI)
RERANK = Call(
    "/v2/rerank",
    {"model": "rerank-v3.5", "query": "capital of France", "documents": ["Paris is the capital", "Bread"]},
    {"authorization": "Bearer co-alice", "content-type": "application/json"},
)
BATCH_EMBED = Call(
    "/v1beta/models/text-embedding-004:batchEmbedContents",
    {"requests": [{"content": {"parts": [{"text": "Paris"}]}}]},
    GENERATE.headers,
)
PROMPT_ARN = "arn:aws:bedrock:us-east-1:123456789012:prompt%2FPROMPT12345"
PROMPTED = Call(f"/model/{PROMPT_ARN}:3/converse", {"promptVariables": {"city": {"text": "Paris"}}}, BEDROCK)
GUARDED_INVOKE = Call(
    INVOKE.path,
    INVOKE.body,
    {**BEDROCK, "x-amzn-bedrock-guardrailidentifier": "gr1", "x-amzn-bedrock-guardrailversion": "1"},
)
BASES = {
    "chat.completions": ("openai", CHAT),
    "completions": ("openai", COMPLETIONS),
    "responses": ("openai", RESPONSES),
    "embeddings": ("openai", EMBEDDINGS),
    "moderations": ("openai", MODERATIONS),
    "audio.transcriptions": ("openai", Call("/v1/audio/transcriptions", {"model": "whisper-1"}, OPENAI)),
    "messages": ("anthropic", MESSAGES),
    "generateContent": ("gemini", GENERATE),
    "embedContent": ("gemini", EMBED),
    "batchEmbedContents": ("gemini", BATCH_EMBED),
    "converse": ("bedrock", CONVERSE),
    "converse (prompt)": ("bedrock", PROMPTED),
    "invoke": ("bedrock", INVOKE),
    "invoke (guardrail)": ("bedrock", GUARDED_INVOKE),
    "rerank": ("cohere", RERANK),
}


@dataclass(frozen=True)
class Row:
    """One request field of one endpoint, its class, and two values that differ."""

    endpoint: str
    field: str
    kind: str
    values: tuple[Any, Any]
    where: str = "body"
    """`body` (a JSON field, dotted for a nested one), `header`, `query`, `path` (the values are whole paths)
    or `form`."""
    label: str = ""

    @property
    def family(self) -> str:
        return BASES[self.endpoint][0]

    @property
    def id(self) -> str:
        return ":".join(part for part in (self.endpoint, self.field, self.kind, self.label) if part)

    def send(self, http: httpx2.Client, value: Any) -> httpx2.Response:
        base = BASES[self.endpoint][1]
        if self.where == "form":
            form = base.body if value is ABSENT else {**base.body, self.field: value}
            return http.post(base.path, data=form, files={"file": ("clip.wav", AUDIO, "audio/wav")}, headers=ALICE)
        if self.where == "path":
            return Call(value, base.body, base.headers).send(http)
        if self.where == "query":  # (a Google system parameter: `?$alt=...`, as the client writes it)
            query = "" if value is ABSENT else "?" + urlencode({self.field: value}, safe="$")
            return Call(base.path + query, base.body, base.headers).send(http)
        if self.where == "header":
            headers = {k: v for k, v in base.headers.items() if k != self.field}
            return Call(base.path, base.body, headers if value is ABSENT else {**headers, self.field: value}).send(http)
        return Call(base.path, with_field(base.body, self.field, value), base.headers).send(http)


def with_field(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with `dotted` set to `value` (or removed, for `ABSENT`)."""
    body = copy.deepcopy(body)
    *outer, name = dotted.split(".")
    target = body
    for part in outer:
        target = target.setdefault(part, {})
    if value is ABSENT:
        target.pop(name, None)
    else:
        target[name] = value
    return body


def a(endpoint: str, field: str, first: Any, second: Any, where: str = "body", label: str = "") -> Row:
    return Row(endpoint, field, "a", (first, second), where, label)


def b(endpoint: str, field: str, without: Any, state: Any, where: str = "body", label: str = "") -> Row:
    return Row(endpoint, field, "b", (without, state), where, label)


def c(endpoint: str, field: str, first: Any, second: Any, where: str = "body", label: str = "") -> Row:
    return Row(endpoint, field, "c", (first, second), where, label)


def d(endpoint: str, field: str, without: Any, effect: Any, where: str = "body", label: str = "") -> Row:
    return Row(endpoint, field, "d", (without, effect), where, label)


AZURE = "/openai/deployments/{}/chat/completions?api-version={}"
GA, PREVIEW = "2024-10-21", "2025-04-01-preview"
OTHER_ASK = [{"role": "user", "content": "And of Spain?"}]
FUNCTION = {"name": "weather", "description": "Weather in a city", "parameters": {"type": "object", "properties": {}}}
VERDICT = {"type": "object", "properties": {"reasoning": {"type": "string"}, "answer": {"type": "string"}}}
VERDICT_ANSWER_FIRST = {"type": "object", "properties": {"answer": {"type": "string"}, "reasoning": {"type": "string"}}}


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}


AZURE_SEARCH = [{"type": "azure_search", "parameters": {"endpoint": "https://s.search.windows.net", "index_name": "d"}}]
VECTOR_STORE = [{"type": "file_search", "vector_store_ids": ["vs_abc123"]}]
CONTAINER = [{"type": "code_interpreter", "container": "cntr_abc123"}]
MCP_URL = "https://mcp.example.com/sse"
MCP = [{"type": "mcp", "server_label": "issues", "server_url": MCP_URL, "require_approval": "never"}]
OPENAI_IGNORED = (
    ("user", "user-42"),
    ("safety_identifier", "hash-of-user"),
    ("metadata", {"team": "search"}),
    ("prompt_cache_key", "tenant-7"),
    ("prompt_cache_retention", "24h"),
    ("service_tier", "flex"),
    ("store", False),
)
"""Chat completions' and Responses' fields that never change the answer: abuse-tracking ids, labels
for stored calls, the provider's prompt-cache routing, the processing tier, and not storing."""
CHAT_ROWS = [
    a("chat.completions", "model", "gpt-4o-mini", "gpt-4o"),
    a("chat.completions", "messages", ASK, OTHER_ASK),
    a("chat.completions", "temperature", 0, 1),
    a("chat.completions", "top_p", ABSENT, 0.5),
    a("chat.completions", "n", ABSENT, 2),
    a("chat.completions", "max_completion_tokens", 16, 32),
    a("chat.completions", "max_tokens", 16, 32),
    a("chat.completions", "stop", ABSENT, ["\n"]),
    a("chat.completions", "seed", 1, 2),
    a("chat.completions", "frequency_penalty", ABSENT, 0.5),
    a("chat.completions", "presence_penalty", ABSENT, 0.5),
    a("chat.completions", "logit_bias", ABSENT, {"1234": -100}),
    a("chat.completions", "logprobs", ABSENT, True),
    a("chat.completions", "top_logprobs", 1, 2),
    a("chat.completions", "response_format", ABSENT, {"type": "json_object"}),
    a("chat.completions", "response_format", json_schema(VERDICT), json_schema(VERDICT_ANSWER_FIRST), label="order"),
    a("chat.completions", "tools", ABSENT, [{"type": "function", "function": FUNCTION}]),
    a("chat.completions", "tool_choice", "auto", "none"),
    a("chat.completions", "parallel_tool_calls", ABSENT, False),
    a("chat.completions", "reasoning_effort", "low", "high"),
    a("chat.completions", "verbosity", "low", "high"),
    a("chat.completions", "modalities", ABSENT, ["text", "audio"]),
    a("chat.completions", "audio", ABSENT, {"voice": "alloy", "format": "wav"}),
    a("chat.completions", "prediction", ABSENT, {"type": "content", "content": "Paris"}),
    a("chat.completions", "web_search_options", ABSENT, {"search_context_size": "low"}),
    a("chat.completions", "functions", ABSENT, [FUNCTION]),
    a("chat.completions", "path", AZURE.format("gpt4o", GA), AZURE.format("o3", GA), "path", "azure-deployment"),
    a("chat.completions", "path", AZURE.format("d", GA), AZURE.format("d", PREVIEW), "path", "api-version"),
    a("chat.completions", "azureml-model-deployment", "blue", "green", "header"),
    a("chat.completions", "extra-parameters", "drop", "pass-through", "header"),
    a("chat.completions", "x-policy-id", ABSENT, "strict-filter", "header"),
    a("chat.completions", "x-portkey-provider", ABSENT, "anthropic", "header"),
    *(c("chat.completions", field, ABSENT, value) for field, value in OPENAI_IGNORED),
    c("chat.completions", "openai-organization", ABSENT, "org-abc", "header"),
    c("chat.completions", "openai-project", ABSENT, "proj_abc", "header"),
    c("chat.completions", "idempotency-key", "one", "two", "header"),
    c("chat.completions", "x-stainless-retry-count", "0", "1", "header"),
    b("chat.completions", "data_sources", ABSENT, AZURE_SEARCH),
    b("chat.completions", "dataSources", ABSENT, AZURE_SEARCH, label="extensions-api"),
    d("chat.completions", "store", False, True),
]
RESPONSES_ROWS = [
    a("responses", "model", "gpt-4o-mini", "gpt-4o"),
    a("responses", "input", "What is the capital of France?", "And of Spain?"),
    a("responses", "instructions", ABSENT, "Answer in French."),
    a("responses", "temperature", 0, 1),
    a("responses", "top_p", ABSENT, 0.5),
    a("responses", "max_output_tokens", 16, 32),
    a("responses", "max_tool_calls", ABSENT, 1),
    a("responses", "reasoning", ABSENT, {"effort": "high", "summary": "auto"}),
    a("responses", "text", ABSENT, {"verbosity": "low"}),
    a(
        "responses",
        "text",
        {"format": {"type": "json_schema", "name": "verdict", "schema": VERDICT}},
        {"format": {"type": "json_schema", "name": "verdict", "schema": VERDICT_ANSWER_FIRST}},
        label="order",
    ),
    a("responses", "tools", ABSENT, [{"type": "function", **FUNCTION}]),
    a("responses", "tools", ABSENT, [{"type": "web_search"}], label="web_search"),
    a("responses", "tools", ABSENT, [{"type": "image_generation"}], label="image_generation"),
    a("responses", "tools", ABSENT, [{**CONTAINER[0], "container": {"type": "auto"}}], label="auto-container"),
    a("responses", "tool_choice", "auto", "none"),
    a("responses", "parallel_tool_calls", ABSENT, False),
    a("responses", "include", ABSENT, ["reasoning.encrypted_content"]),
    a("responses", "truncation", "disabled", "auto"),
    a("responses", "top_logprobs", ABSENT, 2),
    a("responses", "prompt", {"id": "pmpt_abc", "version": "1"}, {"id": "pmpt_abc", "version": "2"}),
    a(
        "responses",
        "prompt",
        {"id": "pmpt_abc", "version": "1", "variables": {"city": "Paris"}},
        {"id": "pmpt_abc", "version": "1", "variables": {"city": "Madrid"}},
        label="variables",
    ),
    a("responses", "x-policy-id", ABSENT, "strict-filter", "header"),
    *(c("responses", field, ABSENT, value) for field, value in OPENAI_IGNORED),
    b("responses", "previous_response_id", ABSENT, "resp_abc123"),
    b("responses", "conversation", ABSENT, "conv_abc123"),
    b("responses", "prompt", ABSENT, {"id": "pmpt_abc"}, label="no-version"),
    b("responses", "tools", ABSENT, VECTOR_STORE, label="file_search"),
    b("responses", "tools", ABSENT, CONTAINER, label="container-id"),
    b("responses", "tools", ABSENT, MCP, label="mcp"),
    d("responses", "store", False, True),
    d("responses", "background", False, True),
]
OPENAI_OTHER_ROWS = [
    a("completions", "model", "gpt-3.5-turbo-instruct", "davinci-002"),
    a("completions", "prompt", "What is the capital of France?", "And of Spain?"),
    a("completions", "suffix", ABSENT, "."),
    a("completions", "echo", ABSENT, True),
    a("completions", "best_of", ABSENT, 2),
    a("completions", "max_tokens", 16, 32),
    a("completions", "temperature", 0, 1),
    a("completions", "logprobs", ABSENT, 2),
    a("completions", "stop", ABSENT, "\n"),
    a("completions", "seed", 1, 2),
    c("completions", "user", ABSENT, "user-42"),
    a("embeddings", "model", "text-embedding-3-small", "text-embedding-3-large"),
    a("embeddings", "input", "Paris", "Madrid"),
    a("embeddings", "dimensions", ABSENT, 256),
    a("embeddings", "encoding_format", "float", "base64"),
    c("embeddings", "user", ABSENT, "user-42"),
    a("moderations", "model", "omni-moderation-latest", "text-moderation-stable"),
    a("moderations", "input", "bake bread", "bake a cake"),
    a("audio.transcriptions", "model", "whisper-1", "gpt-4o-transcribe", "form"),
    a("audio.transcriptions", "language", ABSENT, "fr", "form"),
    a("audio.transcriptions", "prompt", ABSENT, "Proper nouns: Paris.", "form"),
    a("audio.transcriptions", "temperature", ABSENT, "0.5", "form"),
    a("audio.transcriptions", "response_format", "json", "verbose_json", "form"),
    a("audio.transcriptions", "chunking_strategy", ABSENT, "auto", "form"),
    d("audio.transcriptions", "stream", "false", "true", "form"),
]
DOCUMENT = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Paris is the capital."}}
ASKED = {"type": "text", "text": "Capital?"}
CITED = [{"role": "user", "content": [{**DOCUMENT, "citations": {"enabled": True}}, ASKED]}]
UNCITED = [{"role": "user", "content": [DOCUMENT, ASKED]}]
SEARCH_RESULT = {"type": "search_result", "source": "https://example.com/a", "title": "A", "content": []}
SKILLS = {"skills": [{"type": "anthropic", "skill_id": "pptx", "version": "latest"}]}
MESSAGES_ROWS = [
    a("messages", "model", "claude-3-5-haiku-latest", "claude-sonnet-4-5"),
    a("messages", "messages", MESSAGES.body["messages"], OTHER_ASK),
    a("messages", "messages", UNCITED, CITED, label="citations"),
    a(
        "messages",
        "messages",
        [{"role": "user", "content": [{**SEARCH_RESULT, "content": [{"type": "text", "text": "Paris"}]}]}],
        [{"role": "user", "content": [{**SEARCH_RESULT, "content": [{"type": "text", "text": "Lyon"}]}]}],
        label="search_result",
    ),
    a(
        "messages",
        "messages",
        [{"role": "user", "content": [{"type": "document", "source": {"type": "file", "file_id": "file_a"}}]}],
        [{"role": "user", "content": [{"type": "document", "source": {"type": "file", "file_id": "file_b"}}]}],
        label="files-api",
    ),
    a("messages", "system", ABSENT, "Answer in French."),
    a("messages", "max_tokens", 64, 128),
    a("messages", "temperature", 0, 1),
    a("messages", "top_p", ABSENT, 0.5),
    a("messages", "top_k", ABSENT, 5),
    a("messages", "stop_sequences", ABSENT, ["\n"]),
    a("messages", "tools", ABSENT, [{"name": "weather", "input_schema": {"type": "object", "properties": {}}}]),
    a("messages", "tools", ABSENT, [{"type": "web_fetch_20250910", "name": "web_fetch"}], label="web_fetch"),
    a("messages", "tools", ABSENT, [{"type": "web_search_20250305", "name": "web_search"}], label="web_search"),
    a("messages", "tools", ABSENT, [{"type": "code_execution_20250825", "name": "code_execution"}], label="code"),
    a("messages", "tool_choice", {"type": "auto"}, {"type": "any"}),
    a("messages", "thinking", ABSENT, {"type": "enabled", "budget_tokens": 1024}),
    a("messages", "context_management", ABSENT, {"edits": [{"type": "clear_tool_uses_20250919"}]}),
    a("messages", "output_format", ABSENT, {"type": "json_schema", "schema": VERDICT}),
    a("messages", "anthropic-version", "2023-06-01", "2023-01-01", "header"),
    a("messages", "anthropic-beta", ABSENT, "context-management-2025-06-27", "header"),
    c("messages", "metadata", ABSENT, {"user_id": "user-42"}),
    c("messages", "service_tier", ABSENT, "standard_only"),
    c("messages", "x-stainless-retry-count", "0", "1", "header"),
    b("messages", "container", ABSENT, "container_abc123"),
    b("messages", "container", ABSENT, SKILLS, label="skills"),
    b("messages", "mcp_servers", ABSENT, [{"type": "url", "url": MCP_URL, "name": "issues"}]),
]
GEMINI = "/v1beta/models/{}:generateContent"
GEMINI_ROWS = [
    a("generateContent", "path", GEMINI.format("gemini-2.0-flash"), GEMINI.format("gemini-2.5-pro"), "path", "model"),
    a("generateContent", "contents", GENERATE.body["contents"], [{"role": "user", "parts": [{"text": "Spain?"}]}]),
    a("generateContent", "systemInstruction", ABSENT, {"parts": [{"text": "Answer in French."}]}),
    a("generateContent", "generationConfig.temperature", 0, 1),
    a("generateContent", "generationConfig.maxOutputTokens", 16, 32),
    a("generateContent", "generationConfig.candidateCount", ABSENT, 2),
    a("generateContent", "generationConfig.responseMimeType", ABSENT, "application/json"),
    a("generateContent", "generationConfig.responseSchema", VERDICT, VERDICT_ANSWER_FIRST, label="order"),
    a("generateContent", "generationConfig.responseJsonSchema", ABSENT, VERDICT),
    a("generateContent", "generationConfig.thinkingConfig", ABSENT, {"thinkingBudget": 0}),
    a("generateContent", "safetySettings", ABSENT, [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "OFF"}]),
    a("generateContent", "tools", ABSENT, [{"functionDeclarations": [FUNCTION]}]),
    a("generateContent", "tools", ABSENT, [{"googleSearch": {}}], label="googleSearch"),
    a("generateContent", "tools", ABSENT, [{"urlContext": {}}], label="urlContext"),
    a("generateContent", "tools", ABSENT, [{"codeExecution": {}}], label="codeExecution"),
    a("generateContent", "toolConfig", ABSENT, {"functionCallingConfig": {"mode": "ANY"}}),
    c("generateContent", "labels", ABSENT, {"team": "search"}),
    c("generateContent", "x-goog-api-client", "genai-py/1.0", "genai-py/2.0", "header"),
    c("generateContent", "x-goog-user-project", ABSENT, "billing-project", "header"),
    # Google's system parameters (docs/providers.md, "Google's system parameters")
    c("generateContent", "alt", ABSENT, "json", "query", label="json"),
    a("generateContent", "alt", ABSENT, "proto", "query", label="proto"),
    a("generateContent", "alt", ABSENT, "media", "query", label="media"),
    a("generateContent", "alt", ABSENT, "sse", "query", label="sse on a unary call"),
    a("generateContent", "$alt", ABSENT, "json;enum-encoding=int", "query", label="enums as numbers"),
    a("generateContent", "fields", ABSENT, "candidates", "query"),
    a("generateContent", "$fields", ABSENT, "candidates", "query"),
    a("generateContent", "x-goog-fieldmask", ABSENT, "candidates", "header"),
    a("generateContent", "prettyPrint", ABSENT, "false", "query"),
    a("generateContent", "$prettyPrint", ABSENT, "false", "query"),
    a("generateContent", "$ct", ABSENT, "application/json+protobuf", "query"),
    a("generateContent", "$.xgafv", ABSENT, "1", "query"),
    a("generateContent", "callback", ABSENT, "answered", "query"),
    a("generateContent", "$callback", ABSENT, "answered", "query"),
    a("generateContent", "x-goog-api-version", ABSENT, "2025-06-01", "header"),
    c("generateContent", "quotaUser", ABSENT, "user-42", "query"),
    c("generateContent", "x-goog-quota-user", ABSENT, "user-42", "header"),
    a("generateContent", "upload_protocol", ABSENT, "raw", "query"),
    a("generateContent", "uploadType", ABSENT, "media", "query"),
    b("generateContent", "tools", ABSENT, [{"fileSearch": {"fileSearchStoreNames": ["fileSearchStores/a"]}}]),
    b(
        "generateContent",
        "tools",
        ABSENT,
        [{"retrieval": {"vertexAiSearch": {"datastore": "projects/p/locations/global/collections/c/dataStores/d"}}}],
        label="vertexAiSearch",
    ),
    b(
        "generateContent",
        "tools",
        ABSENT,
        [{"retrieval": {"vertexRagStore": {"ragResources": [{"ragCorpus": "projects/p/locations/l/ragCorpora/1"}]}}}],
        label="vertexRagStore",
    ),
    a("embedContent", "content", EMBED.body["content"], {"parts": [{"text": "Madrid"}]}),
    a("embedContent", "taskType", ABSENT, "RETRIEVAL_QUERY"),
    a("embedContent", "title", ABSENT, "Capitals"),
    a("embedContent", "outputDimensionality", ABSENT, 256),
    a(
        "batchEmbedContents",
        "requests",
        BATCH_EMBED.body["requests"],
        [{"content": {"parts": [{"text": "Paris"}]}, "taskType": "RETRIEVAL_DOCUMENT"}],
    ),
]


def s3_document(key: str) -> list[dict[str, Any]]:
    """A Converse turn asking about a document the caller keeps in S3 (keyed by its URI)."""
    source = {"s3Location": {"uri": f"s3://bucket/{key}"}}
    document = {"document": {"format": "pdf", "name": "doc", "source": source}}
    return [{"role": "user", "content": [document, {"text": "Summarise it."}]}]


PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile%2Fabc123"
BEDROCK_ROWS = [
    a("converse", "path", CONVERSE.path, f"/model/us.{CLAUDE}/converse", "path", "inference-profile"),
    a("converse", "path", CONVERSE.path, f"/model/{PROFILE}/converse", "path", "application-inference-profile"),
    a("converse", "messages", CONVERSE.body["messages"], [{"role": "user", "content": [{"text": "Spain?"}]}]),
    a("converse", "messages", s3_document("a.pdf"), s3_document("b.pdf"), label="s3Location"),
    a("converse", "system", ABSENT, [{"text": "Answer in French."}]),
    a("converse", "inferenceConfig.temperature", 0, 1),
    a("converse", "inferenceConfig.maxTokens", 64, 128),
    a("converse", "toolConfig", ABSENT, {"tools": [{"toolSpec": {"name": "weather", "inputSchema": {"json": {}}}}]}),
    a(
        "converse",
        "guardrailConfig",
        {"guardrailIdentifier": "gr1", "guardrailVersion": "1"},
        {"guardrailIdentifier": "gr1", "guardrailVersion": "2"},
    ),
    a(
        "converse",
        "guardrailConfig",
        {"guardrailIdentifier": "gr1", "guardrailVersion": "1"},
        {"guardrailIdentifier": "gr1", "guardrailVersion": "1", "trace": "enabled"},
        label="trace",
    ),
    a("converse", "additionalModelRequestFields", ABSENT, {"top_k": 5}),
    a("converse", "additionalModelResponseFieldPaths", ABSENT, ["/stop_sequence"]),
    a("converse", "performanceConfig", ABSENT, {"latency": "optimized"}),
    a("converse", "serviceTier", ABSENT, {"type": "priority"}),
    c("converse", "requestMetadata", ABSENT, {"team": "search"}),
    b("converse", "guardrailConfig", ABSENT, {"guardrailIdentifier": "gr1", "guardrailVersion": "DRAFT"}),
    a("converse (prompt)", "promptVariables", {"city": {"text": "Paris"}}, {"city": {"text": "Madrid"}}),
    a("converse (prompt)", "path", PROMPTED.path, f"/model/{PROMPT_ARN}:4/converse", "path", "version"),
    b("converse (prompt)", "path", PROMPTED.path, f"/model/{PROMPT_ARN}/converse", "path", "draft"),
    a("invoke", "path", INVOKE.path, f"/model/us.{CLAUDE}/invoke", "path", "inference-profile"),
    a("invoke", "anthropic_version", "bedrock-2023-05-31", ABSENT),
    a("invoke", "anthropic_beta", ABSENT, ["context-1m-2025-08-07"]),
    a("invoke", "max_tokens", 64, 128),
    a("invoke", "system", ABSENT, "Answer in French."),
    a("invoke", "accept", "application/json", "*/*", "header"),
    a("invoke", "x-amzn-bedrock-trace", ABSENT, "ENABLED", "header"),
    a("invoke", "x-amzn-bedrock-performanceconfig-latency", ABSENT, "optimized", "header"),
    a("invoke", "x-amzn-bedrock-service-tier", ABSENT, "priority", "header"),
    a("invoke (guardrail)", "x-amzn-bedrock-guardrailidentifier", "gr1", "gr2", "header"),
    a("invoke (guardrail)", "x-amzn-bedrock-guardrailversion", "1", "2", "header"),
    b("invoke (guardrail)", "x-amzn-bedrock-guardrailversion", "1", "DRAFT", "header"),
    c("invoke", "user-agent", "Boto3/1.40", "Boto3/1.41", "header"),
]
RERANK_ROWS = [
    a("rerank", "model", "rerank-v3.5", "rerank-multilingual-v3.0"),
    a("rerank", "query", "capital of France", "capital of Spain"),
    a("rerank", "documents", RERANK.body["documents"], ["Bread", "Paris is the capital"]),
    a("rerank", "top_n", ABSENT, 1),
    a("rerank", "return_documents", ABSENT, True),
    a("rerank", "max_tokens_per_doc", ABSENT, 512),
    c("rerank", "x-client-name", "app-a", "app-b", "header"),
]
ROWS = CHAT_ROWS + RESPONSES_ROWS + OPENAI_OTHER_ROWS + MESSAGES_ROWS + GEMINI_ROWS + BEDROCK_ROWS + RERANK_ROWS


def test_the_table_names_each_row_once() -> None:
    ids = [row.id for row in ROWS]
    assert len(set(ids)) == len(ids), sorted({i for i in ids if ids.count(i) > 1})
    assert {row.kind for row in ROWS} == {"a", "b", "c", "d"}
    assert {row.family for row in ROWS} == {"openai", "anthropic", "gemini", "bedrock", "cohere"}


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_each_request_field_is_keyed_ignored_or_bypassed_as_its_class_says(
    fake_provider_session: RunningFakeProvider, row: Row
) -> None:
    cache = Cache()
    first, second = row.values
    with client(cache, fake_provider_session) as http:
        if row.kind in ("a", "c"):
            answers = [row.send(http, first), row.send(http, second), row.send(http, first)]
        else:
            answers = [row.send(http, first), row.send(http, first), row.send(http, second), row.send(http, second)]
    assert all(answer.status_code == 200 for answer in answers), [answer.text[:200] for answer in answers]
    outcomes = [answer.headers.get("x-cache") for answer in answers]
    keys = [answer.headers.get("x-cache-key") for answer in answers]
    if row.kind == "a":  # separate entries, each served again
        assert outcomes == ["MISS", "MISS", "HIT"] and keys[0] != keys[1] and keys[2] == keys[0]
        assert fake_provider_session.count() == 2
    elif row.kind == "c":  # one entry
        assert outcomes == ["MISS", "HIT", "HIT"] and keys[0] == keys[1] == keys[2]
        assert fake_provider_session.count() == 1
    else:  # cached without it, never looked up nor stored with it
        assert outcomes == ["MISS", "HIT", "BYPASS", "BYPASS"] and keys[2:] == [None, None]
        assert fake_provider_session.count() == 3
        assert (cache.stats.bypasses, cache.stats.stored) == (2, 1)
