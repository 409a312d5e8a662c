"""Hypothesis strategies shared by the stream property tests: text, names, cuts, and JSON objects
whose numbers a careless parser would change.

Numbers a double cannot carry (integers beyond 64 bits, decimals with more digits than a double
holds) are `orjson.Fragment`s of their literal text, so `orjson.dumps` writes them as given; the
tests compare documents with `lossless`, which reads every number exactly.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import strategies as st

from llm_cache.middleware.providers import Endpoint, RequestView

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=24)
names = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)
ids = st.from_regex(r"[A-Za-z0-9]{4,10}", fullmatch=True)

WIDE_NUMBERS = st.one_of(
    st.integers(min_value=2**64, max_value=10**40).map(lambda n: orjson.Fragment(str(n))),
    st.integers(min_value=-(10**40), max_value=-(2**63) - 1).map(lambda n: orjson.Fragment(str(n))),
    st.from_regex(r"-?[1-9][0-9]{0,3}\.[0-9]{17,30}", fullmatch=True).map(orjson.Fragment),
    st.from_regex(r"[1-9]\.[0-9]{1,20}[eE][+-]?[1-9][0-9]{2}", fullmatch=True).map(orjson.Fragment),
)
"""Number tokens a double does not carry exactly (or at all): integers beyond 64 bits, decimals of
17 or more digits, exponents beyond a double's range."""
NUMBERS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), WIDE_NUMBERS)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | NUMBERS | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=6,
)
JSON_OBJECTS = st.dictionaries(names, JSON_VALUES, max_size=4)
"""Tool inputs and function arguments: objects of any JSON, numbers included."""


def pieces(draw: st.DrawFn, text: str, most: int = 3) -> list[str]:
    """`text` cut at up to `most` random places (at least one piece, possibly empty)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=most)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)] or [""]


def byte_pieces(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut at up to eight random places: how the network may deliver a stream."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def lossless(data: bytes | str) -> Any:
    """A JSON document with every number read exactly (integers as `int`, decimals as `Decimal`)."""
    return json.loads(data, parse_float=Decimal)


def dumps(value: Any) -> bytes:
    """JSON of `value`, its `orjson.Fragment` numbers written as given."""
    return orjson.dumps(value)


def assembled(endpoint: Endpoint, request: RequestView, cut: list[bytes]) -> bytes:
    """What `endpoint`'s assembler makes of a stream delivered in `cut` pieces (it must complete).
    As the transports do, it is read no further once the assembler says the stream is complete."""
    assembler = endpoint.assembler(request)
    for piece in cut:
        assembler.feed(piece)
        if assembler.complete:
            break
    result = assembler.result()
    assert result is not None, "the stream did not assemble"
    return result
