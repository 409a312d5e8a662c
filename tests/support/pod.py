"""A "pod" for multi-process tests: a separate OS process with its own Cache on a shared Redis.

The child (`python -m tests.support.pod '<json>'`) builds a `RedisStore` or `RedisClusterStore`,
a `Cache` and an `AsyncCachingTransport` under the real openai SDK, and asks the fake provider
each question in `questions`, `repeat` times concurrently. It reports on stdout, one JSON object a
line: `{"event": "waiting"}` as soon as its cache waits on another pod's lock, then
`{"event": "done", "answers": [...], "stats": {...}}`.

The parent side is `Pod`: `await Pod.start(...)`, `await pod.event("waiting")`, `await pod.done()`,
`pod.kill()`, and `first_to("waiting", pods)`; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0
SLACK = {"timeout": 2.0, "connect_timeout": 2.0}


# -- the child ------------------------------------------------------------------------------------


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _ask(client: Any, question: str) -> dict[str, Any]:
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
        )
    except Exception as error:  # reported, so the parent can assert that nothing failed
        return {"error": repr(error)}
    completion = raw.parse()
    return {
        "status": raw.status_code,
        "x_cache": raw.headers.get("x-cache"),
        "id": completion.id,
        "content": completion.choices[0].message.content,
    }


async def _report_waiting(cache: Any) -> None:
    while cache.stats.lock_waits == 0:
        await asyncio.sleep(0.005)  # polling our own counter, not synchronisation
    _emit({"event": "waiting"})


async def _main(config: dict[str, Any]) -> None:
    import httpx2
    import openai

    from llm_cache.middleware import AsyncCachingTransport, Cache
    from llm_cache.middleware.stores.redis import RedisClusterStore, RedisStore

    store: RedisStore
    if config.get("cluster_nodes"):
        nodes = [(host, int(port)) for host, port in config["cluster_nodes"]]
        store = RedisClusterStore(startup_nodes=nodes, prefix=config["prefix"], **SLACK)
    else:
        store = RedisStore(config["redis_url"], prefix=config["prefix"], **SLACK)
    cache = Cache(store, **config.get("settings", {}))
    http_client = httpx2.AsyncClient(transport=AsyncCachingTransport(cache=cache))
    client = openai.AsyncOpenAI(
        api_key="sk-pod", base_url=config["base_url"], http_client=http_client, max_retries=0, timeout=30
    )
    watcher = asyncio.create_task(_report_waiting(cache))
    try:
        async with asyncio.timeout(config.get("deadline", DEADLINE)):
            calls = [_ask(client, q) for q in config["questions"] for _ in range(config.get("repeat", 1))]
            answers = await asyncio.gather(*calls)
    finally:
        watcher.cancel()
        await http_client.aclose()
        await cache.close()
    _emit({"event": "done", "answers": answers, "stats": cache.stats.as_dict()})


# -- the parent -----------------------------------------------------------------------------------


class Pod:
    """A running child pod; `events` keeps every line it has printed so far."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: Any) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._stderr_file = stderr

    @classmethod
    async def start(
        cls,
        base_url: str,
        prefix: str,
        questions: list[str],
        *,
        redis_url: str | None = None,
        cluster_nodes: list[tuple[str, int]] | None = None,
        repeat: int = 1,
        settings: dict[str, Any] | None = None,
    ) -> Pod:
        config = {
            "base_url": base_url,
            "prefix": prefix,
            "questions": questions,
            "redis_url": redis_url,
            "cluster_nodes": cluster_nodes,
            "repeat": repeat,
            "settings": settings or {},
        }
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        # a file, not a pipe: nobody has to drain it while the pod runs; `close()` closes it
        stderr = tempfile.TemporaryFile()  # noqa: SIM115
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.pod",
            json.dumps(config),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        return cls(process, stderr)

    async def event(self, name: str, deadline: float = DEADLINE) -> dict[str, Any]:
        """The first line whose event is `name`, read within `deadline` seconds."""
        for seen in self.events:
            if seen["event"] == name:
                return seen
        assert self.process.stdout is not None
        async with asyncio.timeout(deadline):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise AssertionError(f"pod exited before {name!r}: {self.stderr()}")
                message = json.loads(line)
                self.events.append(message)
                if message["event"] == name:
                    return message

    async def done(self, deadline: float = DEADLINE) -> dict[str, Any]:
        """The pod's answers and cache stats once it has finished."""
        result = await self.event("done", deadline)
        async with asyncio.timeout(deadline):
            await self.process.wait()
        return result

    def kill(self) -> None:
        """SIGKILL: the pod dies at once, without releasing anything it holds."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def close(self) -> None:
        """Kill the pod if it still runs and wait (bounded) for it to be gone."""
        self.kill()
        async with asyncio.timeout(10):
            await self.process.wait()
        self._stderr_file.close()

    def stderr(self) -> str:
        """The tail of what the pod wrote on stderr (for failure messages)."""
        self._stderr_file.seek(0)
        return self._stderr_file.read().decode(errors="replace")[-3000:]


async def first_to(name: str, pods: list[Pod], deadline: float = DEADLINE) -> Pod:
    """The first of `pods` to report event `name` within `deadline` seconds."""
    readers = {asyncio.ensure_future(pod.event(name)): pod for pod in pods}
    done, pending = await asyncio.wait(readers, timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
    for reader in pending:
        reader.cancel()
    await asyncio.gather(*pending, return_exceptions=True)  # no reader may linger on a pod's stdout
    if not done:
        raise AssertionError(f"no pod reported {name!r} within {deadline} s")
    reader = done.pop()
    reader.result()
    return readers[reader]


if __name__ == "__main__":
    asyncio.run(_main(json.loads(sys.argv[1])))
