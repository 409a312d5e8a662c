"""What a successful attempt's time says about a deployment's speed, in LiteLLM's terms.

A non-streamed answer's time is mostly generation, which grows with the answer's length: taken whole,
one caller asking for long completions would make a deployment look slow for everyone. It is kept
per output token, as the answer reports them; an answer that reports none (embeddings, a provider
that never sends usage) is kept whole in an average of its own, never mixed with per-token figures
(`DeploymentState.observe_latency`, `strategies.within_latency_band`). A stream's time is to its first byte (the router
commits to a stream once it has peeked it), kept in its own average, since the two do not compare.

What a whole answer says it used also settles its reservation in the usage window (`used_tokens`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Where each API family reports the answer's output tokens: OpenAI chat (and Azure), OpenAI Responses
#: and Anthropic, Bedrock Converse, Gemini.
_OUTPUT_TOKENS = (
    ("usage", "completion_tokens"),
    ("usage", "output_tokens"),
    ("usage", "outputTokens"),
    ("usageMetadata", "candidatesTokenCount"),
)


def output_tokens(doc: Any) -> int | None:
    """The output token count a whole answer (its parsed body) reports, or ``None`` (no usage, not a count)."""
    if not isinstance(doc, Mapping):
        return None
    for outer, inner in _OUTPUT_TOKENS:
        usage = doc.get(outer)
        count = usage.get(inner) if isinstance(usage, Mapping) else None
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            return count
    return None


#: Where each API family reports all the tokens an answer used: a total (OpenAI chat and embeddings,
#: Bedrock Converse, Gemini) or its input and output parts (OpenAI Responses, Anthropic).
_TOTALS = (("usage", "total_tokens"), ("usage", "totalTokens"), ("usageMetadata", "totalTokenCount"))
_PARTS = ("usage", ("input_tokens", "output_tokens"))


def used_tokens(doc: Any) -> int | None:
    """The tokens a whole answer (its parsed body) says it used, or ``None`` (no usage, not counts).
    Upstream-supplied: the router only ever lowers a reservation with it (`DeploymentState.settle_usage`)."""
    if not isinstance(doc, Mapping):
        return None
    for outer, inner in _TOTALS:
        usage = doc.get(outer)
        count = _count(usage.get(inner)) if isinstance(usage, Mapping) else None
        if count is not None:
            return count
    outer, parts = _PARTS
    usage = doc.get(outer)
    counts = [_count(usage.get(part)) for part in parts] if isinstance(usage, Mapping) else [None]
    return None if None in counts else sum(c for c in counts if c is not None)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


__all__ = ["output_tokens", "used_tokens"]
