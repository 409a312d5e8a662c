from . import anthropic, gemini, openai
from .anthropic import Messages
from .audio import Transcriptions, Translations
from .base import Endpoint, RequestView, Route, StreamAssembler, Usage
from .bedrock import Converse, InvokeModel, InvokeModelStream
from .gemini import EmbedContent, GenerateContent
from .openai import ChatCompletions, Completions, Embeddings, Moderations, Responses
from .rerank import Rerank

DEFAULT_ENDPOINTS: tuple[Endpoint, ...] = (
    # ChatCompletions before Completions: `/chat/completions` also ends in `/completions`
    # (Completions refuses it too, so a custom order cannot go wrong).
    ChatCompletions(),
    Completions(),
    Responses(),
    Embeddings(),
    Messages(),
    GenerateContent(),
    EmbedContent(),
    InvokeModel(),
    InvokeModelStream(),
    Converse(),
    Moderations(),
    Transcriptions(),
    Translations(),
    Rerank(),
)

ACCOUNT_HEADERS: dict[str, frozenset[str]] = {
    "openai": openai.ANSWER_HEADERS.account,
    "azure": openai.ANSWER_HEADERS.account,
    "anthropic": anthropic.ANSWER_HEADERS.account,
    "gemini": gemini.ANSWER_HEADERS.account,
}
"""By gateway upstream family, the response headers naming the account billed for a call (each family's
`AnswerHeaders.account`): what a gateway spending its owner's key does not relay."""


def resolve(path: str, endpoints: tuple[Endpoint, ...] = DEFAULT_ENDPOINTS) -> Route | None:
    """The route of the first endpoint that owns `path` (no query string), or None."""
    for endpoint in endpoints:
        route = endpoint.match(path)
        if route is not None:
            return route
    return None


__all__ = ["DEFAULT_ENDPOINTS", "Endpoint", "RequestView", "Route", "StreamAssembler", "Usage", "resolve"]
