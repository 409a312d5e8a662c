"""A mixed chat load for the gateway: several concurrent clients, hits and misses, JSON and streams.

Each worker loops until told to stop: it asks one of a few hot prompts (hits once stored) or a
prompt nobody asked before (a miss), as JSON or as a stream, through one `httpx2.AsyncClient`.
Every answer is checked, not only its status: a JSON body must parse, a stream must end with
`[DONE]`, and the text must echo the prompt and, for a hot prompt, equal every other answer to it
in either form. Anything else (a transport error, a non-200, a wrong or partial answer) is a
failure, recorded with what went wrong. `Tally` keeps the counts that tests and the soak
benchmark wait on and report.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx2
import orjson

MODEL = "gpt-4o-mini"
PATH = "/v1/chat/completions"


@dataclass
class Tally:
    requests: int = 0
    hits: int = 0
    failures: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    """(`x-cache` value, "json" or "stream") -> answers."""
    hot_answers: dict[str, str] = field(default_factory=dict)
    """The text every answer to a hot prompt must have (the first one seen)."""

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "hits": self.hits,
            "failures": len(self.failures),
            "outcomes": {f"{cache}/{form}": n for (cache, form), n in sorted(self.outcomes.items())},
        }


class MixedLoad:
    """`await load.run(stop)` drives `workers` clients until `stop` is set."""

    def __init__(
        self,
        url: str,
        *,
        workers: int = 6,
        hot: int = 8,
        unique_every: int = 4,
        api_key: str = "sk-load",
        timeout: float = 30.0,
        label: str = "load",
    ) -> None:
        self.url = url
        self.workers = workers
        self.hot = [f"{label} hot question {i}: what do you know about topic {i}?" for i in range(hot)]
        self.unique_every = unique_every
        self.headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
        self.timeout = timeout
        self.label = label
        self.tally = Tally()
        self._serial = itertools.count()

    async def run(self, stop: asyncio.Event) -> Tally:
        limits = httpx2.Limits(max_connections=self.workers, max_keepalive_connections=self.workers)
        async with httpx2.AsyncClient(base_url=self.url, timeout=self.timeout, limits=limits) as client:
            await asyncio.gather(*(self._worker(client, index, stop) for index in range(self.workers)))
        return self.tally

    async def _worker(self, client: httpx2.AsyncClient, index: int, stop: asyncio.Event) -> None:
        for turn in itertools.count():
            if stop.is_set():
                return
            serial = next(self._serial)
            hot = turn % self.unique_every != 0
            prompt = self.hot[serial % len(self.hot)] if hot else f"{self.label} unique question {serial}"
            stream = (turn // 2 + index) % 2 == 1
            await self.ask(client, prompt, stream, hot)

    async def ask(self, client: httpx2.AsyncClient, prompt: str, stream: bool, hot: bool) -> None:
        body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
        if stream:
            body["stream"] = True
        try:
            await self._ask(client, body, prompt, hot)
        finally:
            self.tally.requests += 1  # answered, well or badly

    async def _ask(self, client: httpx2.AsyncClient, body: dict[str, Any], prompt: str, hot: bool) -> None:
        tally = self.tally
        stream = bool(body.get("stream"))
        form = "stream" if stream else "json"
        try:
            async with client.stream("POST", PATH, content=orjson.dumps(body), headers=self.headers) as response:
                data = await response.aread()
        except (httpx2.HTTPError, OSError) as error:
            tally.failures.append(f"{form} {prompt!r}: {type(error).__name__}: {error}")
            return
        cache = response.headers.get("x-cache", "none")
        problem = self._check(response.status_code, data, prompt, stream, hot)
        if problem is not None:
            tally.failures.append(f"{form} {prompt!r} ({cache}): {problem}")
            return
        tally.outcomes[(cache, form)] += 1
        if cache == "HIT":
            tally.hits += 1

    def _check(self, status: int, data: bytes, prompt: str, stream: bool, hot: bool) -> str | None:
        if status != 200:
            return f"status {status}: {data[:200]!r}"
        try:
            text = stream_text(data) if stream else json_text(data)
        except (ValueError, KeyError, IndexError, TypeError) as error:
            return f"unreadable answer ({error}): {data[:200]!r}"
        if not text.endswith(f": {prompt}"):  # the fake provider echoes prompts of up to 80 characters
            return f"answer to another prompt: {text!r}"
        if hot:
            first = self.tally.hot_answers.setdefault(prompt, text)
            if text != first:
                return f"answer differs from the first one: {text!r} != {first!r}"
        return None


def json_text(data: bytes) -> str:
    return str(orjson.loads(data)["choices"][0]["message"]["content"])


def stream_text(data: bytes) -> str:
    """The text of an OpenAI chat stream; raises ValueError unless it ends with `[DONE]`."""
    events = [line[5:].strip() for line in data.split(b"\n") if line.startswith(b"data:")]
    if not events or events[-1] != b"[DONE]":
        raise ValueError("stream without its [DONE] event")
    parts = []
    for event in events[:-1]:
        for choice in orjson.loads(event).get("choices") or []:
            parts.append((choice.get("delta") or {}).get("content") or "")
    return "".join(parts)
