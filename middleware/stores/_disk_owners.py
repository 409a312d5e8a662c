"""The disk store's eviction, fair between the keys' owners: a full store gives up the least recently
used entries of the owner holding the most bytes, as `MemoryStore` does (`_tenants.py`).

diskcache evicts inside SQLite, in the writer's transaction, by an eviction policy: a named set of SQL
fragments in its public `EVICTION_POLICY` table. `FAIR_LRU` is one more (`fair_policy` registers it):
reads stamp `access_time` as `least-recently-used` does, and a cull takes the oldest rows of the owner
the `LlmcOwners` table names as holding the most bytes. Each row carries its owner in diskcache's `tag` column
(`_keys.key_owner`; the empty owner as NULL); triggers keep each owner's bytes (the value file's size,
or the value's length when SQLite holds it) and entries in step with every insert, update and delete,
in the same transaction, so every process sharing the folder sees one tally. A folder written before
this rule is tallied once, when a process first opens it (its rows are the empty owner's).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import diskcache

FAIR_LRU = "llmc-fair-least-recently-used"

_LARGEST = "SELECT owner FROM LlmcOwners ORDER BY bytes DESC LIMIT 1"
_ROW_BYTES = "{row}.size + coalesce(length({row}.value), 0)"

_POLICY = {
    "init": "CREATE INDEX IF NOT EXISTS Cache_tag_access_time ON Cache (tag, access_time)",
    "get": "access_time = {now}",
    "cull": f"SELECT {{fields}} FROM Cache WHERE tag IS nullif(({_LARGEST}), '') ORDER BY access_time LIMIT ?",
}


def fair_policy() -> str:
    """The name of `FAIR_LRU`, registered in diskcache's `EVICTION_POLICY` table first if it is not yet.

    The table is diskcache's own global: a `Cache` reads its policy's SQL there by name, at open, on
    every read and on every cull, and offers no other place to give it. So the policy is registered
    when a `DiskStore` first opens a folder (never at import: importing the library leaves diskcache as
    it was), under a name no other policy takes, and never replaced (a second registration is a no-op).
    """
    diskcache.EVICTION_POLICY.setdefault(FAIR_LRU, _POLICY)
    return FAIR_LRU


_ADD = (
    "INSERT INTO LlmcOwners VALUES (coalesce(NEW.tag, ''), " + _ROW_BYTES.format(row="NEW") + ", 1)"
    " ON CONFLICT (owner) DO UPDATE SET bytes = bytes + excluded.bytes, entries = entries + 1;"
)
_TAKE = (
    "UPDATE LlmcOwners SET bytes = bytes - (" + _ROW_BYTES.format(row="OLD") + "), entries = entries - 1"
    " WHERE owner = coalesce(OLD.tag, '');"
    " DELETE FROM LlmcOwners WHERE owner = coalesce(OLD.tag, '') AND entries <= 0;"
)
_SCHEMA = (
    "CREATE TABLE LlmcOwners (owner TEXT PRIMARY KEY, bytes INTEGER NOT NULL, entries INTEGER NOT NULL)",
    "CREATE INDEX LlmcOwners_bytes ON LlmcOwners (bytes)",
    "INSERT INTO LlmcOwners SELECT coalesce(tag, ''), sum(" + _ROW_BYTES.format(row="Cache") + "), count(*)"
    " FROM Cache GROUP BY 1",
    f"CREATE TRIGGER LlmcOwners_insert AFTER INSERT ON Cache BEGIN {_ADD} END",
    f"CREATE TRIGGER LlmcOwners_delete AFTER DELETE ON Cache BEGIN {_TAKE} END",
    f"CREATE TRIGGER LlmcOwners_update AFTER UPDATE OF tag, size, value ON Cache BEGIN {_TAKE} {_ADD} END",
)


def tally_owners(database: Path) -> None:
    """Give the diskcache database at `database` (its `Cache` table made) the owners' tally and its
    triggers, once: in one transaction that holds the write lock, so two processes opening a folder
    together tally it once."""
    connection = sqlite3.connect(database, timeout=60, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            made = connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'LlmcOwners'").fetchone()
            if made is None:
                for statement in _SCHEMA:
                    connection.execute(statement)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    finally:
        connection.close()


def owner_tag(owner: str) -> str | None:
    """The `tag` a row of `owner` is written with (the empty owner's is NULL, as rows written before)."""
    return owner or None
