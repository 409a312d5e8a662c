"""Cross-family translation: a caller's request served by a deployment of another API family.

Each direction is one module exposing a ``Translation`` (request, answer, stream, error); the
router looks one up with ``find`` and never translates a request that a deployment speaks natively.
Pure functions and sans-I/O stream translators; ``http`` applies them to httpx messages.
"""

from __future__ import annotations

from . import anthropic_to_openai, http, openai_to_anthropic, openai_to_gemini
from .base import Outgoing, StreamTranslator, Translation, Unsupported, dumps
from .compose import compose
from .stream import TranslatedStream

#: (caller's API, deployment family) -> how to translate. Azure deployments speak OpenAI's chat API.
TRANSLATIONS: dict[tuple[str, str], Translation] = {
    ("openai", "anthropic"): openai_to_anthropic.TRANSLATION,
    ("openai", "gemini"): openai_to_gemini.TRANSLATION,
    ("anthropic", "openai"): anthropic_to_openai.TRANSLATION,
    ("anthropic", "azure"): anthropic_to_openai.TRANSLATION,
    ("anthropic", "gemini"): compose(anthropic_to_openai.TRANSLATION, openai_to_gemini.TRANSLATION),
}

#: The only endpoints translated, per caller API (embeddings, token counting, ... stay native).
CHAT_PATHS = {"openai": "/chat/completions", "anthropic": "/messages"}


def find(api: str, path: str, family: str) -> Translation | None:
    """The translation for a request of ``api`` at ``path`` to a ``family`` deployment, if there is one."""
    translation = TRANSLATIONS.get((api, family))
    if translation is None or not path.rstrip("/").endswith(CHAT_PATHS[api]):
        return None
    return translation


__all__ = [
    "Outgoing",
    "http",
    "StreamTranslator",
    "TRANSLATIONS",
    "TranslatedStream",
    "Translation",
    "Unsupported",
    "dumps",
    "find",
]
