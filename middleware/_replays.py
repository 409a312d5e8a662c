"""The events of streamed hits, made once per entry: a hot streamed answer replays from memory."""

from __future__ import annotations

import logging

from ._entry import Entry
from .providers import cuts

logger = logging.getLogger("llm_cache.middleware")


class ReplayMemo:
    """A kept cut's events (`cuts.replay`) by the entry they replay, so that each hit on a hot entry
    only frames them (`Endpoint.render_events`). Bounded like the engine's other memos (it starts
    over when full, by count or by bytes); a replay larger than a 64th of the budget is made each time.
    Keyed as the JSON heads are: an entry is its fingerprint and the time it was stored."""

    def __init__(self, max_entries: int = 1024, max_bytes: int = 8 * 1024 * 1024) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._events: dict[tuple[str, float], list[cuts.Event]] = {}
        self._bytes = 0

    def events(self, entry: Entry) -> list[cuts.Event] | None:
        """The events a streamed hit of `entry` sends, or None: it holds no cut (filled by a JSON answer,
        or stored before cuts were kept), or one that does not fit its answer: the hit synthesises them."""
        if entry.cut is None:
            return None
        key = (entry.fingerprint, entry.created_at)
        found = self._events.get(key)
        if found is not None:
            return found or None
        try:
            found = cuts.replay(entry.cut, entry.body)
        except cuts.CutError:
            logger.debug("a stream cut that does not fit its answer", exc_info=True)
            found = []  # remembered too: the synthesis is served each time, the cut is not read again
        size = len(entry.body) + len(entry.cut)
        if size <= self._max_bytes // 64:
            if len(self._events) >= self._max_entries or self._bytes + size > self._max_bytes:
                self._events = {}
                self._bytes = 0
            self._events[key] = found
            self._bytes += size
        return found or None
