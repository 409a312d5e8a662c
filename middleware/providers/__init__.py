from .base import Endpoint, RequestView, Route, StreamAssembler, Usage
from .openai import ChatCompletions

DEFAULT_ENDPOINTS: tuple[Endpoint, ...] = (ChatCompletions(),)


def resolve(path: str, endpoints: tuple[Endpoint, ...] = DEFAULT_ENDPOINTS) -> Route | None:
    """The route of the first endpoint that owns `path` (no query string), or None."""
    for endpoint in endpoints:
        route = endpoint.match(path)
        if route is not None:
            return route
    return None


__all__ = ["DEFAULT_ENDPOINTS", "Endpoint", "RequestView", "Route", "StreamAssembler", "Usage", "resolve"]
