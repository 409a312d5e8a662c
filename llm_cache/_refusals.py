"""Which of a provider's error answers refuse the credential itself, declared once per API family.

A wrong, revoked or expired key, or one without access, is refused before any work: on a key every
caller shares (a gateway's upstream key, a router deployment's own `api_key`) that refusal is the
operator's to fix, never the caller's fault. The gateway answers it with its own 502
(`middleware.gateway`); the router fails over from the deployment and, when it gives up, answers its
own 502 (`router._core`). Both read the rule here, the router on the deployment's own answer before
translating it for a caller of another family.

Neutral, like `_wire.py`: it imports neither `llm_cache.middleware` nor `llm_cache.router`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

REFUSAL = "llm_cache.credential_refused"
"""A response extension the router sets on its own 502 when a deployment refused a key every caller
shares: `(status, body)`, the provider's status and at most `READ` bytes of its words (untranslated),
for the gateway's operator log; the caller is told nothing of them."""

READ = 4096
"""The most of an answer's (decoded) body a rule reads: a credential refusal says so in its first
few hundred bytes, and the gateway reads no more of an answer before it decides to relay it."""


@dataclass(frozen=True, slots=True)
class CredentialRefusals:
    """Which of a family's error answers refuse the credential itself (wrong, revoked, expired, without
    access), as opposed to the request."""

    statuses: frozenset[int] = frozenset({401, 403})
    """The statuses such an answer may come with; any other is never one (and its body is never read)."""
    by_body: Callable[[int, Mapping[str, str], bytes], bool] | None = None
    """Whether an answer in `statuses` (its status, its headers, at most `READ` bytes of its body,
    decoded) refuses the credential. None: every answer in `statuses` does (OpenAI's and Anthropic's
    401 and 403)."""

    def refuse(self, status: int, headers: Mapping[str, str], body: bytes) -> bool:
        return status in self.statuses and (self.by_body is None or self.by_body(status, headers, body[:READ]))


def _object(body: bytes) -> dict[str, Any] | None:
    """The body's JSON object, or the first element of a JSON array (a Gemini JSON stream); else None."""
    try:
        found = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if isinstance(found, list) and found:
        found = found[0]
    return found if isinstance(found, dict) else None


STATUS = CredentialRefusals()
"""A 401 or a 403: OpenAI, Azure and Anthropic say no more than the status (a 403 names the owner's
project or permissions, not the caller's request)."""

_GEMINI_KEY_REASONS = frozenset({"API_KEY_INVALID"})
"""`google.rpc.ErrorInfo` reasons of a 400 that refuse the key itself (wrong, revoked or expired), not
the request: Google answers a bad key `400 INVALID_ARGUMENT`, as it answers a bad request."""


def _gemini_refuses(status: int, headers: Mapping[str, str], body: bytes) -> bool:
    """A 401 (an OAuth token refused) or a 403 (`PERMISSION_DENIED`: a key without access to the API or
    the model), or a 400 whose `error.details[]` holds an `ErrorInfo` whose `reason` is `API_KEY_INVALID`
    (`{"error": ...}`, or in a one-element array as a `:streamGenerateContent` JSON stream sends it)."""
    if status != 400:
        return True
    found = _object(body)
    error = found.get("error") if found is not None else None
    details = error.get("details") if isinstance(error, dict) else None
    if not isinstance(details, list):
        return False
    return any(isinstance(detail, dict) and detail.get("reason") in _GEMINI_KEY_REASONS for detail in details)


GEMINI = CredentialRefusals(frozenset({400, 401, 403}), _gemini_refuses)
"""Which Gemini answers refuse the credential (`_gemini_refuses`)."""

_AWS_CREDENTIAL_ERRORS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
        "IncompleteSignatureException",
        "InvalidClientTokenId",
        "AccessDeniedException",
    }
)
"""AWS error types that refuse the credential (a key id AWS does not know, a signature that does not
match, an expired session, a key without `bedrock:Invoke*`), not the request."""

AWS_ERROR_TYPE = "x-amzn-errortype"
"""The header an AWS service names its error's type in (`UnrecognizedClientException:http://...`)."""


def _aws_refuses(status: int, headers: Mapping[str, str], body: bytes) -> bool:
    """An answer whose error type (`x-amzn-ErrorType`, `UnrecognizedClientException:http://...`, or the
    body's `__type`) is one of `_AWS_CREDENTIAL_ERRORS`; a 401 or a 403 naming none too (a Bedrock API
    key, a Bearer token, refused by a front end that names no type)."""
    kind = headers.get(AWS_ERROR_TYPE)
    if kind is None:
        found = _object(body)
        kind = found.get("__type") if found is not None else None
    if not isinstance(kind, str):
        return status != 400
    return kind.partition(":")[0].rpartition("#")[2] in _AWS_CREDENTIAL_ERRORS


BEDROCK = CredentialRefusals(frozenset({400, 401, 403}), _aws_refuses)
"""Which Bedrock answers refuse the credential: AWS answers most with a 403, some (an incomplete
signature, an expired token on some front ends) with a 400; the error type says which."""

BY_FAMILY: Mapping[str, CredentialRefusals] = {
    "openai": STATUS,
    "azure": STATUS,
    "anthropic": STATUS,
    "gemini": GEMINI,
    "bedrock": BEDROCK,
}
"""By API family, which error answers refuse the credential."""


def rule_for(family: str, headers: Mapping[str, str]) -> CredentialRefusals:
    """The rule an answer from a `family` upstream is judged by. An answer that names an AWS error type
    (`x-amzn-ErrorType`) came from AWS whatever API it speaks (Bedrock's OpenAI-compatible endpoint
    behind an `openai` deployment): AWS's rule judges it, so its expired token's 400 is no request's."""
    if AWS_ERROR_TYPE in headers:
        return BEDROCK
    return BY_FAMILY.get(family, STATUS)


__all__ = [
    "AWS_ERROR_TYPE",
    "BEDROCK",
    "BY_FAMILY",
    "CredentialRefusals",
    "GEMINI",
    "READ",
    "REFUSAL",
    "STATUS",
    "rule_for",
]
