"""Which calls a gateway forwards with a key of its own: model calls, unless the owner opens more.

A gateway that holds an upstream key (`upstreams.<family>.api_key`, or keys in a router's
`model_list`) spends it for every caller. A reverse proxy that forwarded every path with it would let
any caller act on the owner's account: delete files, fine-tuned models and batches, read stored
responses, cancel jobs. So such a gateway forwards the calls in `upstreams.<family>.allow` only,
by default the model calls of its API family and the model list; anything else is refused (403)
before it leaves. A gateway whose callers send their own provider keys forwards every path.

A rule is `"METHOD /path"`: `*` as the method is any method; in the path, `*` matches within one
segment (`/v1/models/*`, `/v1beta/models/*:generateContent`) and a last segment `**` matches the
rest (`* /**` opens everything). Paths are matched as forwarded (percent-encoded as sent).
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

_GEMINI_MODEL_CALLS = ("generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents", "countTokens")

DEFAULT_ALLOW: dict[str, tuple[str, ...]] = {
    "openai": (
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "POST /v1/embeddings",
        "POST /v1/responses",
        "POST /v1/responses/input_tokens",
        "POST /v1/moderations",
        "POST /v1/audio/speech",
        "POST /v1/audio/transcriptions",
        "POST /v1/audio/translations",
        "POST /v1/images/generations",
        "POST /v1/images/edits",
        "POST /v1/images/variations",
        "POST /v1/rerank",
        "GET /v1/models",
        "GET /v1/models/*",
    ),
    "anthropic": (
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
        "POST /v1/complete",
        "GET /v1/models",
        "GET /v1/models/*",
    ),
    "gemini": tuple(
        rule
        for version in ("v1beta", "v1", "v1alpha")
        for rule in (
            *(f"POST /{version}/models/*:{method}" for method in _GEMINI_MODEL_CALLS),
            f"GET /{version}/models",
            f"GET /{version}/models/*",
        )
    ),
    "azure": (
        "POST /openai/deployments/*/chat/completions",
        "POST /openai/deployments/*/completions",
        "POST /openai/deployments/*/embeddings",
        "POST /openai/deployments/*/audio/speech",
        "POST /openai/deployments/*/audio/transcriptions",
        "POST /openai/deployments/*/audio/translations",
        "POST /openai/deployments/*/images/generations",
        "POST /openai/v1/chat/completions",
        "POST /openai/v1/completions",
        "POST /openai/v1/embeddings",
        "POST /openai/v1/responses",
        "GET /openai/v1/models",
        "GET /openai/models",
    ),
}
"""Model calls and the model list of each API family, as their SDKs send them."""


def check_rule(rule: str) -> str:
    """`rule` if it reads `METHOD /path`, else a ValueError saying what is wrong."""
    method, _, path = rule.partition(" ")
    if not method or not path.startswith("/") or " " in path or (method != "*" and not method.isalpha()):
        raise ValueError(f"an allow rule reads 'METHOD /path' (e.g. 'POST /v1/files', '* /**'), got {rule!r}")
    return rule


class Allowed:
    """The forwarding rules of one API family, matched segment by segment."""

    def __init__(self, rules: Iterable[str]) -> None:
        checked = (check_rule(rule).partition(" ") for rule in rules)
        self._parsed = [(method.upper(), path.split("/")) for method, _, path in checked]

    def __call__(self, method: str, path: str) -> bool:
        segments = path.split("/")
        return any((want == "*" or want == method) and _matches(pattern, segments) for want, pattern in self._parsed)


def _matches(pattern: list[str], segments: list[str]) -> bool:
    if pattern[-1] == "**":
        head = pattern[:-1]
        return len(segments) >= len(head) and all(map(fnmatchcase, segments, head))
    return len(segments) == len(pattern) and all(map(fnmatchcase, segments, pattern))


__all__ = ["DEFAULT_ALLOW", "Allowed", "check_rule"]
