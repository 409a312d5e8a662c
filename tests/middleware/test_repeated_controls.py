"""A cache control header sent on more than one line: a list-valued one (`Cache-Control`,
`x-cache-tags`) is every line's value, joined; a single-valued one (`x-cache-ttl`,
`x-cache-namespace`) is refused with a 400 naming it, before anything goes upstream. Never the last
line alone (which one a server or proxy keeps differs, so the cache and the caller could disagree)."""

from __future__ import annotations

import httpx2
import pytest

from llm_cache.middleware import Cache
from llm_cache.middleware._entry import unpack
from llm_cache.middleware._headers import CONTROL_HEADERS
from llm_cache.middleware.stores import MemoryStore
from tests.middleware.test_engine import AUTH, BODY, URL, Upstream, client


async def ask(http: httpx2.AsyncClient, *lines: tuple[str, str]) -> httpx2.Response:
    return await http.post(URL, json=BODY, headers=[*AUTH.items(), *lines])


async def test_x_cache_tags_on_two_lines_tag_the_entry_with_every_line() -> None:
    store = MemoryStore()
    cache = Cache(store=store)
    async with client(cache, Upstream()) as http:
        miss = await ask(http, ("x-cache-tags", "doc:1, doc:2"), ("X-Cache-Tags", "doc:3"))
        assert miss.status_code == 200
        tags = unpack(await store.get(miss.headers["x-cache-key"]) or b"").tags
        assert {"doc:1", "doc:2", "doc:3"} <= tags
        assert await cache.invalidate(["doc:1"]) == [miss.headers["x-cache-key"]]


async def test_the_tag_limit_counts_the_tags_of_every_line() -> None:
    upstream = Upstream()
    async with client(Cache(store=MemoryStore()), upstream) as http:
        lines = [("x-cache-tags", ",".join(f"t{line}-{n}" for n in range(9))) for line in range(2)]
        refused = await ask(http, *lines)
    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "x-cache-tags")
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("name", "values"),
    [("x-cache-ttl", ("60", "5")), ("x-cache-ttl", ("60", "60")), ("x-cache-namespace", ("a", "b"))],
    ids=["two-ttls", "one-ttl-twice", "two-namespaces"],
)
async def test_a_single_valued_control_sent_twice_is_a_400_naming_it(name: str, values: tuple[str, str]) -> None:
    upstream = Upstream()
    async with client(Cache(store=MemoryStore()), upstream) as http:
        refused = await ask(http, (name, values[0]), (name.upper(), values[1]))
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["param"], error["code"]) == (name, "cache_control_invalid")
    assert "more than once" in error["message"]
    assert upstream.requests == []


def test_every_control_header_the_engine_reads_is_either_joined_or_refused_when_repeated() -> None:
    assert CONTROL_HEADERS == {
        "cache-control": "list",
        "x-cache-tags": "list",
        "x-cache-ttl": "single",
        "x-cache-namespace": "single",
    }
