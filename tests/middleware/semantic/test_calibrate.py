"""Calibration: what each threshold would serve on labelled pairs, and which one meets a target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llm_cache.middleware.cli import main
from llm_cache.middleware.semantic.calibrate import meeting, read_pairs, report, table
from tests.support.fake_provider_fixtures import RunningFakeProvider

SIMILARITY = np.array([0.99, 0.95, 0.93, 0.91, 0.85, 0.80])
LABELS = np.array([1, 1, 0, 1, 0, 1])
GUARD = np.array([True, True, False, True, True, True])


def test_each_threshold_counts_what_it_would_serve_with_and_without_the_guard() -> None:
    rows = {(r.threshold, r.guard): r for r in table(SIMILARITY, GUARD, LABELS, (0.9, 0.8))}
    off, on = rows[0.9, False], rows[0.9, True]
    assert (off.served, off.right, off.wrong) == (4, 3, 1)
    assert (on.served, on.right, on.wrong) == (3, 3, 0)
    assert (off.precision, off.recall, off.wrong_rate) == (0.75, 0.75, 0.25)
    assert (rows[0.8, True].served, rows[0.8, True].wrong) == (5, 1)


def test_the_threshold_meeting_a_target_is_the_lowest_that_reaches_it() -> None:
    rows = table(SIMILARITY, GUARD, LABELS, (0.8, 0.9, 0.94))
    assert meeting(rows, 1.0, guard=True).threshold == 0.9  # type: ignore[union-attr]
    assert meeting(rows, 1.0, guard=False).threshold == 0.94  # type: ignore[union-attr]
    assert meeting(table(SIMILARITY, GUARD, LABELS, (0.999,)), 0.5, guard=False) is None  # serves nothing


def test_the_report_has_the_table_the_thresholds_and_a_histogram() -> None:
    text = report(["a"] * 6, ["a"] * 6, LABELS, SIMILARITY, 0.99)
    assert "6 pairs, 4 labelled 'same answer'" in text
    assert "Precision 0.990 with the guard off: threshold 0.94 (precision 1.000, recall 0.500)." in text
    assert " 0.95-1.00      2          0" in text
    assert " 0.90-0.95      1          1" in text


@pytest.mark.parametrize(
    ("line", "pair"),
    [
        ('{"a": "x", "b": "y", "label": 1}', ("x", "y", 1)),
        ('{"text_a": "x", "text_b": "y", "label": 0}', ("x", "y", 0)),
        ('{"sentence1": "x", "sentence2": "y", "label": true}', ("x", "y", 1)),
    ],
)
def test_pairs_are_read_in_the_usual_spellings(tmp_path: Path, line: str, pair: tuple[str, str, int]) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(line + "\n\n", encoding="utf-8")
    a, b, labels = read_pairs(path)
    assert (a[0], b[0], int(labels[0])) == pair


def test_a_line_without_a_label_is_named(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"a": "x", "b": "y", "label": 1}\n{"a": "x", "b": "y"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="pairs.jsonl:2"):
        read_pairs(path)


def test_llm_cache_calibrate_prints_the_report(
    tmp_path: Path, fake_provider: RunningFakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pairs.jsonl"
    pairs = [{"a": "reset my password", "b": "reset my password", "label": 1}]
    pairs += [{"a": "reset my password", "b": "delete my account", "label": 0}]
    path.write_text("\n".join(json.dumps(p) for p in pairs), encoding="utf-8")

    status = main(["calibrate", str(path), "--embedder-url", fake_provider.openai_base_url])

    out = capsys.readouterr().out
    assert status == 0
    assert "2 pairs, 1 labelled 'same answer'" in out
    assert "Precision 0.950 with the guard on: threshold 0.70" in out  # identical texts: similarity 1
    assert fake_provider.count("/embeddings") == 2


def test_llm_cache_calibrate_names_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("not json\n", encoding="utf-8")
    assert main(["calibrate", str(path)]) == 1
    assert "llm-cache:" in capsys.readouterr().err
