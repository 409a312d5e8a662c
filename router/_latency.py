"""What a successful attempt's time says about a deployment's speed, in LiteLLM's terms.

A non-streamed answer's time is mostly generation, which grows with the answer's length: taken whole,
one caller asking for long completions would make a deployment look slow for everyone. It is kept
per output token, as the answer reports them; an answer that reports none (embeddings, a provider
that never sends usage) is kept whole in an average of its own, never mixed with per-token figures
(`DeploymentState.observe_latency`, `strategies.within_latency_band`). A stream's time is to its first byte (the router
commits to a stream once it has peeked it), kept in its own average, since the two do not compare.
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


__all__ = ["output_tokens"]
