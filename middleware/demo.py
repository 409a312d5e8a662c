"""`llm-cache demo`: the gateway on the embedded default store, in front of the SIMULATED provider.

Everything runs in this process on 127.0.0.1: the simulator (`llm_cache.middleware.simulator`), the gateway
(`llm_cache.middleware.gateway`, disk store in a fresh temporary directory) and three tenants replaying an
FAQ workload through the real `openai` SDK (plain `httpx2` when the SDK is not installed). The
report compares misses with hits and prices the avoided calls at list prices. The run fails
(exit 1) when the gateway misbehaves: a repeat not served from the cache, a hit whose content
differs from the miss it replays, or a tenant served another tenant's answer.
"""

from __future__ import annotations

import json
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TextIO

import httpx2

from ._background import BackgroundServer
from .config import default_config, with_upstreams
from .gateway import create_gateway
from .simulator import FAQ_ANSWERS, SimulatedProvider

MODEL = "gpt-4o-mini"
TENANTS = ("acme", "globex", "initech")
REQUESTS_PER_TENANT = 28
QUESTIONS = {
    "hours": "What are your opening hours?",
    "password": "How do I reset my password?",
    "refund": "How long does a refund take?",
    "return": "What is your return policy?",
    "shipping": "How long does shipping take?",
    "cancel": "How do I cancel my subscription?",
    "invoice": "Where can I find my invoices?",
    "support": "How fast does support answer?",
    "warranty": "What does the warranty cover?",
    "delete": "How do I delete my account?",
}
SYSTEM = "You are the customer support assistant of an online shop. Answer in one or two sentences."


@dataclass(frozen=True)
class Call:
    tenant: str
    topic: str
    form: str  # "sdk-json", "sdk-stream" or "raw-reordered"


@dataclass
class Result:
    call: Call
    cache: str
    content: str
    completion_id: str
    seconds: float
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def workload(seed: int) -> dict[str, list[Call]]:
    """Per tenant, a seeded sequence of FAQ calls: popular questions repeat, forms vary."""
    rng = random.Random(seed)
    plan: dict[str, list[Call]] = {}
    topics = list(QUESTIONS)
    for tenant in TENANTS:
        pool = rng.sample(topics, 6)
        weights = [1 / (rank + 1) for rank in range(len(pool))]  # Zipf-like popularity
        calls = []
        for _ in range(REQUESTS_PER_TENANT):
            topic = rng.choices(pool, weights)[0]
            form = rng.choices(["sdk-json", "sdk-stream", "raw-reordered"], [0.6, 0.25, 0.15])[0]
            calls.append(Call(tenant, topic, form))
        plan[tenant] = calls
    return plan


def _messages(topic: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTIONS[topic]}]


class _Client:
    """One tenant's client: the openai SDK when importable, else httpx2 with the same requests."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.http = httpx2.Client(base_url=base_url, headers={"authorization": f"Bearer {api_key}"}, timeout=30)
        try:
            import openai
        except ImportError:  # pragma: no cover - openai is a dev dependency
            self.sdk: Any = None
        else:
            self.sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0)

    def close(self) -> None:
        self.http.close()
        if self.sdk is not None:
            self.sdk.close()

    def send(self, call: Call) -> Result:
        started = time.perf_counter()
        if call.form == "raw-reordered" or self.sdk is None:
            result = self._raw(call, reordered=call.form == "raw-reordered")
        elif call.form == "sdk-stream":
            raw = self.sdk.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=_messages(call.topic),
                temperature=0.2,
                stream=True,
                stream_options={"include_usage": True},
            )
            parts, usage, completion_id = [], None, ""
            for chunk in raw.parse():
                completion_id = chunk.id
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                if chunk.usage is not None:
                    usage = chunk.usage
            result = Result(
                call,
                raw.headers.get("x-cache", "?"),
                "".join(parts),
                completion_id,
                0.0,
                usage.prompt_tokens if usage else 0,
                usage.completion_tokens if usage else 0,
            )
        else:
            raw = self.sdk.chat.completions.with_raw_response.create(
                model=MODEL, messages=_messages(call.topic), temperature=0.2
            )
            completion = raw.parse()
            usage = completion.usage
            result = Result(
                call,
                raw.headers.get("x-cache", "?"),
                completion.choices[0].message.content or "",
                completion.id,
                0.0,
                usage.prompt_tokens if usage else 0,
                usage.completion_tokens if usage else 0,
            )
        result.seconds = time.perf_counter() - started
        return result

    def _raw(self, call: Call, reordered: bool) -> Result:
        body: dict[str, Any] = {"model": MODEL, "messages": _messages(call.topic), "temperature": 0.2}
        if reordered:  # same request, keys in another order: the canonical key must not change
            body = dict(reversed(list(body.items())))
        response = self.http.post(
            "/v1/chat/completions", content=json.dumps(body), headers={"content-type": "application/json"}
        )
        response.raise_for_status()
        data = response.json()
        usage = data.get("usage") or {}
        return Result(
            call,
            response.headers.get("x-cache", "?"),
            data["choices"][0]["message"]["content"],
            data["id"],
            0.0,
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0),
        )


def _replay(client: _Client, calls: list[Call], report: Report, lock: threading.Lock) -> None:
    for call in calls:
        try:
            result = client.send(call)
        except Exception as error:  # a failed call is a misbehaving gateway in this setting
            with lock:
                report.problems.append(f"{call.tenant}/{call.topic} ({call.form}) failed: {error!r}")
            continue
        with lock:
            report.results.append(result)


def check(report: Report) -> None:
    """Every first ask is a miss, every repeat a hit with the same content, and no tenant sees another's."""
    first: dict[tuple[str, str], Result] = {}
    ids_by_tenant: dict[str, set[str]] = {tenant: set() for tenant in TENANTS}
    for tenant in TENANTS:  # each tenant replays in one thread, so its results are in request order
        for result in (r for r in report.results if r.call.tenant == tenant):
            key = (tenant, result.call.topic)
            label = f"{tenant}/{result.call.topic} ({result.call.form})"
            if result.content != FAQ_ANSWERS[result.call.topic]:
                report.problems.append(f"{label}: content differs from the provider's answer")
            if key not in first:
                first[key] = result
                if result.cache != "MISS":
                    report.problems.append(f"{label}: first ask answered {result.cache}, expected MISS")
                ids_by_tenant[tenant].add(result.completion_id)
                continue
            if result.cache != "HIT":
                report.problems.append(f"{label}: repeat answered {result.cache}, expected HIT")
            if result.content != first[key].content:
                report.problems.append(f"{label}: hit content differs from the miss it replays")
            if result.completion_id not in ids_by_tenant[tenant]:
                report.problems.append(f"{label}: served an answer this tenant never received (tenant leak)")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def load_pricing() -> dict[str, Any] | None:
    try:
        text = resources.files("llm_cache.middleware").joinpath("data/pricing.json").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return None
    data: dict[str, Any] = json.loads(text)
    return data


def _price(pricing: dict[str, Any] | None, model: str) -> dict[str, float] | None:
    if pricing is None:
        return None
    models: dict[str, dict[str, float]] = pricing.get("models", {})
    names = sorted((name for name in models if model.startswith(name)), key=len, reverse=True)
    return models[names[0]] if names else None


def render(
    report: Report, upstream_calls: int, elapsed: float, gateway_stats: dict[str, Any], store_dir: str, out: TextIO
) -> None:
    results = report.results
    hits = [r for r in results if r.cache == "HIT"]
    misses = [r for r in results if r.cache != "HIT"]
    total = len(results)
    saved_in = sum(r.prompt_tokens for r in hits)
    saved_out = sum(r.completion_tokens for r in hits)
    pricing = load_pricing()
    price = _price(pricing, MODEL)

    def ms(values: list[float], q: float) -> str:
        return f"{_percentile(values, q) * 1000:8.1f} ms"

    miss_s, hit_s = [r.seconds for r in misses], [r.seconds for r in hits]
    forms = {
        form: sum(1 for r in results if r.call.form == form) for form in ("sdk-json", "sdk-stream", "raw-reordered")
    }
    write = out.write
    write("\nllm-cache demo: gateway + disk store in front of a SIMULATED OpenAI-compatible provider\n")
    write("(the simulator is not a model: canned FAQ answers after a seeded 300-800 ms delay)\n\n")
    write(f"  store directory       {store_dir} (fresh, removed at exit)\n")
    write(f"  tenants               {len(TENANTS)} ({', '.join(TENANTS)}), one API key each\n")
    write(
        f"  requests              {total}  (json {forms['sdk-json']}, stream {forms['sdk-stream']}, "
        f"reordered-params json {forms['raw-reordered']})\n"
    )
    write(f"  cache hits / misses   {len(hits)} / {len(misses)}\n")
    write(f"  hit ratio             {len(hits) / total:.1%}\n" if total else "  hit ratio             n/a\n")
    write(f"  upstream calls        {upstream_calls}  (avoided: {total - upstream_calls})\n")
    write(
        f"  gateway /cache/stats  hits={gateway_stats.get('hits')} misses={gateway_stats.get('misses')} "
        f"stored={gateway_stats.get('stored')}\n"
    )
    write("\n  latency               p50         p95\n")
    write(f"    misses ({len(misses):>3})       {ms(miss_s, 0.5)} {ms(miss_s, 0.95)}\n")
    write(f"    hits   ({len(hits):>3})       {ms(hit_s, 0.5)} {ms(hit_s, 0.95)}\n")
    if hit_s and miss_s and statistics.median(hit_s) > 0:
        write(f"    median speed-up       {statistics.median(miss_s) / statistics.median(hit_s):.0f}x\n")
    write(f"\n  tokens saved          {saved_in + saved_out}  (input {saved_in}, output {saved_out})\n")
    if price is not None and pricing is not None:
        dollars = saved_in / 1e6 * price["input"] + saved_out / 1e6 * price["output"]
        write(
            f"  dollars saved         ${dollars:.6f} at {MODEL} list prices (${price['input']}/"
            f"${price['output']} per 1M input/output tokens, prices as of {pricing.get('as_of', '?')})\n"
        )
        if total:
            write(f"  per 1M such requests  ${dollars / total * 1e6:,.2f} saved\n")
    else:
        write("  dollars saved         n/a (no pricing table found in middleware/data/pricing.json)\n")
    write(f"  wall time             {elapsed:.1f} s\n\n")


def run_demo(seed: int = 7, out: TextIO | None = None) -> int:
    """Run the whole demo; returns the process exit code (0: the gateway behaved)."""
    out = out if out is not None else sys.stdout
    started = time.perf_counter()
    simulator = SimulatedProvider(seed=seed)
    admin_key = secrets.token_urlsafe(16)
    report = Report()
    with (
        tempfile.TemporaryDirectory(prefix="llm-cache-demo-") as store_dir,
        BackgroundServer(simulator.app) as upstream,
    ):
        config = with_upstreams(default_config(), [f"openai={upstream.url}/v1"])
        config.cache.store.directory = store_dir  # type: ignore[union-attr]
        config.admin_key = admin_key
        with BackgroundServer(create_gateway(config)) as gateway:
            out.write(f"simulated provider on {upstream.url}, gateway on {gateway.url}; replaying the workload...\n")
            out.flush()
            lock = threading.Lock()
            clients = {tenant: _Client(gateway.url, f"sk-demo-{tenant}-{seed}") for tenant in TENANTS}
            plan = workload(seed)
            threads = [
                threading.Thread(target=_replay, args=(clients[t], plan[t], report, lock), daemon=True) for t in TENANTS
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            for client in clients.values():
                client.close()
            stats = httpx2.get(f"{gateway.url}/cache/stats", headers={"x-admin-key": admin_key}, timeout=10).json()
        check(report)
        distinct = {(r.call.tenant, r.call.topic) for r in report.results}
        if simulator.calls != len(distinct):
            report.problems.append(
                f"the simulator answered {simulator.calls} calls for {len(distinct)} distinct "
                "requests: the cache let repeats through or coalesced across tenants"
            )
        render(report, simulator.calls, time.perf_counter() - started, stats, store_dir, out)
    if report.problems:
        out.write("FAILED: the gateway misbehaved:\n")
        for problem in report.problems:
            out.write(f"  - {problem}\n")
        return 1
    out.write("OK: every repeat was a cache hit with the miss's content, and no tenant saw another's entries.\n")
    return 0
