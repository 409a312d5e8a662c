"""Hit-path latency: the cache's memory hit next to the floor, measured in one run.

The floor is the same `httpx2.AsyncClient` posting the same body to a no-op
transport that returns a fixed response: whatever the cache adds shows as the
ratio between the two. Key computation is timed alone for 1 KB, 10 KB and
100 KB requests: bodies not seen before, and one body asked again (each call a new bytes object).

    .venv/bin/python benchmarks/hit_path.py [--requests 3000] [--redis] [--telemetry]

`--redis` starts a private `redis-server` on a free port (no persistence; stopped at the end) and
adds Redis and TieredStore (L1) hits next to a memory hit, plus `RedisStore.get` next to a raw
`redis.asyncio` GET of the same entry. `--telemetry` adds memory hits with the OpenTelemetry SDK
tracer alone (metrics on the API's no-op meter), `sdk_telemetry()` (tracer and meter; a memory store
gets no store child spans by default), `sdk_telemetry(store_spans=True)` and
`sdk_telemetry(sampler=ParentBased(TraceIdRatioBased(0.1)))`, then times the SDK's own calls inside
`sdk_telemetry()` hits: how much of the added latency is the SDK's. `--semantic` adds the semantic
cache (all-MiniLM-L6-v2, in-process index) on short questions: an exact hit with it on, a
paraphrase answered by meaning, and a miss with and without it (unique questions, so every call
embeds, searches and indexes), next to embedding one question alone. `--stream` adds streamed memory
hits of a 60-chunk chat answer (`stream_options.include_usage`): of an entry filled by that stream
(replayed as the provider cut it) and of one filled by the JSON answer (synthesised), next to the
JSON hit, with the size of each stored entry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx2
import orjson

from llm_cache.middleware import AsyncCachingTransport, Cache
from llm_cache.middleware.stores import MemoryStore
from llm_cache.middleware.stores.base import Store
from llm_cache.middleware.telemetry import Telemetry

RESPONSE = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris is the capital of France."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 250, "completion_tokens": 8, "total_tokens": 258},
    }
)
HEADERS = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
URL = "http://bench.invalid/v1/chat/completions"
Row = tuple[str, float, float]


def chat_body(size: int) -> bytes:
    filler = "lorem ipsum dolor sit amet " * (size // 27 + 1)
    body = {
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "messages": [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": filler}],
    }
    raw = orjson.dumps(body)
    excess = len(raw) - size
    body["messages"][1]["content"] = filler[: len(filler) - excess]
    return orjson.dumps(body)


STREAMED_WORDS = 58
"""Content chunks of the streamed answer: with the role chunk, the finish chunk and the usage chunk,
a stream of 61 events and `[DONE]` (a short paragraph, as a chat model streams it)."""


def chat_stream() -> tuple[bytes, bytes]:
    """(a chat completion stream of `STREAMED_WORDS` content chunks with usage, the same answer as JSON)."""
    head = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    words = [("" if i == 0 else " ") + f"word{i}" for i in range(STREAMED_WORDS)]
    usage = {"prompt_tokens": 250, "completion_tokens": STREAMED_WORDS, "total_tokens": 250 + STREAMED_WORDS}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "choices": [choice], "usage": None}) + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""}), *(chunk({"content": w}) for w in words), chunk({}, "stop")]
    events.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    message = {"role": "assistant", "content": "".join(words)}
    answer = {
        **head,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }
    return b"".join(events), orjson.dumps({**answer, "usage": usage})


STREAM, STREAMED_ANSWER = chat_stream()


class FixedResponse(httpx2.AsyncBaseTransport):
    """The fixed 1 KB answer; a request asking for `"stream": true` gets `STREAM`, one asking for
    the streamed answer as JSON (`"n": 1`) gets `STREAMED_ANSWER`."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        if b'"stream":true' in body:
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=STREAM)
        if b'"n":1' in body:
            return httpx2.Response(200, headers={"content-type": "application/json"}, content=STREAMED_ANSWER)
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=RESPONSE)


def summarise(samples: list[int]) -> tuple[float, float]:
    ordered = sorted(samples)
    median = statistics.median(ordered) / 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
    return median, p99


async def time_calls(call: Callable[[], Awaitable[object]], n: int) -> list[int]:
    for _ in range(min(200, n)):
        await call()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        await call()
        samples.append(clock() - start)
    return samples


async def cached_client(store: Store, telemetry: Telemetry | None = None) -> tuple[Cache, httpx2.AsyncClient]:
    """A client whose cache holds the 1 KB answer: one MISS, then a checked HIT."""
    body = chat_body(1024)
    cache = Cache(store=store, ttl=900, telemetry=telemetry)
    client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=FixedResponse()))
    warm = await client.post(URL, content=body, headers=HEADERS)
    assert warm.headers["x-cache"] == "MISS", warm.headers
    hit = await client.post(URL, content=body, headers=HEADERS)
    assert hit.headers["x-cache"] == "HIT", hit.headers
    return cache, client


def poster(client: httpx2.AsyncClient) -> Callable[[], Awaitable[object]]:
    body = chat_body(1024)

    async def post() -> object:
        return await client.post(URL, content=body, headers=HEADERS)

    return post


async def interleave(calls: list[tuple[str, Callable[[], Awaitable[object]]]], n: int) -> list[Row]:
    # Interleave rounds so drift on a noisy machine hits every row alike.
    samples: dict[str, list[int]] = {name: [] for name, _ in calls}
    rounds = 5
    for _ in range(rounds):
        for name, call in calls:
            samples[name] += await time_calls(call, n // rounds)
    return [(name, *summarise(samples[name])) for name, _ in calls]


async def client_rows(n: int, telemetry: bool) -> list[Row]:
    floor_client = httpx2.AsyncClient(transport=FixedResponse())
    clients = [floor_client]
    caches = []
    calls = [("floor: httpx2 client + no-op transport (1 KB)", poster(floor_client))]
    variants: list[tuple[str, Telemetry | None]] = [("memory hit via AsyncCachingTransport (1 KB)", None)]
    if telemetry:
        from opentelemetry.metrics import NoOpMeterProvider
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        from llm_cache.middleware.telemetry import sdk_telemetry

        one_in_ten = ParentBased(TraceIdRatioBased(0.1))
        tracing_only = Telemetry(tracer_provider=dropping_tracer_provider(), meter_provider=NoOpMeterProvider())
        variants += [
            ("memory hit + SDK tracer only (1 KB)", tracing_only),
            ("memory hit + sdk_telemetry() (1 KB)", sdk_telemetry()),
            ("memory hit + sdk_telemetry(store_spans=True) (1 KB)", sdk_telemetry(store_spans=True)),
            ("memory hit + sdk_telemetry(sampler=1 in 10) (1 KB)", sdk_telemetry(sampler=one_in_ten)),
        ]
    for name, telemetry_ in variants:
        cache, client = await cached_client(MemoryStore(max_entries=10_000), telemetry_)
        caches.append(cache)
        clients.append(client)
        calls.append((name, poster(client)))
    rows = await interleave(calls, n)
    for cache in caches:
        assert cache.stats.hits >= n
    for client in clients:
        await client.aclose()
    return rows


async def stream_rows(n: int) -> tuple[list[Row], list[tuple[str, int]]]:
    """(streamed memory hits next to the JSON hit, the size of each stored entry)."""
    store = MemoryStore(max_entries=10_000)
    cache = Cache(store=store, ttl=900)
    client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=FixedResponse()))
    floor_client = httpx2.AsyncClient(transport=FixedResponse())
    question = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say sixty words."}]}
    asks = {"stream": True, "stream_options": {"include_usage": True}}
    streamed = orjson.dumps({**question, **asks})  # its entry filled by the stream
    other = {**question, "messages": [{"role": "user", "content": "Say sixty other words."}], "n": 1}
    from_json, from_json_streamed = orjson.dumps(other), orjson.dumps({**other, **asks})  # filled by JSON
    sizes = []
    for label, fill, hit in (
        ("filled by the stream", streamed, streamed),
        ("filled by the JSON answer", from_json, from_json_streamed),
    ):
        warm = await client.post(URL, content=fill, headers=HEADERS)
        assert warm.headers["x-cache"] == "MISS", warm.headers
        again = await client.post(URL, content=hit, headers=HEADERS)
        assert again.headers["x-cache"] == "HIT" and again.content.count(b"data: ") >= 3, again.headers
        stored = await store.get(again.headers["x-cache-key"])
        assert stored is not None
        sizes.append((f"entry {label} ({again.content.count(b'data: ')} events on a streamed hit)", len(stored)))

    def post(http: httpx2.AsyncClient, body: bytes) -> Callable[[], Awaitable[object]]:
        async def call() -> object:
            return await http.post(URL, content=body, headers=HEADERS)

        return call

    _, json_client = await cached_client(store)
    rows = await interleave(
        [
            ("floor: httpx2 client + no-op transport (1 KB)", poster(floor_client)),
            ("memory hit via AsyncCachingTransport (1 KB)", poster(json_client)),
            ("streamed memory hit, entry filled by the stream", post(client, streamed)),
            ("streamed memory hit, entry filled by the JSON answer", post(client, from_json_streamed)),
        ],
        n,
    )
    for http in (client, json_client, floor_client):
        await http.aclose()
    return rows, sizes


def dropping_tracer_provider() -> Any:
    """An SDK TracerProvider whose BatchSpanProcessor exports to nowhere (what `sdk_telemetry()` sets up)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    return provider


async def sdk_share(n: int) -> list[tuple[str, float]]:
    """Microseconds per `sdk_telemetry()` memory hit spent inside the OpenTelemetry SDK's own calls.

    Each SDK method is wrapped to add up its time; the wrapper adds two clock reads per call.
    """
    from opentelemetry.sdk.metrics._internal.instrument import _Histogram
    from opentelemetry.sdk.trace import Span, Tracer

    from llm_cache.middleware.telemetry import sdk_telemetry

    methods = [(Tracer, "start_span"), (Span, "set_attributes"), (Span, "end"), (_Histogram, "record")]
    spent = dict.fromkeys((f"{owner.__name__.lstrip('_')}.{name}" for owner, name in methods), 0)
    originals = [(owner, name, getattr(owner, name)) for owner, name in methods]

    def timed(label: str, method: Callable[..., object]) -> Callable[..., object]:
        clock = time.perf_counter_ns

        def call(*args: object, **kwargs: object) -> object:
            start = clock()
            try:
                return method(*args, **kwargs)
            finally:
                spent[label] += clock() - start

        return call

    cache, client = await cached_client(MemoryStore(max_entries=10_000), sdk_telemetry())
    post = poster(client)
    for _ in range(n // 10):
        await post()
    try:
        for owner, name, method in originals:
            setattr(owner, name, timed(f"{owner.__name__.lstrip('_')}.{name}", method))
        for _ in range(n):
            await post()
    finally:
        for owner, name, method in originals:
            setattr(owner, name, method)
    assert cache.stats.hits >= n
    await client.aclose()
    return [(label, total / n / 1000) for label, total in spent.items()]


def question(text: str) -> bytes:
    return orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})


async def semantic_rows(n: int) -> list[Row]:
    from llm_cache.middleware.semantic import InProcessIndex, SemanticCache, SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    embedder.warm_up()
    plain = Cache(store=MemoryStore(max_entries=100_000), ttl=900)
    semantic = Cache(
        store=MemoryStore(max_entries=100_000), ttl=900, semantic=SemanticCache(embedder, InProcessIndex())
    )
    clients = {
        name: httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache, inner=FixedResponse()))
        for name, cache in (("plain", plain), ("semantic", semantic))
    }
    asked, paraphrase = question("How do I reset my password?"), question("How can I reset my password?")
    for client in clients.values():
        assert (await client.post(URL, content=asked, headers=HEADERS)).headers["x-cache"] == "MISS"
    answer = await clients["semantic"].post(URL, content=paraphrase, headers=HEADERS)
    assert answer.headers.get("x-cache-match") == "semantic", answer.headers
    counter = iter(range(10**9))

    def post(client: httpx2.AsyncClient, body: bytes) -> Callable[[], Awaitable[object]]:
        async def call() -> object:
            return await client.post(URL, content=body, headers=HEADERS)

        return call

    def fresh(client: httpx2.AsyncClient) -> Callable[[], Awaitable[object]]:
        async def call() -> object:
            i = next(counter)
            body = question(f"What does the shop's policy say about returning order {i} after {i % 90} days?")
            return await client.post(URL, content=body, headers=HEADERS)

        return call

    async def embed_one() -> object:
        return await embedder.embed(["How can I reset my password?"])

    rows = await interleave(
        [
            ("exact memory hit, no semantic cache (short question)", post(clients["plain"], asked)),
            ("exact memory hit, semantic cache on", post(clients["semantic"], asked)),
            ("semantic hit: a paraphrase answered by meaning", post(clients["semantic"], paraphrase)),
            ("miss to a no-op upstream, no semantic cache", fresh(clients["plain"])),
            ("miss to a no-op upstream, semantic cache on (embed, search, index)", fresh(clients["semantic"])),
            ("embedding one question alone (MiniLM, CPU)", embed_one),
        ],
        n,
    )
    assert semantic.stats.semantic_hits >= n and semantic.stats.semantic_errors == 0
    for client in clients.values():
        await client.aclose()
    return rows


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_redis(deadline: float = 10.0) -> Iterator[int]:
    """A throwaway `redis-server` on 127.0.0.1 (no persistence), stopped on exit; yields its port."""
    import redis

    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        limit = time.monotonic() + deadline
        probe = redis.Redis(host="127.0.0.1", port=port)
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > limit:
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)
        probe.close()
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def redis_rows(n: int, port: int) -> tuple[list[Row], list[Row]]:
    """(client rows, store-level rows): Redis and TieredStore hits next to a memory hit; store.get vs raw GET."""
    import redis.asyncio as aioredis

    from llm_cache.middleware.stores import RedisStore, TieredStore

    memory_cache, memory_client = await cached_client(MemoryStore(max_entries=10_000))
    redis_store = RedisStore(host="127.0.0.1", port=port, prefix="bench:")
    redis_cache, redis_client = await cached_client(redis_store)
    tiered = TieredStore(
        MemoryStore(max_entries=10_000), RedisStore(host="127.0.0.1", port=port, prefix="tier:"), l1_max_ttl=600
    )
    await tiered.start()
    tiered_cache, tiered_client = await cached_client(tiered)
    floor_client = httpx2.AsyncClient(transport=FixedResponse())
    rows = await interleave(
        [
            ("floor: httpx2 client + no-op transport (1 KB)", poster(floor_client)),
            ("memory hit via AsyncCachingTransport (1 KB)", poster(memory_client)),
            ("TieredStore L1 hit via AsyncCachingTransport (1 KB)", poster(tiered_client)),
            ("Redis hit via AsyncCachingTransport (1 KB)", poster(redis_client)),
        ],
        n,
    )
    for cache in (memory_cache, redis_cache, tiered_cache):
        assert cache.stats.hits >= n

    # Store level: the entry the cache wrote, read by the store and by a bare redis.asyncio client.
    raw = aioredis.Redis(host="127.0.0.1", port=port)
    physical = [k async for k in raw.scan_iter(match="bench:*")]
    assert len(physical) == 1, physical
    logical = physical[0].decode().removeprefix("bench:")
    stored = await raw.get(physical[0])
    assert stored is not None and await redis_store.get(logical) == stored

    async def raw_get() -> object:
        return await raw.get(physical[0])

    async def store_get() -> object:
        return await redis_store.get(logical)

    store_rows = await interleave(
        [
            (f"raw redis.asyncio GET ({len(stored)} B entry)", raw_get),
            (f"RedisStore.get, same key ({len(stored)} B entry)", store_get),
        ],
        n,
    )
    for client in (memory_client, redis_client, tiered_client, floor_client):
        await client.aclose()
    await raw.aclose()
    await tiered.close()
    await redis_store.close()
    return rows, store_rows


def key_rows(n: int) -> list[Row]:
    """Key computation alone, as each call brings its own body object: a body not seen before (the
    first sight of a prompt: parse, exact-number scan, canonical form, hashes), and the same body
    asked again (the prepared-request memo, which still hashes the new body object to find it)."""
    cache = Cache()
    headers = dict(HEADERS)  # what the transport hands the engine
    rows = []
    clock = time.perf_counter_ns
    for size in (1024, 10 * 1024, 100 * 1024):
        body = chat_body(size)
        assert body.startswith(b'{"model":"gpt-4o-mini","temperature":0.2,"messages":[{"role":"system"')
        for label in ("new body", "asked again"):
            samples = []
            for i in range(n):
                # a new object either way, made before the clock starts
                request = body.replace(b"lorem", _letters(i), 1) if label == "new body" else bytes(bytearray(body))
                start = clock()
                cache.prepare("POST", "/v1/chat/completions", "", headers, request)
                samples.append(clock() - start)
            rows.append((f"key computation (prepare) {size // 1024} KB, {label}", *summarise(samples)))
    return rows


def _letters(i: int) -> bytes:
    """Five letters naming `i`: a different prompt of the same size, with no digit to scan."""
    return bytes(97 + (i // 26**k) % 26 for k in range(5))


def print_table(rows: list[Row], reference: str) -> None:
    floor_median = rows[0][1]
    print(f"| measurement | median µs | p99 µs | median / {reference} |")
    print("| --- | ---: | ---: | ---: |")
    for name, median, p99 in rows:
        print(f"| {name} | {median:.1f} | {p99:.1f} | {median / floor_median:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument(
        "--redis",
        action="store_true",
        help="also Redis and TieredStore hits, on a private redis-server started for the run",
    )
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="also memory hits with the OpenTelemetry SDK: tracer only, sdk_telemetry() with and without "
        "store spans, 1 in 10 sampled; and the time spent inside the SDK's calls",
    )
    parser.add_argument(
        "--semantic",
        action="store_true",
        help="also the semantic cache's costs: exact and semantic hits, misses with and without it",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="also streamed memory hits (an entry filled by a stream, one filled by JSON) and entry sizes",
    )
    args = parser.parse_args()
    rows = asyncio.run(client_rows(args.requests, args.telemetry))
    rows += key_rows(args.requests)
    print(f"# {time.strftime('%Y-%m-%d')} · Python {platform.python_version()} · {platform.machine()}")
    print_table(rows, "floor")
    if args.telemetry:
        no_sdk = next(median for name, median, _ in rows if name.startswith("memory hit via"))
        share = asyncio.run(sdk_share(args.requests))
        print()
        print("# inside the OpenTelemetry SDK, per sdk_telemetry() memory hit")
        print("| SDK call | µs per hit | of the hit without an SDK |")
        print("| --- | ---: | ---: |")
        for label, micros in [*share, ("total", sum(m for _, m in share))]:
            print(f"| {label} | {micros:.1f} | {micros / no_sdk:.0%} |")
    if args.stream:
        stream_table, sizes = asyncio.run(stream_rows(args.requests))
        print()
        print(f"# streamed hits of a {STREAMED_WORDS}-chunk chat answer with usage")
        print_table(stream_table, "floor")
        print()
        print("| stored entry | bytes |")
        print("| --- | ---: |")
        for label, size in sizes:
            print(f"| {label} | {size} |")
    if args.semantic:
        print()
        print("# semantic cache (all-MiniLM-L6-v2 on the CPU, in-process index), 1/10 of the calls")
        print_table(asyncio.run(semantic_rows(max(50, args.requests // 10))), "first row")
    if args.redis:
        with private_redis() as port:
            redis_client_rows, store_rows = asyncio.run(redis_rows(args.requests, port))
        print()
        print(f"# Redis {redis_version()} on 127.0.0.1 (private redis-server, no persistence)")
        print_table(redis_client_rows, "floor")
        print()
        print_table(store_rows, "raw GET")


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
    return next((part.removeprefix("v=") for part in out.split() if part.startswith("v=")), "?")


if __name__ == "__main__":
    main()
