"""The events of streamed hits, made once per entry: a hot streamed answer replays from memory."""

from __future__ import annotations

import logging

from ._entry import Entry
from ._memo import BoundedMemo
from .providers import cuts
from .providers.base import Endpoint

logger = logging.getLogger("llm_cache.middleware")


class ReplayMemo:
    """A kept cut's events (`cuts.replay`) by the entry they replay, so that each hit on a hot entry
    only frames them (`Endpoint.render_events`). Bounded like the engine's other memos. Keyed as the
    JSON heads are: an entry is its fingerprint, the time it was stored and its answer's length (an
    entry rewritten under both with another answer, in a store someone else can write, is replayed
    as it now is, not as the events made of the first)."""

    def __init__(self, max_entries: int = 1024, max_bytes: int = 8 * 1024 * 1024) -> None:
        self._events: BoundedMemo[tuple[str, float, int], list[cuts.Event]] = BoundedMemo(max_entries, max_bytes)

    def events(self, entry: Entry, endpoint: Endpoint) -> list[cuts.Event] | None:
        """The events a streamed hit of `entry` sends (made ready by its `endpoint`), or None: it holds
        no cut (filled by a JSON answer, or stored before cuts were kept), or one that does not fit its
        answer: the hit synthesises them."""
        if entry.cut is None:
            return None
        key = (entry.fingerprint, entry.created_at, len(entry.body))
        found = self._events.get(key)
        if found is None:
            try:
                found = endpoint.replayed_events(cuts.replay(entry.cut, entry.body))
            except cuts.CutError:
                logger.debug("a stream cut that does not fit its answer", exc_info=True)
                found = []  # remembered too: the synthesis is served each time, the cut is not read again
            self._events.put(key, found, len(entry.body) + len(entry.cut))
        return found or None
