"""examples/render_dashboard.py: its PromQL subset reads every dashboard panel and computes what Prometheus would."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_dashboard", ROOT / "examples" / "render_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


render = _load()


def scrapes(*texts: str, step: float = 1.0) -> object:
    found = render.Scrapes()
    for i, text in enumerate(texts):
        found.add(1000.0 + i * step, text)
    found.zero_fill_counters()
    return found


def at(expr: str, data: object, i: int, window: float = 2.0) -> object:
    return render.evaluate(render.parse(render.substitute(expr, window, 10.0)), data, i)


def test_every_panel_query_of_the_dashboard_parses() -> None:
    dashboard = json.loads((ROOT / "examples" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 16
    for expr in exprs:
        render.parse(render.substitute(expr, 4.0, 60.0))
    with pytest.raises(ValueError):
        render.parse("avg_over_time(llm_cache_requests_total[5m])")


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 10.0), (0.2, 30.0), (math.inf, 40.0)]
    assert render.bucket_quantile(0.5, buckets) == pytest.approx(0.15)  # rank 20: halfway through (0.1, 0.2]
    assert render.bucket_quantile(0.25, buckets) == pytest.approx(0.1 * 10 / 10)
    assert render.bucket_quantile(0.99, buckets) == 0.2  # in +Inf: the highest finite bound
    assert math.isnan(render.bucket_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))


REQUESTS = """# TYPE llm_cache_requests counter
llm_cache_requests_total{{result="hit",model="a"}} {hit_a}
llm_cache_requests_total{{result="miss",model="a"}} {miss_a}
llm_cache_requests_total{{result="miss",model="b"}} {miss_b}
"""


def test_rate_sum_by_division_and_increase() -> None:
    data = scrapes(
        REQUESTS.format(hit_a=0, miss_a=1, miss_b=0),
        REQUESTS.format(hit_a=3, miss_a=2, miss_b=2),
        REQUESTS.format(hit_a=9, miss_a=2, miss_b=4),
    )
    assert at('sum by (result) (rate(llm_cache_requests_total{job=~"$job"}[$__rate_interval]))', data, 2) == {
        frozenset({("result", "hit")}): 6.0,
        frozenset({("result", "miss")}): 2.0,
    }
    hits = 'sum(rate(llm_cache_requests_total{result="hit"}[$__rate_interval]))'
    ratio = f"{hits} / sum(rate(llm_cache_requests_total[$__rate_interval]))"
    assert at(ratio, data, 2) == {frozenset(): 0.75}  # the 2 s window is left-open: the last two scrapes
    assert at(ratio, data, 0) == {}  # one sample: no rate yet
    assert at("sum(increase(llm_cache_requests_total[$__range])) * 2", data, 2) == {frozenset(): 28.0}
    assert at('sum by (model) (llm_cache_requests_total{result!="hit"})', data, 1) == {
        frozenset({("model", "a")}): 2.0,
        frozenset({("model", "b")}): 2.0,
    }


def test_counter_resets_and_late_series() -> None:
    text = '# TYPE c counter\nc_total{{k="x"}} {x}\n'
    data = scrapes(text.format(x=5), text.format(x=8), text.format(x=2))
    assert at("sum(increase(c_total[10s]))", data, 2, window=10.0) == {frozenset(): 3.0 + 2.0}
    late = scrapes("# TYPE c counter\n", text.format(x=4))  # a counter is exported once it counts
    assert at("sum(increase(c_total[10s]))", late, 1) == {frozenset(): 4.0}


def test_histogram_quantile_over_rates_of_buckets() -> None:
    def hist(a: int, b: int, total: int) -> str:
        return (
            "# TYPE d histogram\n"
            f'd_bucket{{store="m",le="0.1"}} {a}\nd_bucket{{store="m",le="0.2"}} {b}\n'
            f'd_bucket{{store="m",le="+Inf"}} {total}\nd_count{{store="m"}} {total}\nd_sum{{store="m"}} 1\n'
        )

    data = scrapes(hist(5, 5, 5), hist(15, 35, 45))  # the window sees 10, 30 and 40 observations
    expr = "histogram_quantile(0.5, sum by (le) (rate(d_bucket[$__rate_interval])))"
    assert at(expr, data, 1) == {frozenset(): pytest.approx(0.15)}


def test_a_short_real_run_renders_the_picture(tmp_path: Path) -> None:
    out = tmp_path / "dashboard.png"
    assert render.main(["--duration", "5", "--rate", "30", "--scrape-interval", "0.5", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
