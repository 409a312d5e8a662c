"""CacheMiddleware inside a real FastAPI app and a plain Starlette app.

The apps in `asgi_apps.py` imitate a provider and count their calls, so every
count that stays the same is a request the middleware answered from the cache.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from starlette.types import Message

from llm_cache.middleware import AsyncCachingTransport, Cache, CacheMiddleware
from tests.middleware.asgi_apps import Calls, fastapi_app, starlette_app
from tests.support.stores import CountingStore

CHAT = "/v1/chat/completions"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
BODY = {"model": "gpt-4o-mini", "messages": QUESTION, "temperature": 0.2}
KEY = {"authorization": "Bearer sk-alice"}


def wrapped(kind: str, cache: Cache, **options: Any) -> tuple[Any, Calls]:
    calls = Calls()
    if kind == "fastapi":
        app: Any = fastapi_app(calls)
        app.add_middleware(CacheMiddleware, cache=cache, **options)
    else:
        app = CacheMiddleware(starlette_app(calls), cache=cache, **options)
    return app, calls


def client(app: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://app")


async def post(app: Any, body: Any = BODY, path: str = CHAT, headers: dict[str, str] = KEY) -> httpx2.Response:
    async with client(app) as http:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await http.post(path, content=content, headers={"content-type": "application/json", **headers})


@pytest.fixture(params=["fastapi", "starlette"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- hits and misses -------------------------------------------------------------------------


async def test_miss_then_hit_without_calling_the_app(kind: str) -> None:
    cache = Cache()
    app, calls = wrapped(kind, cache)
    first = await post(app)
    second = await post(app)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.json() == first.json()
    assert second.headers["x-cache-key"] == first.headers["x-cache-key"]
    assert int(second.headers["content-length"]) == len(second.content)
    assert "age" in second.headers
    assert calls.count["chat"] == 1


async def test_stream_after_json_and_json_after_stream_hit_with_the_same_content(kind: str) -> None:
    cache = Cache()
    app, calls = wrapped(kind, cache)
    first = await post(app)
    streamed = await post(app, {**BODY, "stream": True})
    assert streamed.headers["x-cache"] == "HIT"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert "".join(_deltas(streamed.text)) == first.json()["choices"][0]["message"]["content"]
    assert calls.count["chat"] == 1

    other = {**BODY, "temperature": 0.9}
    streamed_first = await post(app, {**other, "stream": True})
    assert streamed_first.headers["x-cache"] == "MISS"
    as_json = await post(app, other)
    assert as_json.headers["x-cache"] == "HIT"
    assert as_json.json()["choices"][0]["message"]["content"] == "".join(_deltas(streamed_first.text))
    assert calls.count["chat"] == 2


def _deltas(sse: str) -> list[str]:
    out = []
    for line in sse.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                out.append(choice.get("delta", {}).get("content") or "")
    return out


async def test_openai_sdk_through_the_middleware_json_and_stream() -> None:
    cache = Cache()
    app, calls = wrapped("fastapi", cache)
    sdk = openai.AsyncOpenAI(
        api_key="sk-alice",
        base_url="http://app/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)),
    )
    first = await sdk.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    second = await sdk.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    stream = await sdk.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "The capital of France is Paris."
    assert calls.count["chat"] == 1


async def test_anthropic_sdk_through_the_middleware_stream_then_json() -> None:
    cache = Cache()
    app, calls = wrapped("starlette", cache)
    sdk = anthropic.AsyncAnthropic(
        api_key="sk-ant-alice",
        base_url="http://app",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)),
    )
    params: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": QUESTION}
    async with sdk.messages.stream(**params) as stream:
        streamed = await stream.get_final_text()
    message = await sdk.messages.with_raw_response.create(**params)
    assert message.headers["x-cache"] == "HIT"
    assert (await message.parse()).content[0].text == streamed == "The capital of France is Paris."
    assert calls.count["messages"] == 1


async def test_a_request_cached_through_the_transport_is_a_hit_through_the_middleware() -> None:
    """An app that forwards to a provider names it (`upstream`): keys then match the transport's."""
    cache = Cache()
    app, calls = wrapped("starlette", cache, upstream="http://app")
    backend = starlette_app(Calls())  # a separate provider behind the transport
    transport = AsyncCachingTransport(cache=cache, inner=httpx2.ASGITransport(app=backend))
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as http:
        via_transport = await http.post(CHAT, json=BODY, headers=KEY)
    assert via_transport.headers["x-cache"] == "MISS"
    via_middleware = await post(app)
    assert via_middleware.headers["x-cache"] == "HIT"
    assert via_middleware.headers["x-cache-key"] == via_transport.headers["x-cache-key"]
    assert via_middleware.json() == via_transport.json()
    assert calls.count["chat"] == 0


async def test_the_same_request_to_two_upstreams_never_shares_an_entry() -> None:
    cache = Cache()
    first, _ = wrapped("starlette", cache, upstream="https://eu.provider.test/v1")
    second, second_calls = wrapped("starlette", cache, upstream="https://us.provider.test/v1")
    assert (await post(first)).headers["x-cache"] == "MISS"
    assert (await post(second)).headers["x-cache"] == "MISS" and second_calls.count["chat"] == 1


async def test_a_caller_naming_an_upstream_in_a_header_never_files_its_answer_under_that_upstream() -> None:
    """`x-llm-cache-upstream` is the gateway's to name (in the ASGI scope, which no caller can reach): a
    caller's header would file this app's answer under another provider's key, where a transport
    calling that provider would be served it."""
    cache = Cache()
    app, calls = wrapped("starlette", cache)
    other = "http://other.test"
    forged = await post(app, headers={**KEY, "x-llm-cache-upstream": other + CHAT})
    assert forged.headers["x-cache"] == "MISS" and calls.count["chat"] == 1
    assert (await post(app)).headers["x-cache"] == "HIT"  # keyed as the app's own, header or not
    backend_calls = Calls()
    transport = AsyncCachingTransport(cache=cache, inner=httpx2.ASGITransport(app=starlette_app(backend_calls)))
    async with httpx2.AsyncClient(transport=transport, base_url=other) as http:
        direct = await http.post(CHAT, json=BODY, headers=KEY)
    assert direct.headers["x-cache"] == "MISS" and backend_calls.count["chat"] == 1


# -- per-request controls --------------------------------------------------------------------


async def test_no_cache_refreshes_and_no_store_does_not_store(kind: str) -> None:
    cache = Cache()
    app, calls = wrapped(kind, cache)
    await post(app)
    refreshed = await post(app, headers={**KEY, "cache-control": "no-cache"})
    assert refreshed.headers["x-cache"] == "REFRESH"
    assert calls.count["chat"] == 2
    other = {**BODY, "temperature": 0.5}
    await post(app, other, headers={**KEY, "cache-control": "no-store"})
    again = await post(app, other)
    assert again.headers["x-cache"] == "MISS"
    assert calls.count["chat"] == 4


async def test_max_age_and_only_if_cached(kind: str) -> None:
    cache = Cache()
    app, calls = wrapped(kind, cache)
    missing = await post(app, headers={**KEY, "cache-control": "only-if-cached"})
    assert missing.status_code == 504
    assert calls.count["chat"] == 0
    await post(app)
    await asyncio.sleep(0.05)  # the entry is now older than max-age=0 (no other task is awaited)
    stale = await post(app, headers={**KEY, "cache-control": "max-age=0"})
    assert stale.headers["x-cache"] != "HIT"
    assert calls.count["chat"] == 2


async def test_body_cache_field_is_honoured_and_stripped_before_the_app(kind: str) -> None:
    cache = Cache()
    app, calls = wrapped(kind, cache)
    await post(app)
    response = await post(app, {**BODY, "cache": {"no-cache": True}})
    assert response.headers["x-cache"] == "REFRESH"
    assert "cache" not in json.loads(calls.bodies[-1])
    assert calls.count["chat"] == 2


async def test_credentials_are_isolated(kind: str) -> None:
    app, calls = wrapped(kind, Cache())
    await post(app)
    bob = await post(app, headers={"authorization": "Bearer sk-bob"})
    assert bob.headers["x-cache"] == "MISS"
    assert calls.count["chat"] == 2


# -- what passes through ---------------------------------------------------------------------


async def test_a_body_over_the_limit_passes_through_whole_and_is_counted(kind: str) -> None:
    cache = Cache()
    app, calls = wrapped(kind, cache, max_body_bytes=256)
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 2000}]}
    encoded = json.dumps(big).encode()
    first = await post(app, encoded)
    second = await post(app, encoded)
    assert first.headers["x-cache"] == second.headers["x-cache"] == "BYPASS"
    assert calls.bodies == [encoded, encoded]
    assert calls.count["chat"] == 2
    assert (cache.stats.oversized, cache.stats.bypasses) == (2, 2)
    assert cache.telemetry.snapshot()["llm_cache_requests"] == {("bypass", "openai", "unknown", "none"): 2}


async def test_malformed_json_reaches_the_app_and_is_never_cached(kind: str) -> None:
    app, calls = wrapped(kind, Cache())
    for _ in range(2):
        response = await post(app, b"{not json")
        assert response.status_code == 422
        assert response.json()["error"]["message"] == "app says: bad JSON"
        assert response.headers["x-cache"] == "BYPASS"
    assert calls.bodies == [b"{not json", b"{not json"]


async def test_a_stream_that_fails_midway_is_not_stored(kind: str) -> None:
    cache = Cache()
    app, calls = wrapped(kind, cache)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await post(app, {**BODY, "stream": True}, path="/broken/v1/chat/completions")
    assert calls.count["broken"] == 2
    assert cache.stats.stored == 0


async def test_a_500_is_not_stored(kind: str) -> None:
    cache = Cache()
    app, calls = wrapped(kind, cache)
    for _ in range(2):
        response = await post(app, path="/failing/v1/chat/completions")
        assert response.status_code == 500
    assert calls.count["error"] == 2
    assert cache.stats.stored == 0


async def test_non_llm_routes_are_untouched(kind: str) -> None:
    app, calls = wrapped(kind, Cache())
    async with client(app) as http:
        response = await http.get("/health")
    assert response.text == "ok" and "x-cache" not in response.headers


async def test_include_exclude_and_mount_prefix() -> None:
    app, calls = wrapped("starlette", Cache(), exclude=["/v1/chat/*"])
    assert "x-cache" not in (await post(app)).headers
    assert (await post(app, {"model": "c", "max_tokens": 5, "messages": QUESTION}, path="/v1/messages")).headers[
        "x-cache"
    ] == "MISS"

    app, calls = wrapped("starlette", Cache(), include=["/v1/messages"])
    assert "x-cache" not in (await post(app)).headers

    app, calls = wrapped("starlette", Cache(), mount_prefix="/llm")
    assert "x-cache" not in (await post(app)).headers
    await post(app, path="/llm" + CHAT)
    assert (await post(app, path="/llm" + CHAT)).headers["x-cache"] == "HIT"
    assert calls.count["chat"] == 2


async def test_a_mounted_sub_app_is_keyed_and_matched_on_the_path_it_routes_on() -> None:
    """Starlette's `Mount` (and uvicorn's `--root-path`) hand a sub-app the full path with the mount in
    `root_path`; the app routes on the path after it. The middleware keyed and matched the full path:
    an `exclude` the user wrote for the sub-app's own paths let the excluded path be cached, and with
    `upstream` the key named a provider URL (`.../api/v1/...`) that the transport never shares."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    cache = Cache()
    excluded, excluded_calls = wrapped("starlette", cache, exclude=["/v1/chat/*"])
    app = Starlette(routes=[Mount("/api", app=excluded)])
    assert "x-cache" not in (await post(app, path="/api" + CHAT)).headers
    assert excluded_calls.count["chat"] == 1

    sub, calls = wrapped("starlette", cache, upstream="http://app")
    app = Starlette(routes=[Mount("/api", app=sub)])
    transport = AsyncCachingTransport(cache=cache, inner=httpx2.ASGITransport(app=starlette_app(Calls())))
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as http:
        via_transport = await http.post(CHAT, json=BODY, headers=KEY)
    mounted = await post(app, path="/api" + CHAT)
    assert mounted.headers["x-cache"] == "HIT"
    assert mounted.headers["x-cache-key"] == via_transport.headers["x-cache-key"]
    assert calls.count["chat"] == 0


async def test_what_the_app_adds_per_user_is_never_replayed_and_middlewares_outside_apply_to_hits() -> None:
    """Composition in a user's app: a `set-cookie` (SessionMiddleware's, or the endpoint's own) and a
    per-user header the app sets on a miss never reach the next caller of that entry; CORS and GZip
    added outside the cache (after it, in `add_middleware` order) treat a hit as they treat a miss. A
    CORS middleware inside the cache answers only misses: its per-origin headers are never stored."""
    from starlette.applications import Starlette
    from starlette.middleware.cors import CORSMiddleware
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.middleware.sessions import SessionMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Request) -> JSONResponse:
        await request.body()
        user = request.headers["x-who"]
        request.session["user"] = user
        choice = {"index": 0, "message": {"role": "assistant", "content": "Paris. " * 200}, "finish_reason": "stop"}
        response = JSONResponse(
            {"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "choices": [choice]}
        )
        response.set_cookie("theme", user)
        response.headers["x-user-id"] = user
        return response

    inner = SessionMiddleware(Starlette(routes=[Route(CHAT, chat, methods=["POST"])]), secret_key="s")
    outside: Any = CacheMiddleware(inner, cache=Cache())
    outside = GZipMiddleware(CORSMiddleware(outside, allow_origins=["https://a.example"]), minimum_size=100)
    origin = {"origin": "https://a.example", "accept-encoding": "gzip"}
    alice = await post(outside, headers={**KEY, **origin, "x-who": "alice"})
    bob = await post(outside, headers={**KEY, **origin, "x-who": "bob"})
    assert (alice.headers["x-cache"], bob.headers["x-cache"]) == ("MISS", "HIT")
    assert "alice" in alice.headers["set-cookie"] and alice.headers["x-user-id"] == "alice"
    assert "set-cookie" not in bob.headers and "x-user-id" not in bob.headers
    for answer in (alice, bob):
        assert answer.headers["access-control-allow-origin"] == "https://a.example"
        assert answer.headers["content-encoding"] == "gzip"
    assert bob.json() == alice.json()

    cors_inside = CacheMiddleware(CORSMiddleware(inner, allow_origins=["https://a.example"]), cache=Cache())
    first = await post(cors_inside, headers={**KEY, **origin, "x-who": "alice"})
    hit = await post(cors_inside, headers={**KEY, "origin": "https://b.example", "x-who": "bob"})
    assert first.headers["access-control-allow-origin"] == "https://a.example"
    assert hit.headers["x-cache"] == "HIT" and "access-control-allow-origin" not in hit.headers


async def test_a_side_call_of_a_mounted_app_goes_to_the_mounted_path() -> None:
    """Gemini's cachedContents are created by a side call through the same app: in an app mounted at
    `/gem`, it goes to `/gem/v1beta/cachedContents` with the mount in `root_path`, as a request the
    app routes itself would."""
    from google import genai
    from google.genai import types
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from tests.support.fake_provider import create_fake_provider

    provider = create_fake_provider()
    paths: list[str] = []

    async def seen(scope: Any, receive: Any, send: Any) -> None:  # (the fake routes on the whole path)
        paths.append(scope["path"])
        await provider.app({**scope, "path": scope["path"].removeprefix(scope["root_path"])}, receive, send)

    cache = Cache(prompt_caching={"gemini": {"cached_contents": True}})
    app = Starlette(routes=[Mount("/gem", app=CacheMiddleware(seen, cache=cache))])
    config = types.GenerateContentConfig(system_instruction="You answer for a bicycle shop. " + "Policy. " * 600)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)) as http:
        options = types.HttpOptions(base_url="http://app/gem", api_version="v1beta", httpx_async_client=http)
        client = genai.Client(api_key="gm-alice", http_options=options).aio
        answer = await client.models.generate_content(model="gemini-2.5-flash", contents="Tyres?", config=config)
    assert answer.usage_metadata is not None and answer.usage_metadata.cached_content_token_count
    assert paths == ["/gem/v1beta/cachedContents", "/gem/v1beta/models/gemini-2.5-flash:generateContent"]


# -- disconnects and concurrency -------------------------------------------------------------


async def test_a_client_that_disconnects_mid_stream_leaves_nothing_stored() -> None:
    cache = Cache()
    app, calls = wrapped("starlette", cache)
    body = json.dumps({**BODY, "stream": True}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": CHAT,
        "raw_path": CHAT.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"authorization", b"Bearer sk-alice"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("app", 80),
    }
    sent: list[Message] = []
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) >= 3:
            raise OSError("client went away")

    with pytest.raises(OSError):
        await app(scope, receive, send)
    assert cache.stats.stored == 0
    again = await post(app, {**BODY, "stream": True})
    assert again.headers["x-cache"] == "MISS"
    assert calls.count["chat"] == 2


async def test_an_upload_the_client_cuts_never_reaches_the_app_as_a_complete_body() -> None:
    """A client that leaves mid-upload: the server hands over the bytes it got (`more_body`), then
    `http.disconnect`. The middleware handed the app those bytes as the whole body (`more_body` False),
    so a Starlette app read a truncated request as complete and could forward it upstream; the app must
    see the body unfinished, then the disconnect (Starlette's `request.body()` raises `ClientDisconnect`)."""
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    cache = Cache()
    seen: list[Any] = []

    async def chat(request: Request) -> JSONResponse:
        try:
            seen.append(await request.body())
        except ClientDisconnect as left:
            seen.append(left)
            raise
        return JSONResponse({})

    app = CacheMiddleware(Starlette(routes=[Route(CHAT, chat, methods=["POST"])]), cache=cache)
    body = json.dumps(BODY).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": CHAT,
        "query_string": b"",
        "headers": [(b"authorization", b"Bearer sk-alice"), (b"content-length", str(len(body)).encode())],
    }
    messages: list[Message] = [
        {"type": "http.request", "body": body[:20], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    async def gone(message: Message) -> None:
        pass  # (what uvicorn does with an answer to a client that left)

    with pytest.raises(ClientDisconnect):
        await app(scope, receive, gone)
    assert len(seen) == 1 and isinstance(seen[0], ClientDisconnect)
    assert cache.stats.stored == 0


async def test_a_client_that_leaves_before_the_answer_releases_its_waiters_at_once() -> None:
    """The first caller's client disconnects while the app still works on its answer: the identical
    request waiting on that call goes upstream itself at once, not when the first answer comes (which
    here would be never: the first app waits for the second call)."""
    cache = Cache()
    second_called = asyncio.Event()
    choice = {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}
    answer = json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [choice]})

    async def provider(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the request body
        if (b"x-first", b"1") in scope["headers"]:
            assert (await receive())["type"] == "http.disconnect"
            await asyncio.wait_for(second_called.wait(), 5)
        else:
            second_called.set()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer.encode()})

    app = CacheMiddleware(provider, cache=cache)
    scope = {
        "type": "http",
        "method": "POST",
        "path": CHAT,
        "query_string": b"",
        "headers": [(b"authorization", b"Bearer sk-alice"), (b"x-first", b"1")],
    }
    messages: list[Message] = [
        {"type": "http.request", "body": json.dumps(BODY).encode(), "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    async def gone(message: Message) -> None:
        pass

    first = asyncio.create_task(app(scope, receive, gone))
    assert (await asyncio.wait_for(post(app), 5)).status_code == 200  # whether it joined the first call or not
    await asyncio.wait_for(first, 5)
    assert cache.stats.stored == 1  # the second answer; the first, whose client left, is not stored


async def test_fifty_concurrent_identical_requests_call_the_app_once(kind: str) -> None:
    store = CountingStore()
    cache = Cache(store=store)
    app, calls = wrapped(kind, cache)
    calls.gate = asyncio.Event()
    async with client(app) as http:
        tasks = [asyncio.create_task(http.post(CHAT, json=BODY, headers=KEY)) for _ in range(50)]
        async with asyncio.timeout(10):
            while calls.count["chat"] == 0 or store.reads < 50:
                await asyncio.sleep(0)  # yield until one request is at the app and 49 wait on it
        calls.gate.set()
        responses = await asyncio.gather(*tasks)
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["id"] for r in responses}) == 1
    assert calls.count["chat"] == 1


async def test_a_streaming_response_is_stored_even_when_starlette_cancels_its_task(tmp_path: Any) -> None:
    """Starlette cancels a StreamingResponse's task group as the client goes; the write must finish."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from llm_cache.middleware.stores import DiskStore

    calls = 0

    async def chat(request: Any) -> StreamingResponse:
        nonlocal calls
        calls += 1

        async def body() -> Any:
            choice = {"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}
            yield json.dumps(
                {"id": f"c{calls}", "object": "chat.completion", "created": 1, "model": "m", "choices": [choice]}
            ).encode()

        return StreamingResponse(body(), media_type="application/json")

    app = CacheMiddleware(
        Starlette(routes=[Route(CHAT, chat, methods=["POST"])]),
        cache=Cache(store=DiskStore(tmp_path), coalesce_timeout=5),
    )
    first = await post(app)
    second = await post(app)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert calls == 1
