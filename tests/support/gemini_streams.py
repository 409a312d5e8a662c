"""Gemini `streamGenerateContent` answers written out chunk by chunk, for the differential suite.

Each fixture is the list of `GenerateContentResponse` objects one stream sends (the REST API's
camelCase JSON), covering the part types, candidate fields and usage counts the API documents:
text over several chunks, thoughts sealed by a `thoughtSignature`, parallel function calls, code
execution, grounding and citations, safety ratings and prompt feedback, finish reasons other than
`STOP`, cached-content usage and more than one candidate. `reading` is what an application reads
from google-genai's chunks of an answer, the oracle the differential and property tests compare.
"""

from __future__ import annotations

from typing import Any

from google.genai import types

MODEL = "gemini-2.5-flash"
SAFE = [
    {"category": category, "probability": "NEGLIGIBLE"}
    for category in (
        "HARM_CATEGORY_HATE_SPEECH",
        "HARM_CATEGORY_DANGEROUS_CONTENT",
        "HARM_CATEGORY_HARASSMENT",
        "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    )
]
PARTIAL_USAGE = {"promptTokenCount": 8, "totalTokenCount": 8}


def usage(candidates: int, **more: Any) -> dict[str, Any]:
    total = 8 + candidates + sum(v for k, v in more.items() if k in ("thoughtsTokenCount", "toolUsePromptTokenCount"))
    return {
        "promptTokenCount": 8,
        "candidatesTokenCount": candidates,
        "totalTokenCount": total,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
        **more,
    }


def candidate(parts: list[dict[str, Any]] | None, index: int | None = 0, **fields: Any) -> dict[str, Any]:
    """A candidate of one chunk; `index` None leaves it out, as the API does for a single candidate."""
    out: dict[str, Any] = {} if parts is None else {"content": {"parts": parts, "role": "model"}}
    if index is not None:
        out["index"] = index
    return {**out, **fields}


def chunk(*candidates: dict[str, Any], last_usage: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """One streamed `GenerateContentResponse`; every chunk names the model version and response id."""
    return {
        "candidates": list(candidates),
        "usageMetadata": last_usage or PARTIAL_USAGE,
        "modelVersion": MODEL,
        "responseId": "gm-fixture-1",
        **fields,
    }


GEMINI_STREAMS: dict[str, list[dict[str, Any]]] = {
    "text": [
        chunk(candidate([{"text": "The capital "}], index=None, safetyRatings=SAFE)),
        chunk(candidate([{"text": "of France "}], index=None, safetyRatings=SAFE)),
        chunk(
            candidate([{"text": "is Paris."}], index=None, finishReason="STOP", safetyRatings=SAFE),
            last_usage=usage(6, candidatesTokensDetails=[{"modality": "TEXT", "tokenCount": 6}]),
        ),
    ],
    "thoughts with signatures": [
        chunk(candidate([{"text": "**Planning**\nThe user asks ", "thought": True}])),
        chunk(candidate([{"text": "for a capital.", "thought": True}])),
        chunk(candidate([{"text": "Paris", "thoughtSignature": "c2lnLXRleHQtMQ=="}])),
        chunk(candidate([{"text": " it is."}])),
        # Gemini 3 seals the answer with a signature on an empty last text part.
        chunk(
            candidate([{"text": "", "thoughtSignature": "c2lnLWVuZA=="}], finishReason="STOP"),
            last_usage=usage(4, thoughtsTokenCount=27),
        ),
    ],
    "parallel function calls": [
        chunk(
            candidate(
                [
                    {
                        "functionCall": {"id": "fc-1", "name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "c2lnLWNhbGw=",
                    },
                    {"functionCall": {"id": "fc-2", "name": "get_time", "args": {"tz": "CET", "precise": True}}},
                ],
                finishReason="STOP",
            ),
            last_usage=usage(22, thoughtsTokenCount=51),
        ),
    ],
    "code execution": [
        chunk(candidate([{"text": "Let me compute that."}])),
        chunk(candidate([{"executableCode": {"language": "PYTHON", "code": "print(sum(range(101)))\n"}}])),
        chunk(candidate([{"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "5050\n"}}])),
        chunk(candidate([{"text": "The sum is "}])),
        chunk(
            candidate([{"text": "5050."}], finishReason="STOP"),
            last_usage=usage(31, toolUsePromptTokenCount=40),
        ),
    ],
    "grounding": [
        chunk(candidate([{"text": "Paris is the capital "}])),
        chunk(
            candidate(
                [{"text": "of France."}],
                finishReason="STOP",
                groundingMetadata={
                    "webSearchQueries": ["capital of France"],
                    "searchEntryPoint": {"renderedContent": "<div>capital of France</div>"},
                    "groundingChunks": [{"web": {"uri": "https://example.com/paris", "title": "example.com"}}],
                    "groundingSupports": [
                        {
                            "segment": {"startIndex": 0, "endIndex": 31, "text": "Paris is the capital of France."},
                            "groundingChunkIndices": [0],
                            "confidenceScores": [0.97],
                        }
                    ],
                },
                urlContextMetadata={
                    "urlMetadata": [
                        {
                            "retrievedUrl": "https://example.com/paris",
                            "urlRetrievalStatus": "URL_RETRIEVAL_STATUS_SUCCESS",
                        }
                    ]
                },
            ),
            last_usage=usage(9, toolUsePromptTokenCount=12),
        ),
    ],
    "citations": [
        chunk(
            candidate(
                [{"text": "To be, or not to be, "}],
                citationMetadata={
                    "citationSources": [{"startIndex": 0, "endIndex": 20, "uri": "https://example.com/hamlet"}]
                },
            )
        ),
        chunk(
            candidate(
                [{"text": "that is the question."}],
                finishReason="STOP",
                citationMetadata={
                    "citationSources": [
                        {"startIndex": 21, "endIndex": 42, "uri": "https://example.com/folio", "license": "CC0"}
                    ]
                },
            ),
            last_usage=usage(12),
        ),
    ],
    "blocked by safety": [
        chunk(
            candidate([{"text": "I can start, "}], safetyRatings=SAFE),
            promptFeedback={"safetyRatings": SAFE},
        ),
        chunk(
            candidate(
                None,
                finishReason="SAFETY",
                safetyRatings=[
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
                    *SAFE[:1],
                ],
            ),
            last_usage=usage(4),
        ),
    ],
    "max tokens": [
        chunk(candidate([{"text": "A very long "}])),
        chunk(candidate([{"text": "answer that"}], finishReason="MAX_TOKENS"), last_usage=usage(5)),
    ],
    "malformed function call": [
        chunk(
            candidate(
                None, finishReason="MALFORMED_FUNCTION_CALL", finishMessage="Malformed function call: get_weather(x"
            ),
            last_usage=usage(0),
        ),
    ],
    "cached content": [
        chunk(candidate([{"text": "From the cached "}])),
        chunk(
            candidate([{"text": "manual: yes."}], finishReason="STOP"),
            last_usage=usage(
                5,
                cachedContentTokenCount=2048,
                cacheTokensDetails=[{"modality": "TEXT", "tokenCount": 2048}],
            ),
        ),
    ],
    "two candidates": [
        chunk(candidate([{"text": "Yes"}], index=0), candidate([{"text": "No"}], index=1)),
        chunk(candidate([{"text": ", never."}], index=1, finishReason="STOP")),
        chunk(candidate([{"text": ", always."}], index=0, finishReason="STOP", avgLogprobs=-0.25)),
        chunk(
            candidate([{"text": ""}], index=0, finishReason="STOP"),
            candidate([{"text": ""}], index=1, finishReason="STOP"),
            last_usage=usage(8),
        ),
    ],
}


SDK_ONLY = {"sdk_http_response", "automatic_function_calling_history", "parsed"}
"""Fields the SDK adds to what it read (the HTTP response, its own bookkeeping)."""

Chunks = list[types.GenerateContentResponse]


def reading(chunks: Chunks) -> dict[str, Any]:
    """What an application reads from an answer, however it was cut into chunks.

    Per candidate: its parts in order, runs of text of one kind (answer or thought) read as one
    text, the thought signatures in order, and the latest value of every other field (citations
    are joined); for the answer, the latest value of every other field.
    """
    candidates: dict[int, dict[str, Any]] = {}
    answer: dict[str, Any] = {}
    for data in dumped(chunks):
        for candidate in data.pop("candidates", []):
            read = candidates.setdefault(candidate.pop("index", 0), {"parts": [], "signatures": [], "citations": []})
            content = candidate.pop("content", {})
            for part in content.pop("parts", []):
                _read_part(read, part)
            read.update(content)
            citations = candidate.pop("citation_metadata", {}).get("citations", [])
            read["citations"] += citations
            read.update(candidate)
        answer.update(data)
    return {"candidates": candidates, **answer}


def _read_part(read: dict[str, Any], part: dict[str, Any]) -> None:
    if "text" not in part:
        read["parts"].append(part)
        return
    if "thought_signature" in part:
        read["signatures"].append(part.pop("thought_signature"))
    kind = "thought" if part.get("thought") else "text"
    last = read["parts"][-1] if read["parts"] else None
    if last is not None and set(last) == {kind}:
        last[kind] += part["text"]
    elif part["text"]:
        read["parts"].append({kind: part["text"]})


def dumped(chunks: Chunks) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json", exclude_none=True, exclude=SDK_ONLY) for c in chunks]
