"""`llm_cache._log_limit.LogLimit`: a WARNING a caller could repeat at request rate is logged at once,
then at most once an interval per kind, saying how many were not."""

from __future__ import annotations

import logging

import pytest

from llm_cache._log_limit import MAX_KINDS, LogLimit

LOGGER = logging.getLogger("tests.log_limit")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_a_kind_is_logged_at_once_then_once_an_interval_with_the_count_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limit = LogLimit(LOGGER, interval=60.0, clock=clock)
    with caplog.at_level(logging.DEBUG, LOGGER.name):
        for _ in range(100):
            limit.warning("down", "redis %s is down", "r1")
        assert warnings(caplog) == ["redis r1 is down"]
        assert sum(record.levelno == logging.DEBUG for record in caplog.records) == 99  # still there at DEBUG
        clock.now += 59.9
        limit.warning("down", "redis %s is down", "r1")
        assert len(warnings(caplog)) == 1
        clock.now += 0.1
        limit.warning("down", "redis %s is down", "r1")
        limit.warning("down", "redis %s is down", "r1")
    assert warnings(caplog) == [
        "redis r1 is down",
        "redis r1 is down (100 more like it since the last such WARNING were logged at DEBUG)",
    ]


def test_one_kind_s_flood_never_hides_another_kind(caplog: pytest.LogCaptureFixture) -> None:
    limit = LogLimit(LOGGER, clock=Clock())
    with caplog.at_level(logging.WARNING, LOGGER.name):
        for _ in range(10):
            limit.warning("busy", "embedder busy")
        limit.warning("store", "store down")
    assert warnings(caplog) == ["embedder busy", "store down"]


def test_kinds_past_the_bound_share_one_allowance(caplog: pytest.LogCaptureFixture) -> None:
    limit = LogLimit(LOGGER, clock=Clock())
    with caplog.at_level(logging.WARNING, LOGGER.name):
        for kind in range(MAX_KINDS + 50):
            limit.warning(kind, "kind %d", kind)
    assert len(warnings(caplog)) == MAX_KINDS + 1
    assert len(limit._kinds) == MAX_KINDS + 1
