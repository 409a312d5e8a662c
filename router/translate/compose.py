"""Two translations in a row through OpenAI's chat format: Anthropic callers served by Gemini deployments.

Each half is a tested translation; the request goes through both, the answer and the stream come
back through both (a stream event by event: one translator feeds the next). A field the second
half refuses is named as the OpenAI chat field it became, which the refusal says.
"""

from __future__ import annotations

from typing import Any

from .base import Outgoing, Translation, Unsupported


def compose(first: Translation, second: Translation) -> Translation:
    """``first`` (caller -> middle) then ``second`` (middle -> target), ``second.source == first.target``."""

    def request(doc: dict[str, Any], model: str, stream: bool, drop: bool) -> Outgoing:
        middle = first.request(doc, model, stream, drop)
        try:
            out = second.request(middle.body, model, stream, drop)
        except Unsupported as refused:
            raise Unsupported(refused.params, second.target, became=first.target) from None
        return Outgoing(out.path, out.body, middle.dropped + out.dropped, out.headers, out.query)

    def response(body: bytes, caller: dict[str, Any]) -> bytes:
        return first.response(second.response(body, _middle(caller)), caller)

    def error(status: int, body: bytes) -> bytes:
        return first.error(status, second.error(status, body))

    def stream(caller: dict[str, Any]) -> Chained:
        return Chained(second.stream(_middle(caller)), first.stream(caller))

    def _middle(caller: dict[str, Any]) -> dict[str, Any]:
        """The caller's request in the middle format, for what the second half reads (stream options)."""
        return first.request(caller, "", True, True).body

    return Translation(first.source, second.target, request, response, stream, error)


class Chained:
    """Two stream translators in a row."""

    def __init__(self, inner: Any, outer: Any) -> None:
        self.inner, self.outer = inner, outer

    def feed(self, chunk: bytes) -> bytes:
        middle = self.inner.feed(chunk)
        return self.outer.feed(middle) if middle else b""

    def end(self) -> bytes:
        return self.outer.feed(self.inner.end()) + self.outer.end()


__all__ = ["Chained", "compose"]
