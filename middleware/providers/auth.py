"""Which credential each API family authenticates: the fact the cache scopes entries by.

A request's identity is the credential its provider checks, read from the places that family
reads it (a header, Gemini's `key=` query parameter). When a request carries the credential in
more than one of them with different values, or repeats a credential header, the cache cannot
tell which one the provider will use, so it has no identity: `AmbiguousCredential`.

This module is neutral: it imports nothing else from the package.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

_SIGV4 = "AWS4-HMAC-SHA256 "
_SIGV4_KEY_ID = re.compile(r"Credential=([^/,\s]+)/")


class AmbiguousCredential(ValueError):
    """The request names more than one credential (or one header twice): its identity is unknown."""


@dataclass(frozen=True, slots=True)
class Auth:
    """Where one API family carries the credential the provider authenticates.

    `headers` are read in order; `authorization` holds a `Bearer` token (or a SigV4 signature,
    whose access key id and session token are the credential, not the per-request signature).
    `query` names a query parameter that carries the credential (Gemini's `key`).
    """

    headers: tuple[str, ...]
    query: str | None = None

    def credential(self, headers: Mapping[str, str], query: str, repeated: Collection[str] = ()) -> str | None:
        """The credential, or None when the request carries none (or only empty ones).

        Raises `AmbiguousCredential` when a credential header appears more than once (`repeated`
        names the headers that did) or two places carry different credentials."""
        found: str | None = None
        for name in self.headers:
            value = headers.get(name)
            if name in repeated:
                raise AmbiguousCredential(f"the {name} header appears more than once")
            if value and name == "authorization":  # inline: this runs on every request
                value = value[7:].strip() if value[:7].lower() == "bearer " else _other_scheme(value, headers)
            if not value:
                continue
            if found is not None and value != found:
                raise AmbiguousCredential(f"two different credentials ({', '.join(self.sources)})")
            found = value
        if self.query is not None and f"{self.query}=" in query:
            values = {value for name, value in parse_qsl(query) if name == self.query and value}
            if len(values) > 1 or (values and found is not None and found not in values):
                raise AmbiguousCredential(f"two different credentials ({', '.join(self.sources)})")
            if values:
                found = values.pop()
        return found or None

    @property
    def sources(self) -> tuple[str, ...]:
        return self.headers + ((f"{self.query}=",) if self.query else ())


def _other_scheme(value: str, headers: Mapping[str, str]) -> str:
    """The credential in a non-Bearer `authorization` value: SigV4's key id and session token, or
    the whole value for any other scheme."""
    if value.startswith(_SIGV4):  # the signature changes on every request, the key id does not
        found = _SIGV4_KEY_ID.search(value)
        if found is None:
            return value
        # A temporary credential's session token is secret; a long-term key id alone is not.
        return f"aws:{found.group(1)}:{headers.get('x-amz-security-token') or ''}"
    return value


OPENAI = Auth(("authorization",))
"""OpenAI and OpenAI-compatible servers: `Authorization: Bearer <key>`."""
AZURE = Auth(("api-key", "authorization"))
"""Azure OpenAI: `api-key`, or `Authorization: Bearer` with a Microsoft Entra token."""
ANTHROPIC = Auth(("x-api-key", "authorization"))
"""Anthropic: `x-api-key`, or `Authorization: Bearer` with an OAuth token (the SDK's `auth_token`)."""
GEMINI = Auth(("x-goog-api-key", "authorization"), query="key")
"""Gemini: `x-goog-api-key` or `?key=`, or `Authorization: Bearer` with an OAuth token (Vertex AI)."""
BEDROCK = Auth(("authorization",))
"""Bedrock: a SigV4 signature (access key id and session token), or a Bedrock API key as a Bearer token."""

__all__ = ["ANTHROPIC", "AZURE", "BEDROCK", "GEMINI", "OPENAI", "AmbiguousCredential", "Auth"]
