"""`llm-cache serve` as a real child process, for tests and benchmarks that kill, stop or starve it.

`GatewayProcess(config, directory).start()` writes the config as YAML (JSON is YAML), runs the
installed `llm-cache serve` on a free port of 127.0.0.1 and waits (bounded) for `/health`.
With `tmpfs=(path, size)` the gateway runs in a private mount namespace (`unshare -m`, or
`unshare -Urm` when not root) where `path` is a fresh tmpfs of `size` bytes: a real filesystem
that really fills (ENOSPC); `fill()` / `unfill()` act inside that namespace through `nsenter`.
With `read_only=path`, `path` is bind-mounted read-only in the gateway's namespace (real EROFS).
A filesystem cannot be remounted read-only while the gateway holds files open on it for writing
(EBUSY), so read-only is a state the gateway starts in. Nothing is left on the host afterwards.

`proc_figures(pid, port)` reads resident memory, open descriptors and established TCP connections
to `port` from /proc (Linux), for the soak benchmark and leak checks; `cpu_seconds(pid)` the CPU
time of a process and its workers, for the benchmarks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 30.0
STOP_DEADLINE = 10.0
ADMIN_KEY = "adm-faults"
FILLER = ".filler"


class GatewayProcessError(RuntimeError):
    """The gateway process did not start, or a namespace command failed."""


def llm_cache_binary() -> str:
    candidate = Path(sys.executable).parent / "llm-cache"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("llm-cache")
    if found is None:
        raise GatewayProcessError("llm-cache is not installed in this venv (run `make install`)")
    return found


def _namespace_tools() -> tuple[str, str]:
    tools = (shutil.which("unshare"), shutil.which("nsenter"))
    if None in tools:
        raise GatewayProcessError("unshare and nsenter (util-linux) are needed for the tmpfs faults")
    return tools  # type: ignore[return-value]


@dataclass
class ProcFigures:
    rss_kib: int
    fds: int
    connections: int


def proc_figures(pid: int, remote_port: int | None = None) -> ProcFigures:
    """Resident set, open descriptors and ESTABLISHED TCP connections to `remote_port` of `pid`."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    fds = 0
    for fd in fd_dir.iterdir():
        fds += 1
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed in between
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    connections = 0
    if remote_port is not None:
        wanted = f"{remote_port:04X}"
        for table in ("tcp", "tcp6"):
            path = Path(f"/proc/{pid}/net/{table}")
            if not path.exists():
                continue
            for row in path.read_text().splitlines()[1:]:
                fields = row.split()
                remote, state, inode = fields[2], fields[3], fields[9]
                if state == "01" and remote.rsplit(":", 1)[1] == wanted and inode in inodes:
                    connections += 1
    return ProcFigures(rss, fds, connections)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of `pid` and every live process descended from it (uvicorn's workers)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone in between
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, grown = {pid}, True
    while grown:
        found = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= found
        grown = bool(found)
    return sum(times.get(member, 0.0) for member in tree)


class GatewayProcess:
    """One `llm-cache serve` child process; `start()` may be called again after `kill()` or `stop()`."""

    def __init__(
        self,
        config: dict[str, Any],
        directory: Path,
        *,
        tmpfs: tuple[Path, int] | None = None,
        read_only: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.config = {"admin_key": ADMIN_KEY, **config}
        self.directory = directory
        self.tmpfs = tmpfs
        self.read_only = read_only
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_file = directory / "gateway.yaml"
        self.config_file.write_text(json.dumps(self.config))
        self.log = directory / "gateway.log"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the gateway has not been started"
        return self.process.pid

    def _command(self) -> list[str]:
        serve = [
            llm_cache_binary(),
            "serve",
            "--config",
            str(self.config_file),
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        if self.tmpfs is not None:
            path, size = self.tmpfs
            mount = 'mkdir -p "$0" && mount -t tmpfs -o size="$1",mode=0700 llmc-faults "$0" && shift && exec "$@"'
            return self._unshared(mount, str(path), str(size), *serve)
        if self.read_only is not None:
            mount = 'mkdir -p "$0" && mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'
            return self._unshared(mount, str(self.read_only), *serve)
        return serve

    @staticmethod
    def _unshared(script: str, *args: str) -> list[str]:
        """`sh -c script args...` in a new mount namespace; `exec` keeps the pid, so signals reach the gateway."""
        unshare, _ = _namespace_tools()
        flags = ["-m"] if os.geteuid() == 0 else ["-U", "-r", "-m"]
        return [unshare, *flags, "--propagation", "private", "sh", "-c", script, *args]

    def start(self, deadline: float = START_DEADLINE) -> GatewayProcess:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
            )
        limit = time.monotonic() + deadline
        delay = 0.02
        while time.monotonic() < limit:
            if self.process.poll() is not None:
                raise GatewayProcessError(f"llm-cache serve exited {self.process.returncode}: {self.tail()}")
            try:
                if httpx2.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx2.HTTPError:
                pass
            time.sleep(delay)  # polling interval while the server starts, not synchronisation
            delay = min(delay * 2, 0.2)
        self.kill()
        raise GatewayProcessError(f"llm-cache serve not healthy within {deadline:.0f}s: {self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:]) if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (SIGKILL: no clean-up at all) and wait, bounded, for the process to be gone."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        self.process.wait(timeout=STOP_DEADLINE)

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL after the deadline."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.kill()

    def stats(self) -> dict[str, Any]:
        response = httpx2.get(f"{self.url}/cache/stats", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10.0)
        response.raise_for_status()
        return dict(response.json())

    def figures(self, upstream_port: int | None = None) -> ProcFigures:
        return proc_figures(self.pid, upstream_port)

    # -- inside the tmpfs namespace ------------------------------------------------------------------

    def in_namespace(self, *command: str) -> subprocess.CompletedProcess[bytes]:
        """Run `command` in the gateway's mount namespace (and user namespace, when not root)."""
        _, nsenter = _namespace_tools()
        flags = ["-m"] if os.geteuid() == 0 else ["-U", "-m", "--preserve-credentials"]
        return subprocess.run([nsenter, "-t", str(self.pid), *flags, *command], capture_output=True, timeout=30)

    def fill(self) -> None:
        """Write a filler file until the tmpfs is full (ENOSPC) and check that it is."""
        assert self.tmpfs is not None, "fill needs a gateway started with tmpfs=..."
        filler = str(self.tmpfs[0] / FILLER)
        done = self.in_namespace("sh", "-c", 'cat /dev/zero > "$0"; df -k "$(dirname "$0")"', filler)
        if b"No space left" not in done.stderr:
            raise GatewayProcessError(f"the tmpfs did not fill up: {done.stdout!r} {done.stderr!r}")

    def unfill(self) -> None:
        assert self.tmpfs is not None, "unfill needs a gateway started with tmpfs=..."
        done = self.in_namespace("rm", "-f", str(self.tmpfs[0] / FILLER))
        if done.returncode != 0:
            raise GatewayProcessError(f"removing the filler failed: {done.stderr!r}")
