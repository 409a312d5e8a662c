"""Hooks: the operator's policy at four points of a call, through the transports, the ASGI middleware
and a config file; a hook that raises or overruns is skipped and the call goes on."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from llm_cache.middleware import (
    AnswerView,
    AsyncCachingTransport,
    Cache,
    CacheMiddleware,
    CachingTransport,
    ForwardView,
    HitView,
    LookupView,
)
from llm_cache.middleware._hooks import SYNC_HOOK_THREADS
from llm_cache.middleware.config import build_cache, load_config
from llm_cache.middleware.stores import DiskStore, MemoryStore
from tests.middleware.asgi_apps import Calls, starlette_app
from tests.support.fake_provider_fixtures import RunningFakeProvider
from tests.support.stores import CountingStore
from tests.test_log_limit import Clock

ROOT = Path(__file__).resolve().parents[2]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def sdk(
    cache: Cache, fake: RunningFakeProvider, headers: dict[str, str] | None = None, api_key: str = "sk-alice"
) -> openai.OpenAI:
    http = httpx2.Client(transport=CachingTransport(cache=cache))
    return openai.OpenAI(
        api_key=api_key, base_url=fake.openai_base_url, http_client=http, max_retries=0, default_headers=headers
    )


def ask(client: openai.OpenAI, **overrides: Any) -> Any:
    params: dict[str, Any] = {"model": "gpt-4o-mini", "messages": QUESTION, **overrides}
    return client.chat.completions.with_raw_response.create(**params)


def outcomes(client: openai.OpenAI, times: int = 2, **overrides: Any) -> list[str]:
    return [ask(client, **overrides).headers["x-cache"] for _ in range(times)]


# -- each point --------------------------------------------------------------------------------------


def test_before_lookup_changes_the_key_inputs(fake_provider: RunningFakeProvider) -> None:
    def ignore_user(view: LookupView) -> None:
        view.key_body.pop("user", None)

    cache = Cache(store=MemoryStore(), hooks={"before_lookup": [ignore_user]})
    client = sdk(cache, fake_provider)
    assert ask(client, user="alice").headers["x-cache"] == "MISS"
    assert ask(client, user="bob").headers["x-cache"] == "HIT"  # the same key without `user`
    assert fake_provider.last.json["user"] == "alice"  # what went upstream is the caller's body


def test_before_lookup_sets_the_namespace_but_never_the_scope(fake_provider: RunningFakeProvider) -> None:
    async def tenant_namespace(view: LookupView) -> None:
        view.namespace = view.request.headers.get("x-tenant", "default")

    cache = Cache(store=MemoryStore(), hooks={"before_lookup": [tenant_namespace]})
    acme = sdk(cache, fake_provider, {"x-tenant": "acme"})
    globex = sdk(cache, fake_provider, {"x-tenant": "globex"})
    assert outcomes(acme) == ["MISS", "HIT"]
    assert ask(globex).headers["x-cache"] == "MISS"
    assert ask(acme).headers["x-cache-key"].startswith("acme:")
    bob = sdk(cache, fake_provider, {"x-tenant": "acme"}, api_key="sk-bob")
    assert ask(bob).headers["x-cache"] == "MISS"  # same namespace, another credential: another scope


def test_before_forward_rewrites_what_goes_upstream(fake_provider: RunningFakeProvider) -> None:
    def add_metadata(view: ForwardView) -> None:
        view.body["metadata"] = {"team": view.request.headers.get("x-team", "none")}

    cache = Cache(store=MemoryStore(), hooks={"before_forward": [add_metadata]})
    client = sdk(cache, fake_provider, {"x-team": "search"})
    assert outcomes(client) == ["MISS", "HIT"]  # keyed by the caller's body
    assert fake_provider.count() == 1
    assert fake_provider.last.json["metadata"] == {"team": "search"}


def test_after_answer_vetoes_storing_and_sets_the_ttl(fake_provider: RunningFakeProvider) -> None:
    def policy(view: AnswerView) -> None:
        view.store = "do not keep" not in view.body.decode()
        view.ttl = 42
        view.tags.add(f"model:{view.request.model}")

    store = CountingStore()
    cache = Cache(store=store, hooks={"after_answer": [policy]})
    client = sdk(cache, fake_provider)
    assert outcomes(client) == ["MISS", "HIT"]
    assert store.ttls == [42]
    assert outcomes(client, messages=[{"role": "user", "content": "say: do not keep"}]) == ["MISS", "MISS"]
    assert store.ttls == [42]


def test_tags_an_after_answer_hook_adds_are_stored_and_invalidate_the_entry(fake_provider: RunningFakeProvider) -> None:
    def tag_tenant(view: AnswerView) -> None:
        view.tags.add(f"tenant:{view.request.headers.get('x-tenant', 'none')}")

    cache = Cache(store=MemoryStore(), hooks={"after_answer": [tag_tenant]})
    acme, other = sdk(cache, fake_provider, {"x-tenant": "acme"}), sdk(cache, fake_provider, {"x-tenant": "other"})
    assert outcomes(acme) == ["MISS", "HIT"]
    assert outcomes(other, messages=[{"role": "user", "content": "Another question"}]) == ["MISS", "HIT"]
    assert len(cache.invalidate_sync(tags=["tenant:acme"])) == 1  # the keys it removed
    assert ask(acme).headers["x-cache"] == "MISS"
    assert ask(other, messages=[{"role": "user", "content": "Another question"}]).headers["x-cache"] == "HIT"
    cache.close_sync()


async def two_tasks_at_once(cache: Cache, fake: RunningFakeProvider, both_looked_up: Any) -> list[Any]:
    http = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
    client = openai.AsyncOpenAI(api_key="sk-alice", base_url=fake.openai_base_url, http_client=http)
    create = client.chat.completions.with_raw_response.create
    calls = [asyncio.create_task(create(model="gpt-4o-mini", messages=QUESTION)) for _ in range(2)]
    try:
        async with asyncio.timeout(10):
            while not both_looked_up():
                await asyncio.sleep(0.001)
        await asyncio.to_thread(fake.wait_for_in_flight, 1, 10)
    finally:
        fake.release()
    answers = await asyncio.gather(*calls)
    await http.aclose()
    return answers


def two_threads_at_once(cache: Cache, fake: RunningFakeProvider, both_looked_up: Any) -> list[Any]:
    client = sdk(cache, fake)
    answers: list[Any] = [None, None]
    threads = [threading.Thread(target=lambda n=n: answers.__setitem__(n, ask(client)), daemon=True) for n in (0, 1)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while not both_looked_up():
            assert time.monotonic() < deadline, "both requests did not look up within 10 s"
            time.sleep(0.001)
        fake.wait_for_in_flight(1, 10)
    finally:
        fake.release()
    for thread in threads:
        thread.join(10)
    client.close()
    return answers


@pytest.mark.parametrize("driver", ["async tasks", "sync threads"])
def test_on_hit_sees_an_answer_shared_by_coalescing_and_a_veto_sends_the_waiter_upstream(
    fake_provider: RunningFakeProvider, driver: str
) -> None:
    """Two identical requests at once, through the async transport (two tasks) or the sync one (two
    threads): one leads upstream, the other waits on it; the hook sees the shared answer and vetoes it."""
    seen: list[str] = []

    def never_shared(view: HitView) -> None:
        seen.append(view.match)
        view.serve = view.match != "coalesced"

    store = CountingStore()
    cache = Cache(store=store, hooks={"on_hit": [never_shared]})
    fake_provider.hold()
    if driver == "async tasks":
        answers = asyncio.run(two_tasks_at_once(cache, fake_provider, lambda: store.reads >= 2))
    else:
        answers = two_threads_at_once(cache, fake_provider, lambda: store.reads >= 2)
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "MISS"]
    assert seen == ["coalesced"]
    assert fake_provider.count() == 2


def test_on_hit_vetoes_serving(fake_provider: RunningFakeProvider) -> None:
    seen: list[float] = []

    def never_serve_old(view: HitView) -> None:
        seen.append(view.age)
        view.serve = view.request.headers.get("x-fresh-only") is None

    cache = Cache(store=MemoryStore(), hooks={"on_hit": [never_serve_old]})
    assert outcomes(sdk(cache, fake_provider)) == ["MISS", "HIT"]
    assert ask(sdk(cache, fake_provider, {"x-fresh-only": "1"})).headers["x-cache"] == "MISS"
    assert fake_provider.count() == 2 and len(seen) == 2


async def test_the_async_transport_runs_hooks_registered_on_the_cache(fake_provider: RunningFakeProvider) -> None:
    cache = Cache(store=MemoryStore())

    @cache.hooks.before_lookup
    async def no_cache_for_tools(view: LookupView) -> None:
        view.bypass = "tools" in view.request.body

    http = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
    client = openai.AsyncOpenAI(api_key="sk-a", base_url=fake_provider.openai_base_url, http_client=http, max_retries=0)
    create = client.chat.completions.with_raw_response.create
    plain = [(await create(model="m", messages=QUESTION)).headers["x-cache"] for _ in range(2)]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with_tools = [(await create(model="m", messages=QUESTION, tools=[tool])).headers["x-cache"] for _ in range(2)]
    assert plain == ["MISS", "HIT"] and with_tools == ["BYPASS", "BYPASS"]
    await client.close()


# -- a hook never fails the request --------------------------------------------------------------------


def test_a_raising_hook_is_logged_and_skipped(
    fake_provider: RunningFakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(view: LookupView) -> None:
        view.bypass = True  # dropped with the rest of its changes
        raise RuntimeError("bug in the operator's hook")

    def short_ttl(view: LookupView) -> None:
        view.ttl = 5

    store = CountingStore()
    cache = Cache(store=store, hooks={"before_lookup": [broken, short_ttl], "on_hit": [broken]})
    with caplog.at_level(logging.WARNING, "llm_cache.middleware"):
        assert outcomes(sdk(cache, fake_provider)) == ["MISS", "HIT"]
    assert store.ttls == [5]  # the hook after the broken one still ran
    assert "before_lookup hook" in caplog.text and "raised; skipped" in caplog.text


def test_a_hook_failing_on_every_call_is_one_warning_an_interval(
    fake_provider: RunningFakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises on a caller's input raised a WARNING per call: a caller could fill the log at
    request rate. One per hook and point an interval now, then saying how many were not logged."""

    def broken(view: Any) -> None:
        raise RuntimeError("bug in the operator's hook")

    cache = Cache(store=MemoryStore(), hooks={"before_lookup": [broken], "on_hit": [broken]})
    clock = Clock()
    cache.hooks.warnings.clock = clock
    client = sdk(cache, fake_provider)
    with caplog.at_level(logging.WARNING, "llm_cache.middleware"):
        assert outcomes(client, times=5) == ["MISS", "HIT", "HIT", "HIT", "HIT"]
        clock.now += 61
        assert outcomes(client, times=1) == ["HIT"]
    raised = [r.getMessage() for r in caplog.records if "raised; skipped" in r.getMessage()]
    assert [line.split(" hook")[0] for line in raised] == ["before_lookup", "on_hit", "before_lookup", "on_hit"]
    assert "(4 more like it" in raised[2] and "(3 more like it" in raised[3]


@pytest.mark.parametrize(
    ("point", "field", "value"),
    [
        ("before_lookup", "ttl", "soon"),
        ("before_lookup", "ttl", float("nan")),
        ("before_lookup", "ttl", -5),
        ("before_lookup", "namespace", 5),
        ("before_lookup", "key_body", None),
        ("before_lookup", "bypass", "yes"),
        ("before_forward", "body", None),
        ("after_answer", "ttl", "soon"),
        ("after_answer", "ttl", float("inf")),
        ("after_answer", "tags", None),
        ("after_answer", "tags", "doc:1"),
        ("after_answer", "store", None),
        ("on_hit", "serve", None),
    ],
)
def test_a_hook_that_leaves_a_value_the_cache_cannot_use_is_skipped(
    point: str, field: str, value: Any, fake_provider: RunningFakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook's changes count only when the cache can use them, as a hook that raises changes nothing.
    Before, a TTL left as text, tags left as None or a namespace left as a number raised into the
    caller's request; a NaN or negative TTL stored an entry that was never served."""

    def careless(view: Any) -> None:
        setattr(view, field, value)

    store = CountingStore()
    cache = Cache(store=store, hooks={point: [careless]})
    with caplog.at_level(logging.WARNING, "llm_cache.middleware"):
        assert outcomes(sdk(cache, fake_provider)) == ["MISS", "HIT"]
    assert store.ttls == [600.0]  # as if there were no hook
    assert f"{point} hook" in caplog.text and "left" in caplog.text and "skipped" in caplog.text


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_slow_hook_is_skipped_after_its_budget(
    kind: str, fake_provider: RunningFakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    released = threading.Event()

    async def slow_async(view: LookupView) -> None:
        view.bypass = True
        await asyncio.sleep(10)  # cancelled at the budget

    def slow_sync(view: LookupView) -> None:
        view.bypass = True
        released.wait(10)  # a blocked worker thread: the call does not wait for it

    hook = slow_async if kind == "async" else slow_sync
    cache = Cache(store=MemoryStore(), hook_timeout=0.05, hooks={"before_lookup": [hook]})
    try:
        with caplog.at_level(logging.WARNING, "llm_cache.middleware"):
            assert outcomes(sdk(cache, fake_provider)) == ["MISS", "HIT"]
    finally:
        released.set()
    assert "took more than 0.050 s; skipped" in caplog.text


def test_sync_hooks_that_never_return_are_skipped_once_their_threads_are_all_busy(
    fake_provider: RunningFakeProvider, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Stuck sync hooks hold threads of their own, never the default executor the disk store runs on,
    and calls past those threads are skipped at once instead of queueing without bound."""
    released = threading.Event()

    def stuck(view: LookupView) -> None:
        released.wait(30)

    cache = Cache(store=DiskStore(tmp_path), hook_timeout=0.01, hooks={"before_lookup": [stuck]})
    client = sdk(cache, fake_provider)
    questions = [[{"role": "user", "content": f"Question {n}"}] for n in range(SYNC_HOOK_THREADS + 2)]
    try:
        with caplog.at_level(logging.WARNING, "llm_cache.middleware"):
            first = [ask(client, messages=question).headers["x-cache"] for question in questions]
            again = [ask(client, messages=question).headers["x-cache"] for question in questions]
    finally:
        released.set()
    assert first == ["MISS"] * len(questions) and again == ["HIT"] * len(questions)  # the disk store served
    assert "every hook thread is still busy" in caplog.text


# -- the ASGI middleware and a config file ---------------------------------------------------------------


async def test_the_asgi_middleware_runs_every_point() -> None:
    points: list[str] = []

    def note(point: str) -> Any:
        async def hook(view: Any) -> None:
            points.append(point)

        return hook

    hooks = {point: [note(point)] for point in ("before_lookup", "before_forward", "after_answer", "on_hit")}
    calls = Calls()
    app = CacheMiddleware(starlette_app(calls), cache=Cache(store=MemoryStore(), hooks=hooks))
    body = {"model": "gpt-4o-mini", "messages": QUESTION}
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://app") as http:
        answers = [
            await http.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-a"})
            for _ in range(2)
        ]
    assert [answer.headers["x-cache"] for answer in answers] == ["MISS", "HIT"]
    assert points == ["before_lookup", "before_forward", "after_answer", "before_lookup", "on_hit"]


def test_hooks_named_in_a_config_file_by_dotted_path(tmp_path: Path, fake_provider: RunningFakeProvider) -> None:
    (tmp_path / "cache_policy_hooks.py").write_text(
        textwrap.dedent(
            """
            def per_user_ttl(view):
                if view.request.headers.get("x-user-tier") == "premium":
                    view.ttl = 86400

            def no_storing_refusals(view):
                view.store = b"I cannot" not in view.body
            """
        )
    )
    config = {
        "cache": {
            "store": {"type": "memory"},
            "hooks": {
                "before_lookup": ["cache_policy_hooks:per_user_ttl"],
                "after_answer": ["cache_policy_hooks.no_storing_refusals"],
            },
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    cache = build_cache(load_config(path), store=CountingStore())
    assert outcomes(sdk(cache, fake_provider, {"x-user-tier": "premium"})) == ["MISS", "HIT"]
    assert cache.store.ttls == [86400]  # type: ignore[attr-defined]


def test_a_config_naming_a_missing_hook_fails_at_load_time(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"cache": {"hooks": {"on_hit": ["no_such_module_here:hook"]}}}))
    with pytest.raises(Exception, match="no_such_module_here"):
        load_config(path)


# -- the README's examples, as written --------------------------------------------------------------------


def readme_example() -> str:
    """The code block under `<!-- hooks-example -->` in README.md."""
    after = (ROOT / "README.md").read_text().split("<!-- hooks-example -->", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_examples_work(fake_provider: RunningFakeProvider, caplog: pytest.LogCaptureFixture) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    cache: Cache = namespace["cache"]
    store = CountingStore()
    cache.store = store
    with caplog.at_level(logging.INFO, "llm-calls"):
        premium = outcomes(sdk(cache, fake_provider, {"x-user-tier": "premium", "x-user-id": "u1"}))
        qa = outcomes(sdk(cache, fake_provider, {"x-user-id": "qa-7"}), messages=[{"role": "user", "content": "q"}])
        plain = outcomes(sdk(cache, fake_provider, {"x-user-id": "u2"}), messages=[{"role": "user", "content": "p"}])
    assert premium == ["MISS", "HIT"] and qa == ["BYPASS", "BYPASS"] and plain == ["MISS", "HIT"]
    assert store.ttls == [86_400, 600]
    assert "LLM call to chat.completions, model gpt-4o-mini" in caplog.text
