"""The relay of a miss's answer through its `Recorder`, the one rule every driver follows.

Sans-IO: the drivers read the upstream chunks and send them on; this says which bytes go on and
hands back the Recorder's coroutines to await (the sync transport runs them on the engine's loop).
The Recorder stores the answer as soon as its terminal event is seen (an SDK may stop reading
there and never close the stream), else at the end of the body; a failure stores nothing, and a
caller that closes the stream early stores only what the endpoint calls complete.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from ._recorder import Recorder

Work = Coroutine[Any, Any, Any]


class Relaying:
    """One answer on its way to the caller."""

    __slots__ = ("recorder", "ended")

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.ended = False
        """The body has ended, or the relay was given up: no chunk goes through the Recorder again."""

    def chunk(self, data: bytes) -> tuple[bytes, Work | None]:
        """The bytes to pass on for one upstream chunk, and the store to await now (the terminal event
        was recorded), if any."""
        recorder = self.recorder
        forward = recorder.feed(data)
        return forward, recorder.finish(exhausted=True) if recorder.complete else None

    def last(self, data: bytes = b"") -> bytes:
        """The bytes to pass on for the body's last chunk, the held-back tail included; then await
        `finished()`."""
        recorder = self.recorder
        return recorder.feed(data) + recorder.flush()

    def finished(self) -> Work:
        """The caller has read the whole body: store it."""
        self.ended = True
        return self.recorder.finish(exhausted=True)

    def closed(self) -> Work:
        """The caller closed the stream: store it only if it is complete."""
        self.ended = True
        return self.recorder.finish(exhausted=False)

    def abandoned(self, error: BaseException | None = None) -> Work | None:
        """The upstream failed (`error`) or the caller left before the body ended: store nothing."""
        if self.ended:
            return None
        self.ended = True
        return self.recorder.abort(error)


__all__ = ["Relaying", "Work"]
