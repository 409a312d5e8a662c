"""What a successful attempt's time says about a deployment's speed, in LiteLLM's terms.

A non-streamed answer's time is mostly generation, which grows with the answer's length: taken whole,
one caller asking for long completions would make a deployment look slow for everyone. It is kept
per output token, as the answer reports them; an answer that reports none (embeddings, a provider
that never sends usage) is kept whole in an average of its own, never mixed with per-token figures
(`DeploymentState.observe_latency`, `strategies.within_latency_band`). A stream's time is to its first byte (the router
commits to a stream once it has peeked it), kept in its own average, since the two do not compare.

What a whole answer says it used also settles its reservation in the usage window (`used_tokens`).

A count is the upstream's word and a time can be the caller's doing (a long prompt with
``max_tokens: 1``): a count is used only up to what the request allowed (`plausible_tokens`), a sample
moves a figure by a bounded factor, and a figure nobody refreshed for a while is unknown again
(`DeploymentState.observe_latency`, `DeploymentState.stale`), as Finagle's peak EWMA forgets with age.
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
        if isinstance(count, int) and not isinstance(count, bool) and 0 < count <= MAX_COUNT:
            return count
    return None


#: The largest count taken for one: beyond it a number is no count (the cache's `MAX_TOKEN_COUNT`).
MAX_COUNT = 2**53

#: Where each API family's request caps the answer's output tokens (top-level keys, then nested).
_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_NESTED_CAPS = (("generationConfig", "maxOutputTokens"), ("inferenceConfig", "maxTokens"))


def output_cap(doc: Any) -> int | None:
    """The most output tokens the request (its parsed body) allows, or ``None`` when it sets no cap."""
    if not isinstance(doc, Mapping):
        return None
    caps = [doc.get(key) for key in _CAPS]
    caps += [outer.get(inner) for key, inner in _NESTED_CAPS if isinstance(outer := doc.get(key), Mapping)]
    counts = [c for c in caps if isinstance(c, int) and not isinstance(c, bool) and c > 0]
    return min(counts) if counts else None


def plausible_tokens(answer: Any, request: Any) -> int | None:
    """The output tokens a per-token latency sample divides by: the answer's count, never more than the
    request allowed. A hostile upstream's ``completion_tokens: 10**30`` would make its figure ~0 and
    draw every request; a count above the cap is the cap."""
    count = output_tokens(answer)
    cap = output_cap(request)
    return count if count is None or cap is None else min(count, cap)


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


__all__ = ["MAX_COUNT", "output_cap", "output_tokens", "plausible_tokens", "used_tokens"]
