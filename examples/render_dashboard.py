"""Render examples/grafana-dashboard.json from a real gateway run, without Grafana: docs/img/dashboard.png.

    .venv/bin/python examples/render_dashboard.py [--duration 60] [--rate 12] [--scrape-interval 1]
                                                  [--out docs/img/dashboard.png]

Everything runs in this process on 127.0.0.1, offline: the SIMULATED OpenAI-compatible provider
(`llm_cache.middleware.simulator`, 50-250 ms per answer), the real gateway (`create_gateway`) on its default
disk store (in a temporary directory), and four client threads replaying a paced, seeded mix of
hits, misses, streams, refreshes, bypasses and malformed bodies, with a scripted store outage in
the middle (the store raises like an unreachable Redis, so requests are served upstream with
`result="error"`). A scraper thread reads the gateway's `/metrics` every `--scrape-interval`
seconds and parses it with `prometheus_client.parser`.

Each panel of the dashboard JSON is then drawn from its own `expr`, evaluated on those scrapes by a
small PromQL subset (the one the dashboard uses: selectors with `=`, `=~`, `!=`, `!~` matchers,
`rate`, `increase`, `sum [by (...)]`, `histogram_quantile`, `/` and `*`). `$job` matches every
series, `$__rate_interval` is four scrape intervals (Grafana's floor for it) and `$__range` is the
whole run. Differences from Prometheus, all within one scrape interval's worth: `rate` is the
increase between the first and last samples in the window over their distance and `increase` that
increase, neither extrapolated to the window's edges; a counter series is taken as 0 in the scrapes
before it first appears (Prometheus approximates that by extrapolation). Stat panels show the last
value over a sparkline, as Grafana's defaults do.

The run checks itself before drawing: the scraped request counters must add up to the requests
sent, and the scraped hits to the responses that said `x-cache: HIT`; otherwise it exits 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import re
import secrets
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from llm_cache.middleware import Cache
from llm_cache.middleware._background import BackgroundServer
from llm_cache.middleware.config import default_config, with_upstreams
from llm_cache.middleware.gateway import create_gateway
from llm_cache.middleware.simulator import FAQ_ANSWERS, SimulatedProvider
from llm_cache.middleware.stores import DiskStore

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "examples" / "grafana-dashboard.json"
MODELS = ("gpt-4o-mini", "gpt-4o")
WORKERS = 4

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]


# -- a PromQL subset, evaluated on scrapes -----------------------------------------------------------


class Scrapes:
    """`/metrics` samples by scrape: `times[i]` and `values[i][(sample name, labels)]`."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.values: list[dict[tuple[str, Labels], float]] = []

    def add(self, at: float, text: str) -> None:
        samples = {
            (sample.name, frozenset(sample.labels.items())): float(sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        self.times.append(at)
        self.values.append(samples)

    def zero_fill_counters(self) -> None:
        """A counter series is 0 in the scrapes before its first one (it is exported once it counts)."""
        counters = ("_total", "_bucket", "_count")
        later: set[tuple[str, Labels]] = set()
        for values in reversed(self.values):
            for key in later - values.keys():
                values[key] = 0.0
            later |= {key for key in values if key[0].endswith(counters)}


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?(?![\w]))|(?P<name>[A-Za-z_:][\w:]*)|(?P<str>\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<range>\[[^\]]+\])|(?P<op>=~|!~|!=|[=(){},/*]))"
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"unsupported duration {text!r}")
    return sum(float(n) * _SECONDS[u] for n, u in parts)


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    expr = expr.strip()
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None or match.end() == position:
            raise ValueError(f"unsupported PromQL at {expr[position:]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent over the subset; nodes are tuples whose first item names them."""

    def __init__(self, expr: str) -> None:
        self.tokens = tokenize(expr)
        self.at = 0

    def parse(self) -> tuple[Any, ...]:
        node = self.expr()
        if self.at != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.at][1]!r}")
        return node

    def peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.at >= len(self.tokens):
            raise ValueError("unexpected end of expression")
        token = self.tokens[self.at]
        if expected is not None and token[1] != expected:
            raise ValueError(f"expected {expected!r}, found {token[1]!r}")
        self.at += 1
        return token

    def expr(self) -> tuple[Any, ...]:
        node = self.primary()
        while self.peek() in ("/", "*"):
            op = self.take()[1]
            node = ("binary", op, node, self.primary())
        return node

    def labels(self) -> tuple[str, ...]:
        self.take("(")
        names = []
        while self.peek() != ")":
            names.append(self.take()[1])
            if self.peek() == ",":
                self.take(",")
        self.take(")")
        return tuple(names)

    def primary(self) -> tuple[Any, ...]:
        kind, value = self.take()
        if kind == "num":
            return ("number", float(value))
        if value == "(":
            node = self.expr()
            self.take(")")
            return node
        if kind != "name":
            raise ValueError(f"unexpected {value!r}")
        if value == "sum":
            by = self.labels() if self.peek() == "by" and self.take("by") else None
            self.take("(")
            inner = self.expr()
            self.take(")")
            if self.peek() == "by":  # `sum(...) by (x)`
                self.take("by")
                by = self.labels()
            return ("sum", by, inner)
        if value in ("rate", "increase"):
            self.take("(")
            selector = self.primary()
            self.take(")")
            if selector[0] != "selector" or selector[3] is None:
                raise ValueError(f"{value}() needs a range selector")
            return (value, selector)
        if value == "histogram_quantile":
            self.take("(")
            q = self.expr()
            self.take(",")
            inner = self.expr()
            self.take(")")
            return ("quantile", q, inner)
        matchers = []
        if self.peek() == "{":
            self.take("{")
            while self.peek() != "}":
                label = self.take()[1]
                op = self.take()[1]
                text = json.loads(self.take()[1])
                matchers.append((label, op, text))
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
        window = (
            parse_duration(self.take()[1][1:-1])
            if self.at < len(self.tokens) and self.tokens[self.at][0] == "range"
            else None
        )
        return ("selector", value, tuple(matchers), window)


def parse(expr: str) -> tuple[Any, ...]:
    return _Parser(expr).parse()


def _matches(labels: Labels, matchers: tuple[tuple[str, str, str], ...]) -> bool:
    found = dict(labels)
    for label, op, text in matchers:
        value = found.get(label, "")
        ok = value == text if op in ("=", "!=") else re.fullmatch(text, value) is not None
        if ok == (op in ("!=", "!~")):
            return False
    return True


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile on (upper bound, cumulative count) pairs."""
    buckets = sorted(buckets)
    if len(buckets) < 2 or buckets[-1][0] != math.inf or q < 0 or q > 1:
        return math.nan
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    b = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start = 0.0 if b == 0 else buckets[b - 1][0]
    end, count = buckets[b]
    if b > 0:
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count) if count else end


def evaluate(node: tuple[Any, ...], scrapes: Scrapes, i: int) -> float | Vector:
    """The value of `node` at scrape `i`: a number or an instant vector."""
    kind = node[0]
    if kind == "number":
        return float(node[1])
    if kind == "selector":
        _, name, matchers, window = node
        if window is not None:
            raise ValueError("a range selector needs rate() or increase()")
        return {labels: v for (n, labels), v in scrapes.values[i].items() if n == name and _matches(labels, matchers)}
    if kind in ("rate", "increase"):
        _, name, matchers, window = node[1]
        now = scrapes.times[i]
        series: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
        for j in range(i, -1, -1):
            if scrapes.times[j] <= now - window:
                break
            for (n, labels), v in scrapes.values[j].items():
                if n == name and _matches(labels, matchers):
                    series[labels].append((scrapes.times[j], v))
        out: Vector = {}
        for labels, points in series.items():
            if len(points) < 2:
                continue
            points.reverse()
            increase = sum(b - a if b >= a else b for (_, a), (_, b) in zip(points, points[1:], strict=False))
            out[labels] = increase / (points[-1][0] - points[0][0]) if kind == "rate" else increase
        return out
    if kind == "sum":
        _, by, inner = node
        vector = evaluate(inner, scrapes, i)
        assert isinstance(vector, dict), "sum() of a number"
        sums: Vector = defaultdict(float)
        for labels, v in vector.items():
            sums[frozenset((k, x) for k, x in labels if by is not None and k in by)] += v
        return dict(sums)
    if kind == "quantile":
        q = evaluate(node[1], scrapes, i)
        vector = evaluate(node[2], scrapes, i)
        assert isinstance(q, float) and isinstance(vector, dict)
        groups: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
        for labels, v in vector.items():
            le = dict(labels).get("le")
            if le is not None:
                groups[frozenset(p for p in labels if p[0] != "le")].append((float(le), v))
        return {labels: bucket_quantile(q, buckets) for labels, buckets in groups.items()}
    if kind == "binary":
        _, op, left_node, right_node = node
        left, right = evaluate(left_node, scrapes, i), evaluate(right_node, scrapes, i)

        def apply(a: float, b: float) -> float:
            if op == "*":
                return a * b
            return a / b if b else (math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a))

        if isinstance(left, dict) and isinstance(right, dict):
            return {labels: apply(v, right[labels]) for labels, v in left.items() if labels in right}
        if isinstance(left, dict):
            assert isinstance(right, float)
            return {labels: apply(v, right) for labels, v in left.items()}
        if isinstance(right, dict):
            return {labels: apply(left, v) for labels, v in right.items()}
        return apply(left, right)
    raise ValueError(f"unknown node {kind}")


def substitute(expr: str, rate_interval: float, whole_range: float) -> str:
    """Grafana's variables: every job, `$__rate_interval` and `$__range` in seconds."""
    expr = expr.replace("$job", ".*")
    expr = expr.replace("$__rate_interval", f"{rate_interval:g}s").replace("$__range", f"{whole_range:g}s")
    return expr


def legend(template: str, labels: Labels) -> str:
    found = dict(labels)
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: found.get(m.group(1), ""), template) or "value"


def panel_series(panel: dict[str, Any], scrapes: Scrapes, rate_interval: float) -> dict[str, list[float]]:
    """legend -> one value per scrape (NaN where the query returned nothing), for every target."""
    whole = scrapes.times[-1] - scrapes.times[0] + 0.001
    out: dict[str, list[float]] = {}
    for target in panel.get("targets", []):
        node = parse(substitute(target["expr"], rate_interval, whole))
        template = target.get("legendFormat", "")
        for i in range(len(scrapes.times)):
            value = evaluate(node, scrapes, i)
            vector = value if isinstance(value, dict) else {frozenset(): value}
            for labels, v in vector.items():
                out.setdefault(legend(template, labels), [math.nan] * len(scrapes.times))[i] = v
    return dict(sorted(out.items()))


# -- the run -----------------------------------------------------------------------------------------


class OutageStore(DiskStore):
    """The gateway's default store, failing like an unreachable Redis while `down` is set (the scripted outage)."""

    down = False

    async def get(self, key: str) -> bytes | None:
        if self.down:
            raise ConnectionError("scripted store outage")
        return await super().get(key)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        if self.down:
            raise ConnectionError("scripted store outage")
        await super().set(key, value, ttl)


@dataclass
class Tally:
    sent: int = 0
    answers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, x_cache: str) -> None:
        with self.lock:
            self.sent += 1
            self.answers[x_cache] += 1


def phase(fraction: float) -> str:
    if fraction < 0.2:
        return "warm-up"
    if 0.5 <= fraction < 0.62:
        return "outage"
    return "recovered" if fraction >= 0.62 else "steady"


def question(rng: random.Random, pool: int) -> int:
    """A Zipf-like choice among the first `pool` questions: popular ones repeat."""
    return min(pool - 1, int(pool ** rng.random()) - 1)


def _one_call(client: httpx2.Client, rng: random.Random, fraction: float) -> str:
    topics = list(FAQ_ANSWERS)
    name = phase(fraction)
    if name == "warm-up":
        pool = 8 + int(fraction / 0.2 * 40)
    else:
        pool = 48 + (int((fraction - 0.62) * 150) if name == "recovered" else 0)
    n = question(rng, pool)
    model = MODELS[0] if n % 10 < 7 else MODELS[1]
    body: dict[str, Any] = {
        "model": model,
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are the support assistant of an online shop."},
            {"role": "user", "content": f"Question {n}: tell me about {topics[n % len(topics)]}."},
        ],
    }
    headers = {"content-type": "application/json"}
    roll = rng.random()
    if roll < 0.03:
        headers["cache-control"] = "no-cache"  # refresh
    elif roll < 0.06:
        body["cache"] = {"use-cache": False}  # bypass
    elif roll < 0.07:
        del body["messages"]  # the provider answers 400: not stored
    stream = rng.random() < 0.2 and "messages" in body
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
        with client.stream("POST", "/v1/chat/completions", content=json.dumps(body), headers=headers) as response:
            for _ in response.iter_bytes():
                pass
            return response.headers.get("x-cache", "?")
    response = client.post("/v1/chat/completions", content=json.dumps(body), headers=headers)
    return response.headers.get("x-cache", "?")


def run(duration: float, rate: float, scrape_interval: float, seed: int, out: Any) -> Scrapes:
    simulator = SimulatedProvider(seed=seed, min_latency=0.05, max_latency=0.25)
    scrapes, tally = Scrapes(), Tally()
    with (
        tempfile.TemporaryDirectory(prefix="llm-cache-render-") as directory,
        BackgroundServer(simulator.app) as upstream,
    ):
        store = OutageStore(directory)
        config = with_upstreams(default_config(), [f"openai={upstream.url}/v1"])
        with BackgroundServer(create_gateway(config, cache=Cache(store, ttl=3600))) as gateway:
            out.write(f"simulated provider on {upstream.url}, gateway on {gateway.url}: {duration:g} s of traffic\n")
            stop = threading.Event()
            started = time.monotonic()

            def scrape() -> None:
                with httpx2.Client(base_url=gateway.url, timeout=10) as http:
                    next_at = time.monotonic()
                    while True:
                        scrapes.add(time.time(), http.get("/metrics").text)
                        if stop.is_set():
                            return
                        next_at += scrape_interval
                        stop.wait(max(0.0, next_at - time.monotonic()))

            def outage() -> None:
                was = False
                while not stop.wait(0.05):
                    down = phase((time.monotonic() - started) / duration) == "outage"
                    if down != was:
                        store.down, was = down, down
                        out.write(f"  {time.monotonic() - started:5.1f} s  store {'down' if down else 'back'}\n")
                        out.flush()

            def worker(index: int) -> None:
                rng = random.Random(seed * 100 + index)
                key = f"sk-render-{secrets.token_hex(4)}" if index == 0 else "sk-render-shared"
                with httpx2.Client(
                    base_url=gateway.url, timeout=30, headers={"authorization": f"Bearer {key}"}
                ) as client:
                    next_at = time.monotonic() + rng.random() * WORKERS / rate
                    while (elapsed := time.monotonic() - started) < duration:
                        try:
                            tally.record(_one_call(client, rng, elapsed / duration))
                        except httpx2.HTTPError as error:
                            tally.failures.append(repr(error))
                        next_at += rng.expovariate(rate / WORKERS)
                        time.sleep(max(0.0, next_at - time.monotonic()))

            threads = [threading.Thread(target=scrape, daemon=True), threading.Thread(target=outage, daemon=True)]
            threads += [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(WORKERS)]
            for thread in threads:
                thread.start()
            for thread in threads[2:]:
                thread.join(duration + 60)
            time.sleep(scrape_interval)
            stop.set()
            for thread in threads[:2]:
                thread.join(30)
    check(scrapes, tally, simulator.calls, out)
    scrapes.zero_fill_counters()
    return scrapes


def check(scrapes: Scrapes, tally: Tally, upstream_calls: int, out: Any) -> None:
    last = scrapes.values[-1]
    by_result: dict[str, float] = defaultdict(float)
    for (name, labels), value in last.items():
        if name == "llm_cache_requests_total":
            by_result[dict(labels)["result"]] += value
    out.write(
        f"  sent {tally.sent} requests ({dict(sorted(tally.answers.items()))}); "
        f"upstream answered {upstream_calls}; /metrics says {dict(sorted(by_result.items()))}\n"
    )
    problems = [f"client error: {failure}" for failure in tally.failures[:5]]
    if sum(by_result.values()) != tally.sent:
        problems.append(f"llm_cache_requests_total adds up to {sum(by_result.values()):g}, sent {tally.sent}")
    if by_result.get("hit", 0) != tally.answers.get("HIT", 0):
        problems.append(f"{by_result.get('hit', 0):g} hits counted, {tally.answers.get('HIT', 0)} served")
    if not by_result.get("error"):
        problems.append('the outage produced no result="error" request')
    if problems:
        raise SystemExit("the run does not add up:\n  " + "\n  ".join(problems))


# -- drawing -----------------------------------------------------------------------------------------

BACKGROUND, PANEL, BORDER, TEXT, MUTED = "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e9e"
PALETTE = ("#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0", "#37872d")
GRID_PX, COLUMNS, DPI = 30, 24, 80
WIDTH_PX = 1280


def fmt(value: float, unit: str) -> str:
    if value is None or math.isnan(value):
        return "No data"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "currencyUSD":
        return f"${value:.4f}" if abs(value) < 1 else f"${value:,.2f}"
    if unit == "s":
        return (
            f"{value * 1e6:.0f} µs"
            if abs(value) < 1e-3
            else f"{value * 1e3:.1f} ms"
            if abs(value) < 1
            else f"{value:.2f} s"
        )
    if unit == "bytes":
        for step, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(value) >= step:
                return f"{value / step:.1f} {name}"
        return f"{value:.0f} B"
    suffix = {"reqps": " req/s", "ops": " ops/s"}.get(unit, "")
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f} Mil{suffix}"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.1f} K{suffix}"
    return f"{value:.3g}{suffix}" if value else f"0{suffix}"


def last_value(values: list[float]) -> float:
    return next((v for v in reversed(values) if not math.isnan(v)), math.nan)


def render(dashboard: dict[str, Any], scrapes: Scrapes, rate_interval: float, subtitle: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    panels = dashboard["panels"]
    header = 3
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) + header
    fig = plt.figure(figsize=(WIDTH_PX / DPI, rows * GRID_PX / DPI), dpi=DPI, facecolor=BACKGROUND)
    plt.rcParams.update(
        {
            "font.size": 9,
            "text.parse_math": False,
            "text.color": TEXT,
            "axes.labelcolor": TEXT,
            "xtick.color": MUTED,
            "ytick.color": MUTED,
        }
    )
    fig.text(0.008, 1 - 0.8 / rows, dashboard["title"], fontsize=16, weight="bold", va="center")
    fig.text(0.008, 1 - 1.9 / rows, subtitle, fontsize=9, color=MUTED, va="center", linespacing=1.6)
    times = mdates.date2num([dt.datetime.fromtimestamp(t, dt.timezone.utc) for t in scrapes.times])
    pad_x, pad_y = 0.004, 0.25 / rows

    for panel in panels:
        grid = panel["gridPos"]
        left, width = grid["x"] / COLUMNS + pad_x, grid["w"] / COLUMNS - 2 * pad_x
        bottom = 1 - (grid["y"] + grid["h"] + header) / rows + pad_y
        height = grid["h"] / rows - 2 * pad_y
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        series = panel_series(panel, scrapes, rate_interval)
        face = PANEL
        if panel["type"] == "stat":
            value = sum(last_value(v) for v in series.values()) if series else math.nan
            steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
            color = PALETTE[0]
            for step in steps:
                if step.get("value") is None or (not math.isnan(value) and value >= step["value"]):
                    color = {"green": PALETTE[0], "red": PALETTE[4]}.get(step["color"], step["color"])
            if panel.get("options", {}).get("colorMode") == "background":
                face, color = color, "#ffffff"
        box = fig.add_axes((left, bottom, width, height))
        box.set_axis_off()
        box.add_patch(
            FancyBboxPatch(
                (0, 0),
                1,
                1,
                boxstyle="round,pad=0,rounding_size=0.01",
                transform=box.transAxes,
                facecolor=face,
                edgecolor=BORDER,
                linewidth=0.8,
            )
        )
        title_h = 0.9 / grid["h"]
        box.text(
            0.015,
            1 - title_h / 2,
            panel["title"],
            transform=box.transAxes,
            fontsize=10,
            weight="bold",
            va="center",
            color=TEXT if face == PANEL else "#ffffff",
        )
        if panel["type"] == "stat":
            spark = fig.add_axes((left, bottom + 0.02 * height, width, height * 0.45))
            spark.set_axis_off()
            for values in series.values():
                ys = values
                spark.fill_between(times, ys, color=color if face == PANEL else "#ffffff", alpha=0.15, linewidth=0)
                spark.plot(times, ys, color=color if face == PANEL else "#ffffff", alpha=0.5, linewidth=1)
            box.text(
                0.5,
                0.48,
                fmt(value, unit),
                transform=box.transAxes,
                fontsize=28,
                weight="bold",
                ha="center",
                va="center",
                color=color,
            )
            continue
        legend_h = 0.12 * (1 + (len(series) > 4))
        plot = fig.add_axes(
            (left + 0.045, bottom + height * (legend_h + 0.1), width - 0.055, height * (1 - title_h - legend_h - 0.14))
        )
        plot.set_facecolor(PANEL)
        for spine in plot.spines.values():
            spine.set_visible(False)
        plot.grid(color=BORDER, linewidth=0.6)
        plot.tick_params(labelsize=8, length=0)
        plot.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=dt.timezone.utc))
        plot.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=6))
        plot.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _, unit=unit: fmt(v, unit)))
        plot.set_xlim(times[0], times[-1])
        if not series or all(math.isnan(v) for values in series.values() for v in values):
            plot.text(0.5, 0.5, "No data", transform=plot.transAxes, ha="center", va="center", color=MUTED, fontsize=12)
            plot.set_yticks([])
            continue
        handles = []
        for index, (name, values) in enumerate(series.items()):
            (line,) = plot.plot(times, values, color=PALETTE[index % len(PALETTE)], linewidth=1.4, label=name)
            plot.fill_between(times, values, color=line.get_color(), alpha=0.08, linewidth=0)
            handles.append(line)
        plot.set_ylim(bottom=0)
        fig.legend(
            handles=handles,
            loc="lower left",
            bbox_to_anchor=(left + 0.005, bottom + 0.01 * height),
            ncol=min(len(handles), 4),
            frameon=False,
            fontsize=8,
            handlelength=1.2,
            columnspacing=1.2,
            labelcolor=TEXT,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor=BACKGROUND, metadata={"Software": None})
    plt.close(fig)


def _quantize(path: Path) -> None:
    """Fewer colours, same look: keeps the PNG small enough to commit."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic (default 60)")
    parser.add_argument("--rate", type=float, default=12.0, help="requests per second, all workers (default 12)")
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="seconds between scrapes (default 1)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard.png")
    args = parser.parse_args(argv)
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    rate_interval = 4 * args.scrape_interval
    for panel in dashboard["panels"]:  # fail before the run, not after it, on a query the subset cannot read
        for target in panel.get("targets", []):
            parse(substitute(target["expr"], rate_interval, 1.0))
    scrapes = run(args.duration, args.rate, args.scrape_interval, args.seed, sys.stdout)
    when = dt.datetime.fromtimestamp(scrapes.times[0], dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = (
        f"Rendered from a real run on {when}: the gateway on its disk store in front of the simulated provider, "
        f"{args.duration:g} s at {args.rate:g} req/s, a store outage from 50% to 62% of the run.\n"
        f"/metrics scraped every {args.scrape_interval:g} s; each panel is its own PromQL evaluated on the scrapes "
        f"($__rate_interval = {rate_interval:g}s, $__range = the run) by examples/render_dashboard.py, not by Grafana."
    )
    render(dashboard, scrapes, rate_interval, subtitle, args.out)
    _quantize(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB, {len(scrapes.times)} scrapes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
