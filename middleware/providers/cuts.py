"""How the provider cut a streamed answer into events, kept with its entry so that a streamed hit
sends the same events: as many, in the same order, each with the same fragment of text (or of
logprobs) and the same other fields.

A cut holds no text the stored answer holds already. Each event is kept as a template: the event
with its fragments (the pieces the stream's assembler joins: text, tool arguments, logprob entries)
left out and only their lengths kept, and with every larger value the answer holds whole (a completed
response, a finished item, a tool result) named by where the answer holds it. Equal templates are
kept once, so a stream of a thousand text deltas is a handful of templates and a list of numbers.
A replay walks that list and fills each template from the stored answer.

Which fields are fragments is the API family's knowledge (its provider module passes a `Positions`);
where each fragment's text is in the answer is found, not assumed: the joined fragments of one run
(a channel) are looked up among the answer's values, and a run not found there (an answer its
assembler normalised) is kept in the cut as it came. A replay is therefore exact whatever the
family's channels, only larger when they do not match the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson

from .. import _exact_json as exact_json
from .sse import encode_event

CUT_VERSION, FRAMED_VERSION = 1, 2
"""A framed cut (version 2) names each event by the bytes that came before it in the stream, and
ends in a raw event named by the stream's last bytes: Gemini's array form (`[`, `,` and `]` with
their whitespace), whose elements may be indented (`exact_json.INDENTED`). A release before framed
cuts refuses one (the hit synthesises its stream) rather than joining indented elements its way."""
FRAGMENT, WHOLE, NUMBER, PAD = 1, 2, 3, 4
"""Slot kinds: a fragment of a channel's text or list (its length in the sequence), a value the
answer holds whole, a number kept in the sequence (`sequence_number`), padding of a length (random
`obfuscation` characters, which describe nothing)."""
MIN_WHOLE = 8
"""The shortest value (packed bytes, or characters) named by its place in the answer rather than kept."""
MAX_CUT_OVERHEAD = 16 * 1024
"""A cut larger than its answer by more than this is not kept (the hit synthesises its stream)."""
MAX_REPLAY_FACTOR, MAX_REPLAY_EXTRA = 8, 64 * 1024
"""A replay is at most this many times its entry's size (answer and cut) and this many bytes more: a
stream repeats its answer's values a few times (Responses' done events, the completed response), a
cut read from a store that repeats them more is ignored."""
MAX_PADDING = 4096
"""The longest padding a replayed event carries (providers pad an event by tens of characters)."""
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
"""A replayed padding is a prefix of these (repeated): what Bedrock pads with, so its `p` is replayed as
sent; OpenAI's `obfuscation` is random characters, replayed at its length only."""

Key = str | int
Position = tuple[tuple[Key, ...], Hashable, int]
"""(where in an event: keys and list positions, the channel a fragment continues, the slot kind)."""
Positions = Callable[[dict[str, Any]], Iterable[Position]]
"""An API family's reading of one event: where its fragments, numbers and padding are."""
Event = tuple[str | None, bytes, Any]
"""A replayed event: (its SSE event name, its data as sent: compact JSON, or the raw text of a
non-JSON event like `[DONE]`, its template: the event with its slots, for a family to tell kinds apart)."""


class CutError(ValueError):
    """A cut that does not describe the answer it is stored with (or is not a cut)."""


@dataclass(frozen=True, slots=True)
class Slot:
    kind: int
    source: int = 0


class CutRecorder:
    """Records a stream's events as templates while its assembler reads them; `cut(answer)` is the
    cut of the complete stream, or None."""

    __slots__ = (
        "_channel_ids",
        "_channels",
        "_failed",
        "_framed",
        "_objects",
        "_positions",
        "_sequence",
        "_spellings",
        "_spelt_always",
        "_templates",
    )

    def __init__(self, positions: Positions, spelt_always: bool = False, framed: bool = False) -> None:
        """`spelt_always`: the cut names its spelling even when compact, a fifth element the releases
        before spellings were kept refuse (they synthesise the stream): for a cut whose events they
        would read as another form's (Bedrock's whole `chunk` payloads, where they kept bare events).
        `framed`: a `FRAMED_VERSION` cut, whose event names are the stream's bytes between events and
        whose events may be spelt on several lines (indented)."""
        self._positions = positions
        self._spelt_always = spelt_always
        self._framed = framed
        self._templates: dict[bytes, int] = {}
        self._objects: list[list[Any]] = []
        self._sequence: list[int] = []
        self._channels: list[list[Any]] = []
        self._channel_ids: dict[Hashable, int] = {}
        self._failed = False
        self._spellings = exact_json.SPELLINGS if framed else exact_json.LINE_SPELLINGS

    @property
    def spelling(self) -> int:
        """The spelling every event recorded so far was written in (compact when none; of several that
        all fit, the one writing characters outside ASCII as they are, as the cut keeps it)."""
        return min(self._spellings, default=exact_json.COMPACT)

    def fail(self) -> None:
        """The stream has something the cut cannot keep: it keeps none (its hits synthesise)."""
        self._failed = True

    def event(self, name: str | None, data: str | bytes, event: dict[str, Any] | None) -> None:
        """One event as the stream sent it: `event` is its parsed data, None when not a JSON object;
        `data` its JSON text as sent, whose spelling the replay keeps ("" when the family's stream
        is spelt compact, or its form's spelling is not an event's: each replays compact)."""
        if self._failed:
            return
        if data and event is not None and self._spellings:
            raw = data.encode() if isinstance(data, str) else data
            self._spellings = exact_json.spellings_of(raw, exact_json.dumps(event), self._spellings)
        values: list[int] = []
        try:
            marks = _trie(self._positions(event)) if event is not None else None
            body = data if event is None else self._template(event, marks, values) if marks else event
            template = [name, body]
            packed = msgpack.packb(template, default=_pack_slot)
        except (TypeError, ValueError, OverflowError):  # a value msgpack cannot carry: no cut
            self._failed = True
            return
        number = self._templates.get(packed)
        if number is None:
            number = self._templates[packed] = len(self._objects)
            self._objects.append(template)
        self._sequence.append(number)
        self._sequence.extend(values)

    def _template(self, node: Any, marks: Any, values: list[int]) -> Any:
        if isinstance(marks, tuple):
            return self._slot(node, marks, values)
        if isinstance(node, dict):
            return {k: self._template(v, marks[k], values) if k in marks else v for k, v in node.items()}
        if isinstance(node, list):
            return [self._template(v, marks[i], values) if i in marks else v for i, v in enumerate(node)]
        return node

    def _slot(self, value: Any, mark: tuple[int, Hashable], values: list[int]) -> Any:
        kind, channel = mark
        if kind == NUMBER:
            if type(value) is not int:
                return value
            values.append(value)
            return Slot(NUMBER)
        if not isinstance(value, (str, list)) or (kind == PAD and not isinstance(value, str)):
            return value
        if kind == PAD:
            values.append(len(value))
            return Slot(PAD)
        number = self._channel_ids.get(channel)
        if number is None:
            number = self._channel_ids[channel] = len(self._channels)
            self._channels.append([value])
        elif type(self._channels[number][0]) is not type(value):
            return value  # a channel of text and lists: this piece is kept as it came
        else:
            self._channels[number].append(value)
        values.append(len(value))
        return Slot(FRAGMENT, number)

    def cut(self, answer: bytes) -> bytes | None:
        """The cut of the recorded stream, whose assembled answer is `answer`; None when it cannot be
        kept (a value msgpack cannot carry, or larger than the answer by `MAX_CUT_OVERHEAD`)."""
        if self._failed or not self._objects:
            return None
        try:
            index = _Index(exact_json.loads_spelt(answer))
            sources: list[list[Any]] = [index.source(_joined(pieces)) for pieces in self._channels]
            templates = [[name, index.wholes(body, sources)] for name, body in self._objects]
            cut = [FRAMED_VERSION if self._framed else CUT_VERSION, sources, templates, self._sequence]
            spelling = self.spelling
            if spelling != exact_json.COMPACT or self._spelt_always:
                cut.append(spelling)  # (a cut without it is spelt compact, as before spellings were kept)
            packed: bytes = msgpack.packb(cut, default=_pack_slot)
        except (TypeError, ValueError, OverflowError):
            return None
        return packed if len(packed) <= len(answer) + MAX_CUT_OVERHEAD else None


def _trie(positions: Iterable[Position]) -> dict[Key, Any] | None:
    """The positions as nested dicts, ending in (kind, channel) tuples."""
    root: dict[Key, Any] = {}
    for path, channel, kind in positions:
        node = root
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = (kind, channel)
    return root or None


def _joined(pieces: list[Any]) -> Any:
    if isinstance(pieces[0], str):
        return "".join(pieces)
    return [item for piece in pieces for item in piece]


_NUMBER_TEXT = 5
"""The ext code of a number a double cannot carry (`orjson.Fragment`, as `exact_json` reads one), kept
as its text."""


def _pack_slot(value: object) -> msgpack.ExtType:
    if isinstance(value, Slot):
        return msgpack.ExtType(value.kind, msgpack.packb(value.source))
    if isinstance(value, orjson.Fragment):
        return msgpack.ExtType(_NUMBER_TEXT, orjson.dumps(value))
    raise TypeError(f"cannot pack {type(value).__name__}")


def _unpack_slot(code: int, data: bytes) -> Slot | orjson.Fragment:
    if code == _NUMBER_TEXT:
        return orjson.Fragment(data)
    source = msgpack.unpackb(data)
    if code not in (FRAGMENT, WHOLE, NUMBER, PAD) or type(source) is not int:
        raise CutError("unknown slot")
    return Slot(code, source)


# Sources: where a channel's text (or a whole value) is: at a path in the answer, as the JSON of the
# object at a path (spaced as Anthropic streams tool input, or compact), or kept in the cut.
_AT, _SPACED_JSON, _COMPACT_JSON, _KEPT = 0, 1, 2, 3


class _Index:
    """The answer's values by content, to find where a channel's text or a template's value is."""

    def __init__(self, answer: Any) -> None:
        self._answer = answer
        self._strings: dict[str, list[Key]] = {}
        self._packed: dict[bytes, list[Key]] = {}
        self._objects: list[tuple[list[Key], dict[str, Any]]] = []
        self._walk(answer, [])
        self._wholes: dict[tuple[Key, ...], int] = {}

    def _walk(self, node: Any, path: list[Key]) -> None:
        if isinstance(node, str):
            self._strings.setdefault(node, path)
            return
        if not isinstance(node, (dict, list)):
            return
        with suppress(TypeError, ValueError, OverflowError):  # a value msgpack cannot carry: found by no template
            self._packed.setdefault(msgpack.packb(node, default=_pack_slot), path)
        if isinstance(node, dict):
            self._objects.append((path, node))
            for key, value in node.items():
                self._walk(value, [*path, key])
        else:
            for position, value in enumerate(node):
                self._walk(value, [*path, position])

    def source(self, joined: Any) -> list[Any]:
        """Where a channel's joined fragments are in the answer (kept in the cut when nowhere)."""
        if isinstance(joined, str):
            path = self._strings.get(joined)
            if path is not None:
                return [_AT, path]
            for path, value in self._objects:
                if exact_json.dumps_spaced(value) == joined:
                    return [_SPACED_JSON, path]
                if exact_json.dumps(value).decode() == joined:
                    return [_COMPACT_JSON, path]
            return [_KEPT, joined]
        path = self._packed.get(msgpack.packb(joined, default=_pack_slot))
        return [_KEPT, joined] if path is None else [_AT, path]

    def wholes(self, node: Any, sources: list[list[Any]]) -> Any:
        """`node` with each value the answer holds whole (of `MIN_WHOLE` or more) named by its place."""
        if isinstance(node, str):
            path = self._strings.get(node) if len(node) >= MIN_WHOLE else None
            return node if path is None else self._whole(path, sources)
        if not isinstance(node, (dict, list)):
            return node
        packed = msgpack.packb(node, default=_pack_slot)  # (a template's slots pack as no answer's value)
        path = self._packed.get(packed) if len(packed) >= MIN_WHOLE else None
        if path is not None:
            return self._whole(path, sources)
        if isinstance(node, dict):
            return {key: self.wholes(value, sources) for key, value in node.items()}
        return [self.wholes(value, sources) for value in node]

    def _whole(self, path: list[Key], sources: list[list[Any]]) -> Slot:
        number = self._wholes.get(tuple(path))
        if number is None:
            number = self._wholes[tuple(path)] = len(sources)
            sources.append([_AT, path])
        return Slot(WHOLE, number)


def replay(cut: bytes, answer: bytes) -> list[Event]:
    """The events of the stream `cut` describes, filled from its stored `answer`. Raises CutError
    when the cut does not fit the answer (every fragment must lie within, and use up, its source).

    Each template is written out once per replay, its slots left as gaps: an event is its template's
    bytes with each gap's value written in (no event is built as an object, then encoded)."""
    try:
        version, sources, templates, sequence, *rest = msgpack.unpackb(cut, ext_hook=_unpack_slot)
        if version not in (CUT_VERSION, FRAMED_VERSION):
            raise CutError("cut of another version")
        spelling = rest[0] if rest else exact_json.COMPACT
        known = exact_json.SPELLINGS if version == FRAMED_VERSION else exact_json.LINE_SPELLINGS
        if len(rest) > 1 or spelling not in known:
            raise CutError("unknown spelling")
        whole = exact_json.loads_spelt(answer)
        filler = _Filler([_value(whole, source) for source in sources], sequence)
        budget = MAX_REPLAY_FACTOR * (len(answer) + len(cut)) + MAX_REPLAY_EXTRA
        compiled = [(name, filler.wholes(_compiled(body), budget), body) for name, body in templates]
        events: list[Event] = []
        for name, parts, shape in filler.templates(compiled):
            data = filler.fill(parts)
            if spelling and not isinstance(shape, str):  # (a raw event, like `[DONE]`, is as it came)
                data = exact_json.spelt(data, spelling)
            budget -= len(data)
            if budget < 0:  # a cut no stream of this answer has: its values many times over
                raise CutError("a replay larger than its entry allows")
            events.append((name, data, shape))
        filler.check()
    except CutError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, StopIteration) as error:
        raise CutError(f"unreadable cut ({type(error).__name__})") from error
    return events


_GAP = re.compile(rb'"\\u0000(\d+)\\u0000"')
"""A slot's place in a template's JSON: the string `"\\u0000{n}\\u0000"` put there for it."""


def _compiled(body: Any) -> list[bytes | Slot]:
    """A template's data as bytes with the gaps its slots leave, in order (a raw event: its text)."""
    if isinstance(body, str):
        return [body.encode()]
    slots: list[Slot] = []
    data = exact_json.dumps(_marked(body, slots))
    parts: list[bytes | Slot] = []
    last = 0
    for number, gap in enumerate(_GAP.finditer(data)):
        if number >= len(slots) or int(gap.group(1)) != number:  # a literal that reads as a gap
            raise CutError("a template's text holds a slot's mark")
        parts += (data[last : gap.start()], slots[number])
        last = gap.end()
    if len(parts) != 2 * len(slots):
        raise CutError("a template's slot left no gap")
    parts.append(data[last:])
    return parts


def _marked(node: Any, slots: list[Slot]) -> Any:
    if type(node) is Slot:
        slots.append(node)
        return f"\x00{len(slots) - 1}\x00"
    if isinstance(node, dict):
        return {key: _marked(value, slots) for key, value in node.items()}
    if isinstance(node, list):
        return [_marked(value, slots) for value in node]
    return node


def _value(answer: Any, source: list[Any]) -> Any:
    kind, payload = source
    if kind == _KEPT:
        return payload
    node = answer
    for key in payload:
        node = node[key]
    if kind == _SPACED_JSON:
        return exact_json.dumps_spaced(node)
    if kind == _COMPACT_JSON:
        return exact_json.dumps(node).decode()
    return node


class _Filler:
    """Fills templates in sequence order, each fragment the next piece of its source."""

    __slots__ = ("_compiled", "_cursors", "_numbers", "_sources", "_written")

    def __init__(self, sources: list[Any], sequence: list[int]) -> None:
        self._compiled = 0  # bytes of the templates written out (`wholes`)
        self._sources = sources
        self._written: list[bytes | None] = [None] * len(sources)
        self._cursors = [0] * len(sources)
        self._numbers = iter(sequence)

    def templates(self, templates: list[Any]) -> Iterable[Any]:
        for number in self._numbers:
            yield templates[number]

    def wholes(self, parts: list[bytes | Slot], budget: int) -> list[bytes | Slot]:
        """`parts` with the values the answer holds whole written in (the same in every event). The
        templates written so far hold at most `budget` bytes, counted before any is joined: a cut
        naming the answer many times in one template is refused before it is written."""
        merged: list[bytes | Slot] = []
        run: list[bytes] = []  # bytes to join, once, into one part
        for part in parts:
            if type(part) is Slot and part.kind == WHOLE:
                part = self._slot(part)
            if type(part) is bytes:
                self._compiled += len(part)
                if self._compiled > budget:
                    raise CutError("a replay larger than its entry allows")
                run.append(part)
                continue
            if run:
                merged.append(b"".join(run))
                run = []
            merged.append(part)
        if run:
            merged.append(b"".join(run))
        return merged

    def fill(self, parts: list[bytes | Slot]) -> bytes:
        if len(parts) == 1:
            return parts[0]  # type: ignore[return-value]
        if len(parts) == 3:  # one gap, as most events have (a fragment of text)
            return parts[0] + self._slot(parts[1]) + parts[2]  # type: ignore[operator, arg-type]
        out = []
        for part in parts:
            out.append(part if type(part) is bytes else self._slot(part))  # type: ignore[arg-type]
        return b"".join(out)  # type: ignore[arg-type]

    def _slot(self, slot: Slot) -> bytes:
        if slot.kind == WHOLE:
            written = self._written[slot.source]
            if written is None:
                written = self._written[slot.source] = exact_json.dumps(self._sources[slot.source])
            return written
        size = next(self._numbers)
        if slot.kind == NUMBER:
            return b"%d" % size
        if slot.kind == PAD:
            if size > MAX_PADDING:
                raise CutError("padding longer than a provider's")
            return exact_json.dumps((_PADDING * (size // len(_PADDING) + 1))[:size])
        source = self._sources[slot.source]
        start = self._cursors[slot.source]
        piece = source[start : start + size]
        if len(piece) != size:
            raise CutError("a fragment beyond its source")
        self._cursors[slot.source] = start + size
        return exact_json.dumps(piece)

    def check(self) -> None:
        """Every fragment source was used up (whole values are not cut)."""
        for number, cursor in enumerate(self._cursors):
            if cursor and cursor != len(self._sources[number]):
                raise CutError("a source not used up")


def encode_sse(events: Iterable[Event]) -> bytes:
    """The events as server-sent events, each with its name if it had one."""
    return b"".join(encode_event(data, name) for name, data, _ in events)
