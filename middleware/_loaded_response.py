"""httpx and httpx2 responses whose body is already in memory, built without reading it back.

`Response(content=...)` reads its own body back through the content decoders before it returns,
which is most of the ~10 µs it costs. The cache's own answers (hits, rejections) hold the final,
unencoded bytes, so the response is built on them and left in the state `read()` leaves it in:
content loaded, stream consumed, closed. `tests/middleware/test_loaded_response.py` pins that
state against `Response(content=...)` for both libraries.
"""

from __future__ import annotations

from typing import Any


def loaded_response(lib: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    """`lib.Response(status, headers=headers, content=body)`, as read; `headers` must carry `content-length`."""
    response = lib.Response(status, headers=headers, stream=lib.ByteStream(body))
    response._content = body
    response.is_stream_consumed = True
    response.is_closed = True
    return response
