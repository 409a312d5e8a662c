"""`llm-cache`: serve | check-config | demo | warm | stats | invalidate | calibrate."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from .._wire import masked_query_credential, masked_url
from ._json_files import json_lines, json_object, key_file
from ._printable import printable
from ._version import __version__
from .config import ConfigError, GatewayConfig, default_config, effective_settings, load_config, with_upstreams
from .config.schema import MIN_KEY_CHARS, DiskStoreConfig

ADMIN_ENV = "LLM_CACHE_ADMIN_KEY"
_FAST_HINT = " (pip install 'llm-cache-middleware[fast]' for uvloop + httptools: about 2x the hits/s)"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's `log_config`: every line (uvicorn's and the cache's) with time, level and logger, and
    no credential a request sent in its query string."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "plain",
        "stream": "ext://sys.stderr",
        "filters": ["query_credentials"],
    }
    logger = {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"query_credentials": {"()": f"{__name__}.MaskedQueryCredentials"}},
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {"stderr": handler},
        "loggers": {name: dict(logger) for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "llm_cache")},
    }


class MaskedQueryCredentials(logging.Filter):
    """Masks the value of a key sent in a query string (`?key=`: a gateway key, Gemini's API key) in
    every path a log line is given, as uvicorn's access log gives each request's path and query; and
    escapes the control characters of every text a line quotes: the access log names the client as
    `X-Forwarded-For` says (from 127.0.0.1, by default), and a header value may hold ESC and BEL."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(
            isinstance(arg, str) and ("?" in arg or not arg.isprintable()) for arg in args
        ):
            record.args = tuple(_logged(arg) if isinstance(arg, str) else arg for arg in args)
        return True


def _logged(text: str) -> str:
    """`text` as a log line may quote it: no query credential, no control character."""
    text = _masked_path(text)
    return text if text.isprintable() else printable(text, len(text))


def _masked_path(text: str) -> str:
    path, question, query = text.partition("?")
    return f"{path}?{masked_query_credential(query)}" if question else text


def server_stack(installed: Callable[[str], bool] | None = None) -> dict[str, str]:
    """uvicorn's event loop and HTTP parser: uvloop and httptools when installed (the `fast` extra), else
    asyncio and h11. uvicorn's "auto" picks the same; naming them lets `serve` say which it runs on."""
    if installed is None:
        installed = _importable
    return {
        "loop": "uvloop" if installed("uvloop") else "asyncio",
        "http": "httptools" if installed("httptools") else "h11",
    }


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _fail(message: str) -> int:
    print(f"llm-cache: {message}", file=sys.stderr)
    return 1


def _config(path: str | None, upstreams: Sequence[str] | None) -> GatewayConfig:
    config = load_config(path) if path else default_config()
    return with_upstreams(config, list(upstreams or []))


# -- serve ----------------------------------------------------------------------------------------


def _check_semantic_index(config: GatewayConfig) -> None:
    """A semantic index that cannot work on its server (a Redis without RediSearch) stops `serve` with one
    line now, before any worker starts (each worker's lifespan would fail with a traceback)."""
    semantic_config = config.cache.semantic
    if not config.cache.enabled or semantic_config is None or not semantic_config.enabled:
        return
    from .config import build_semantic
    from .semantic import IndexUnavailable

    semantic = build_semantic(semantic_config)

    async def check() -> None:
        try:
            await semantic.check_index()
        finally:
            await semantic.close()

    try:
        asyncio.run(check())
    except IndexUnavailable as error:
        raise ConfigError(f"cache.semantic.index: {error}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .gateway import ADMIN_KEY_ENV_ENV, with_admin_key_from

    try:
        config = with_admin_key_from(_config(args.config, args.upstream), args.admin_key_env)
    except ConfigError as error:
        return _fail(str(error))
    _check_semantic_index(config)
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    workers = args.workers or config.server.workers
    store = config.cache.store
    where = store.directory if isinstance(store, DiskStoreConfig) else None
    if isinstance(store, DiskStoreConfig) and where is None:
        from .stores.disk import default_cache_dir

        where = str(default_cache_dir())
    print(
        f"llm-cache gateway on http://{host}:{port} ({config.source or 'embedded default'}, "
        f"{config.dialect} config; store {store.type}{f' at {where}' if where else ''}; "
        f"cache {'on' if config.cache.enabled else 'off'}; workers {workers})",
        file=sys.stderr,
    )
    for note in config.notes:
        print(note, file=sys.stderr)
    _warn_open_keys(config, f"http://{host}:{port}")
    _warn_weak_keys(config)
    stack = server_stack()
    if args.http != "auto":
        if args.http == "httptools" and not _importable("httptools"):
            return _fail("--http httptools: httptools is not installed (the `fast` extra installs it)")
        stack["http"] = args.http
    print(f"server: {stack['loop']} + {stack['http']}{_FAST_HINT if stack['http'] == 'h11' else ''}", file=sys.stderr)
    options = {**config.server.uvicorn_options(), **stack}
    if workers > 1:
        # Each worker process builds its own app from the same file and overrides; no file is said
        # as such, so that a path left in the environment cannot give the workers another config.
        os.environ["LLM_CACHE_CONFIG"] = str(Path(args.config).resolve()) if args.config else ""
        os.environ["LLM_CACHE_UPSTREAMS"] = "\n".join(args.upstream or [])
        os.environ[ADMIN_KEY_ENV_ENV] = args.admin_key_env or ""
        uvicorn.run(
            "llm_cache.middleware.gateway:gateway_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=args.log_level,
            log_config=log_config(args.log_level),
            **options,
        )
        return 0
    from .gateway import create_gateway

    try:
        app = create_gateway(config)
    except ConfigError as error:
        return _fail(str(error))
    uvicorn.run(app, host=host, port=port, log_level=args.log_level, log_config=log_config(args.log_level), **options)
    return 0


def _warn_open_keys(config: GatewayConfig, url: str) -> None:
    """A loud warning when anyone who reaches the gateway could spend the upstream keys in the config."""
    if config.auth.keys:
        return
    spent = config.upstream_keys()
    if not spent:
        return
    bar = "!" * 78
    print(
        f"{bar}\n"
        f"WARNING: the LLM routes of {url} need no key, and they call the upstreams with the API keys\n"
        f"in this config ({', '.join(spent)}): anyone who can reach the gateway spends them.\n"
        "Set auth.keys (native config) or general_settings.master_key (LiteLLM config) to require a key.\n"
        f"{bar}",
        file=sys.stderr,
        flush=True,
    )


def _warn_weak_keys(config: GatewayConfig) -> None:
    """One WARNING naming the fields whose admin or client key is short enough to guess (never the key)."""
    weak = config.weak_keys()
    if weak:
        print(
            f"WARNING: {', '.join(weak)}: shorter than {MIN_KEY_CHARS} characters, a key anyone may guess; "
            "use a long random one (e.g. `openssl rand -hex 32`)",
            file=sys.stderr,
            flush=True,
        )


# -- check-config ---------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from .config.builders import check_semantic
    from .gateway import build_router

    try:
        config = load_config(args.file)
        _check_store_classes(config)
        check_semantic(config.cache.semantic)
        build_router(config)  # the router refuses what it cannot use, naming the field
    except ConfigError as error:
        return _fail(str(error))
    out.write(f"OK: {args.file} ({config.dialect} dialect)\n")
    out.write("# effective settings (secrets masked)\n")
    out.write(yaml.safe_dump(effective_settings(config), sort_keys=False, default_flow_style=False))
    for note in config.notes:
        out.write(f"# {note}\n")
    return 0


def _check_store_classes(config: GatewayConfig) -> None:
    from .config import store_class

    pending: list[Any] = [config.cache.store]
    while pending:
        store = pending.pop()
        store_class(store.type)
        if store.type in ("tiered", "dual_cache"):
            pending += [store.l1, store.l2]


# -- demo -----------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(seed=args.seed)


# -- warm -----------------------------------------------------------------------------------------


def _read_requests(path: str) -> list[dict[str, Any]]:
    items = []
    try:
        lines = list(json_lines(Path(path)))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    for number, item in lines:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("path"), str)
            or not isinstance(item.get("body"), dict)
        ):
            raise ConfigError(f'{path}:{number}: expected {{"path": "/v1/...", "body": {{...}}, "headers": {{...}}}}')
        if not isinstance(item.get("headers", {}), dict):
            raise ConfigError(f"{path}:{number}: headers must be an object")
        items.append(item)
    return items


class _Progress:
    """Warm's progress on stderr: rich's bar with rate and ETA on a terminal (`pip install
    llm-cache-middleware[progress]`), a plain bar on a terminal without rich, nothing per step when
    stderr is a file or a pipe (a log gets the failures and the summary only)."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._rich: Any = None
        if self.tty:
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            except ImportError:
                return
            columns = (
                TextColumn("warming"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("[progress.data.speed]{task.fields[rate]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self._rich = Progress(*columns, console=Console(file=self.stream), transient=False)
            self._task = self._rich.add_task("warm", total=total, rate="-")
            self._started = time.perf_counter()
            self._rich.start()

    def step(self) -> None:
        self.done += 1
        if self._rich is not None:
            elapsed = max(time.perf_counter() - self._started, 1e-9)
            self._rich.update(self._task, advance=1, rate=f"{self.done / elapsed:.1f} req/s")
        elif self.tty:
            filled = 30 * self.done // max(self.total, 1)
            self.stream.write(f"\rwarming [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}")
            self.stream.flush()

    def note(self, line: str) -> None:
        """A line above the bar (a failure), never inside it; its control characters escaped (it quotes
        what the gateway answered, `x-cache` and error text)."""
        line = printable(line, len(line))
        if self._rich is not None:
            self._rich.console.print(line, markup=False, highlight=False)
        else:
            self.stream.write(("\n" if self.tty and self.done else "") + line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self.tty and self.done:
            self.stream.write("\n")


_VERIFY_KEEPS = ("namespace", "use-cache")
"""The body `cache` controls that change which entry a request reads, kept when checking what was stored."""


async def _kept(client: Any, url: str, body: dict[str, Any], headers: dict[str, str]) -> bool:
    """Whether the cache now holds the answer to this request: the same request again, `only-if-cached`.

    It never reaches the upstream (a miss is a 504). A write still in progress is waited for, because
    the engine joins a request to the call in flight for its key (in one gateway worker).
    """
    headers = {k: v for k, v in headers.items() if k.lower() != "cache-control"}
    headers["cache-control"] = "only-if-cached"
    controls = body.get("cache")
    if isinstance(controls, dict):
        body = {**body, "cache": {k: v for k, v in controls.items() if k in _VERIFY_KEEPS}}
    async with client.stream("POST", url, json=body, headers=headers) as response:
        await response.aread()
    return bool(response.is_success and response.headers.get("x-cache") == "HIT")


async def _warm(items: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, int]:
    import httpx2

    from .gateway import family_of, upstream_url

    cache = None
    if args.gateway:
        client = httpx2.AsyncClient(base_url=args.gateway.rstrip("/"), timeout=args.timeout)
        config = None
    else:
        from ._transport import AsyncCachingTransport
        from .config import build_cache

        config = _config(args.config, args.upstream)
        cache = build_cache(config)
        transport: Any = AsyncCachingTransport(cache)  # an httpx2 transport by duck typing
        client = httpx2.AsyncClient(transport=transport, timeout=args.timeout)
    counts = {"stored": 0, "already_cached": 0, "not_stored": 0, "failed": 0}
    progress = _Progress(len(items))
    semaphore = asyncio.Semaphore(args.concurrency)

    async def one(item: dict[str, Any]) -> None:
        headers = {str(k): str(v) for k, v in (item.get("headers") or {}).items()}
        path = item["path"]
        async with semaphore:
            try:
                if config is not None:
                    family = family_of(path, any(name.lower() == "anthropic-version" for name in headers))
                    base = config.upstreams.base_url(family) if family else None
                    if base is None:
                        raise ValueError(f"no upstream for {path}")
                    url = upstream_url(base, path)
                else:
                    url = path
                async with client.stream("POST", url, json=item["body"], headers=headers) as response:
                    await response.aread()
                outcome = response.headers.get("x-cache", "")
                if response.is_success and outcome == "HIT":
                    counts["already_cached"] += 1
                elif response.is_success and outcome in ("MISS", "REFRESH"):
                    if await _kept(client, url, item["body"], headers):
                        counts["stored"] += 1
                    else:
                        counts["not_stored"] += 1
                        progress.note(f"not stored: {path} -> answered ({outcome}) but the cache did not keep it")
                else:
                    counts["failed"] += 1
                    progress.note(f"failed: {path} -> {response.status_code} x-cache={outcome or '-'}")
            except Exception as error:
                counts["failed"] += 1
                progress.note(f"failed: {path} -> {type(error).__name__}: {error}")
            progress.step()

    try:
        await asyncio.gather(*(one(item) for item in items))
    finally:
        progress.close()
        await client.aclose()
        if cache is not None:
            await cache.close()
    return counts


def cmd_warm(args: argparse.Namespace) -> int:
    if not args.gateway and not args.config:
        return _fail("warm needs --gateway URL (a running gateway) or --config FILE (straight through the engine)")
    items = _read_requests(args.file)
    started = time.perf_counter()
    try:
        counts = asyncio.run(_warm(items, args))
    except ConfigError as error:
        return _fail(str(error))
    print(
        f"warm: {len(items)} requests in {time.perf_counter() - started:.1f}s: stored {counts['stored']}, "
        f"already cached {counts['already_cached']}, not stored {counts['not_stored']}, failed {counts['failed']}"
    )
    return 1 if counts["failed"] or counts["not_stored"] else 0


# -- stats and invalidate -------------------------------------------------------------------------


class _Unreachable(Exception):
    """A running gateway was expected at a URL and did not answer."""

    def __init__(self, url: str, error: BaseException) -> None:
        super().__init__(
            f"cannot reach the gateway at {_named(url)} ({type(error).__name__}: {error}); "
            "is `llm-cache serve` running there? Check --gateway"
        )


class _Unreadable(Exception):
    """What a server at `--gateway` answered is larger than any management answer."""


def _named(url: str) -> str:
    """A gateway URL as a failure names it: its password and secret query values masked (a gateway
    behind a basic-auth proxy), its control characters escaped, 200 characters at most."""
    return printable(masked_url(url), 200)


_MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""The most of a management answer the commands read (10,000 verification outcomes are under 1 MiB)."""


def _key_from_file(path: str | None) -> str | None:
    """The admin key `--admin-key-file` names, if it is given."""
    if path is None:
        return None
    try:
        return key_file(Path(path))
    except ValueError as error:
        raise ConfigError(f"--admin-key-file {error}") from None


def _admin_key_options(parser: argparse.ArgumentParser, when: str = "") -> None:
    """`--admin-key KEY` or `--admin-key-file FILE` (else $LLM_CACHE_ADMIN_KEY)."""
    given = parser.add_mutually_exclusive_group()
    given.add_argument(
        "--admin-key",
        help=f"{when}admin key (default: ${ADMIN_ENV}); other local users see it in `ps`: prefer the variable "
        "or --admin-key-file",
    )
    given.add_argument("--admin-key-file", metavar="FILE", help=f"{when}read the admin key from FILE's first line")


def _admin_call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """The status and JSON a gateway's management endpoint answered (`{"error": ...}` for a body that is
    not JSON). Redirects are not followed: the admin key goes to the URL given and nowhere else."""
    import httpx2

    key = args.admin_key or _key_from_file(args.admin_key_file) or os.environ.get(ADMIN_ENV)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    url = args.gateway.rstrip("/") + path
    raw = bytearray()
    try:
        with httpx2.stream(method, url, json=body, headers=headers, timeout=30, follow_redirects=False) as response:
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > _MAX_ANSWER_BYTES:
                    raise _Unreadable(f"{_named(url)} answered more than {_MAX_ANSWER_BYTES} bytes")
    except (httpx2.TransportError, OSError) as error:
        raise _Unreachable(args.gateway, error) from None
    try:
        return response.status_code, json.loads(raw)
    except (ValueError, RecursionError):  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        if 200 <= response.status_code < 300:
            raise _Unreadable(f"{_named(url)} answered {response.status_code} with no JSON it can read") from None
        return response.status_code, {"error": {"message": raw[:200].decode("utf-8", "replace")}}


def _answer(status: int, data: Any) -> int:
    """Print a 2xx answer's JSON; anything else is a failure quoting the error's message (another
    server's error shape too), its control characters escaped: it is the server's text on our terminal."""
    if not 200 <= status < 300:
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message", error) if isinstance(error, dict) else error
        text = message if isinstance(message, str) else json.dumps(message)
        return _fail(f"gateway answered {status}: {printable(text, 500)}")
    print(json.dumps(data, indent=2))  # (ASCII only: a string's control characters are escaped)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    return _answer(*_admin_call(args, "GET", "/cache/stats"))


def cmd_invalidate(args: argparse.Namespace) -> int:
    if args.config is not None:
        if not args.tag:
            return _fail("--config invalidates by --tag only; use --gateway for the other forms")
        return _invalidate_in_store(args.config, args.tag)
    if args.tag:
        path, body = "/cache/invalidate", {"tags": args.tag}
    elif args.key:
        path, body = "/cache/delete", {"key": args.key}
    elif args.request:
        try:
            request = json_object(Path(args.request))
        except ValueError as error:
            return _fail(str(error))
        path, body = "/cache/delete", request
    elif args.namespace:
        path, body = "/cache/flush", {"namespace": args.namespace}
    elif args.prefix:
        path, body = "/cache/flush", {"prefix": args.prefix}
    else:
        path, body = "/cache/flush", {"all": True}
    return _answer(*_admin_call(args, "POST", path, body))


def _invalidate_in_store(config_path: str, tags: list[str]) -> int:
    """A tag invalidation straight in the store (and semantic index) a config names, no gateway needed."""
    from .config import build_cache
    from .stores.base import StoreError

    cache = build_cache(_config(config_path, None))

    async def run() -> list[str]:
        try:
            return await cache.invalidate(tags)
        finally:
            await cache.close()

    try:
        removed = asyncio.run(run())
    except StoreError as error:
        return _fail(str(error))
    print(json.dumps({"invalidated": tags, "deleted": len(removed)}, indent=2))
    return 0


# -- calibrate ------------------------------------------------------------------------------------


def cmd_calibrate(args: argparse.Namespace) -> int:
    if args.from_gateway:
        return _calibrate_from_gateway(args)
    if args.pairs is None:
        return _fail("calibrate needs PAIRS.jsonl or --from-gateway URL")
    try:
        from .semantic import OpenAIEmbedder
        from .semantic.calibrate import read_pairs, report, similarities
        from .semantic.embedders import local_embedder
        from .semantic.models import ModelNotInstalled
    except ImportError as error:
        return _fail(f"calibrate needs the semantic extra ({error.name} is missing)")
    try:
        a, b, labels = read_pairs(Path(args.pairs))
        embedder: Any = (
            OpenAIEmbedder(args.embedder_url, args.embedder_model, api_key=os.environ.get("OPENAI_API_KEY"))
            if args.embedder_url
            else local_embedder(args.model)
        )
    except (ValueError, json.JSONDecodeError, ModelNotInstalled) as error:
        return _fail(str(error))

    async def scored() -> Any:
        try:
            return await similarities(embedder, a, b)
        finally:
            close = getattr(embedder, "aclose", None)
            if close is not None:
                await close()

    print(report(a, b, labels, asyncio.run(scored()), args.target_precision))
    return 0


_CALIBRATION_FIELDS = (("error_rate_of", "hits"), ("max_error_rate", None), ("threshold", None))


def _calibrate_from_gateway(args: argparse.Namespace) -> int:
    """The calibration report over the verification outcomes a running gateway's bounded mode collected."""
    try:
        from .semantic.calibrate import outcomes_report
    except ImportError as error:
        return _fail(f"calibrate needs the semantic extra ({error.name} is missing)")
    args.gateway = args.from_gateway
    status, data = _admin_call(args, "GET", "/cache/semantic/verifications")
    if status >= 400:
        return _answer(status, data)
    try:
        records = [(float(r["similarity"]), str(r["outcome"])) for r in data["verifications"]]
    except (TypeError, KeyError, ValueError):
        records = None
    if records is None or not all(math.isfinite(similarity) for similarity, _ in records):
        return _fail(f"{_named(args.from_gateway)} did not answer a list of verification outcomes")
    per, bound, threshold = (printable(str(data.get(name, default)), 40) for name, default in _CALIBRATION_FIELDS)
    print(f"{_named(args.from_gateway)}: bound {bound} of {per}, serving from {threshold}")
    print(outcomes_report(records, args.target_precision))
    return 0


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-cache", description="Caching gateway and tools for LLM APIs.")
    parser.add_argument("--version", action="version", version=f"llm-cache {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the caching gateway",
        description="Run the caching gateway (uvicorn). Without --config: a disk store "
        "under the user's cache directory, exact matching.",
    )
    serve.add_argument("--config", metavar="FILE", help="YAML config (native, guide or LiteLLM dialect)")
    serve.add_argument("--host", help="bind address (default: config server.host, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: config server.port, else 4000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: config server.workers, else 1)")
    serve.add_argument(
        "--upstream",
        action="append",
        metavar="FAMILY=URL",
        help="override an upstream base URL, e.g. openai=http://127.0.0.1:8080/v1 (repeatable)",
    )
    serve.add_argument(
        "--admin-key-env",
        metavar="NAME",
        help="enable the /cache/* admin API with the key in environment variable NAME (overrides the config)",
    )
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument(
        "--http",
        default="auto",
        choices=["auto", "h11", "httptools"],
        help="HTTP/1.1 parser (default auto: httptools when installed, else h11)",
    )
    serve.set_defaults(handler=cmd_serve)

    check = commands.add_parser(
        "check-config",
        help="validate a config file and print the effective settings",
        description="Validate FILE; print the effective settings with secrets masked. "
        "Exits 1 with the error on a bad file.",
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=cmd_check_config)

    demo = commands.add_parser(
        "demo",
        help="offline demo against a simulated provider",
        description="Start the gateway in-process in front of a SIMULATED OpenAI-compatible "
        "provider, replay an FAQ workload for three tenants and print a report. "
        "Exits 1 if the gateway misbehaves.",
    )
    demo.add_argument("--seed", type=int, default=7, help="workload and latency seed (default 7)")
    demo.set_defaults(handler=cmd_demo)

    warm = commands.add_parser(
        "warm",
        help="pre-fill the cache from a JSONL file of requests",
        description='Send each line {"path": "/v1/chat/completions", "body": {...}, '
        '"headers": {...}} through a running gateway (--gateway) or straight '
        "through the engine to the upstream (--config).",
    )
    warm.add_argument("file", metavar="FILE")
    target = warm.add_mutually_exclusive_group()
    target.add_argument("--gateway", metavar="URL", help="a running gateway, e.g. http://127.0.0.1:4000")
    target.add_argument("--config", metavar="FILE", help="use this config's store and upstreams directly")
    warm.add_argument("--upstream", action="append", metavar="FAMILY=URL", help="with --config: override an upstream")
    warm.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    warm.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    warm.set_defaults(handler=cmd_warm)

    stats = commands.add_parser(
        "stats", help="cache statistics of a running gateway", description="GET /cache/stats from a running gateway."
    )
    stats.add_argument("--gateway", metavar="URL", required=True)
    _admin_key_options(stats)
    stats.set_defaults(handler=cmd_stats)

    invalidate = commands.add_parser(
        "invalidate",
        help="delete entries in a running gateway's cache, or by tag in a config's store",
        description="Delete one entry (by key or by the request that produced it), every entry "
        "with a tag, a namespace, a raw key prefix, or everything, through a running gateway's admin "
        "API (--gateway); or every entry with a tag straight in the store a config names (--config).",
    )
    what = invalidate.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--tag",
        action="append",
        metavar="TAG",
        help="every entry carrying TAG (repeatable: any of them), e.g. doc:42 or model:gpt-4o",
    )
    what.add_argument("--key", help="an x-cache-key value")
    what.add_argument(
        "--request",
        metavar="FILE",
        help='JSON file {"path": ..., "body": {...}, "headers": {...}} whose key is computed '
        "(include the caller's credential header: entries are scoped per credential)",
    )
    what.add_argument("--namespace", help="every entry in this namespace")
    what.add_argument("--prefix", help="every store key starting with this (e.g. an old key_prefix)")
    what.add_argument("--all", action="store_true", help="every entry under the gateway's key prefix")
    where = invalidate.add_mutually_exclusive_group(required=True)
    where.add_argument("--gateway", metavar="URL", help="a running gateway, e.g. http://127.0.0.1:4000")
    where.add_argument("--config", metavar="FILE", help="with --tag: invalidate in this config's store directly")
    _admin_key_options(invalidate)
    invalidate.set_defaults(handler=cmd_invalidate)

    calibrate = commands.add_parser(
        "calibrate",
        help="precision and recall of semantic thresholds on labelled prompt pairs",
        description="Embed labelled prompt pairs (JSON lines {a, b, label}) and print, per threshold and guard "
        "setting, precision, recall and wrong-hit rate, the threshold that meets a target precision, and a "
        "histogram of similarities.",
    )
    calibrate.add_argument("pairs", metavar="PAIRS.jsonl", nargs="?")
    calibrate.add_argument(
        "--from-gateway", metavar="URL", help="the verification outcomes a running gateway collected, not pairs"
    )
    _admin_key_options(calibrate, "with --from-gateway: ")
    calibrate.add_argument("--target-precision", type=float, default=0.95)
    calibrate.add_argument(
        "--model", help="a local model's name or folder (default: all-MiniLM-L6-v2; see docs/semantic.md)"
    )
    calibrate.add_argument("--embedder-url", metavar="URL", help="an OpenAI-compatible embeddings base URL instead")
    calibrate.add_argument("--embedder-model", default="text-embedding-3-small")
    calibrate.set_defaults(handler=cmd_calibrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; an expected failure is one line on stderr saying what failed, and exit status 1."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
    except (ConfigError, _Unreachable, _Unreadable) as error:
        return _fail(str(error))
    except PermissionError as error:
        return _fail(f"permission denied: {error.filename or error}; run as a user who may access it")
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        return _fail(f"{where}{error.strerror or error}")
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
