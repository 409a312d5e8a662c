"""`FairAges`, the table that decides which key a full table gives up (`semantic/_fair.py`): the
in-process index's rows, the bounded mode's served prompts and its per-answer records."""

from __future__ import annotations

from llm_cache.middleware.semantic._fair import FairAges
from tests.support.races import raced

BOUND = 50


def _fill(table: FairAges[str], owner: str, count: int) -> None:
    for n in range(count):
        table.add(owner, f"{owner}{n}")
        while len(table) > BOUND:
            table.remove(table.evictee())


def test_a_table_shared_by_threads_gives_up_the_largest_owners_keys_during_and_after() -> None:
    """The sync and async transports may share one semantic cache, so its tables are written from two
    threads at once. An owner's size and its bucket of owners of that size change together: unguarded,
    threads changing places between the two raised (a bucket gone, a bucket iterated while resized),
    and left owners in buckets of other sizes for good, so that an owner holding 18 keys was never the
    one to give way to a newcomer, who pushed out the others' keys instead."""
    table: FairAges[str] = FairAges()
    assert raced(lambda owner: _fill(table, owner, 50_000), "abcd") == []
    _fill(table, "newcomer", 1_000)  # alone now: it gives way once it holds as many as anyone

    held = {owner: table.owned(owner) for owner in ("a", "b", "c", "d", "newcomer")}
    assert sum(held.values()) == len(table) == BOUND
    assert max(held.values()) - min(held.values()) <= 1, held
