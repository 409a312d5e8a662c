"""What both ways of judging a mutant share: a copy of the tree, a forked child per run with a
deadline, and the order the tests run in."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


class SlowLast:
    """A pytest plugin: property-based and `slow` tests run after the quick ones, so `-x` stops sooner."""

    def pytest_collection_modifyitems(self, items: list[Any]) -> None:
        def slow(item: Any) -> bool:
            hypothesis = getattr(getattr(item, "obj", None), "is_hypothesis_test", False)
            return bool(hypothesis or item.get_closest_marker("slow"))

        items.sort(key=slow)


def copy_tree(source: Path, parent: Path) -> Path:
    """A copy of `source` in a new folder under `parent`, importing itself (`llm_cache/` links to its own
    `middleware/` and `router/`), without caches or git data."""
    tree = Path(tempfile.mkdtemp(prefix="tree-", dir=parent))
    shutil.copytree(source, tree, symlinks=True, ignore=_not_copied, dirs_exist_ok=True)
    if (source / ".cache").exists():  # the Redis Stack libraries the server fixtures look for
        (tree / ".cache").symlink_to((source / ".cache").resolve())
    return tree


def _not_copied(folder: str, names: list[str]) -> set[str]:
    """The tree's caches, its git data and its `.cache` link (linked again, not copied)."""
    return {name for name in names if name.startswith(".") and name != ".ci" or name == "__pycache__"}


def enter(tree: Path, output: Path | str) -> None:
    """In a forked child: write its output to `output` and import from `tree`, in a process group of its
    own, so that the servers its tests start can be killed with it."""
    os.setpgid(0, 0)
    sink = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(sink, 1)
    os.dup2(sink, 2)
    os.chdir(tree)
    sys.path.insert(0, str(tree))


def finished(pid: int, deadline: float) -> int | None:
    """Wait for the forked child `pid` until `deadline` (monotonic); its exit code, or None when it was
    killed at the deadline. Either way its process group (the servers its tests started) is killed
    before the child is reaped, while the group's id cannot have been reused."""
    while True:
        exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if exited is not None or time.monotonic() > deadline:
            kill_group(pid)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status) if exited is not None else None
        time.sleep(0.02)  # polling a child's exit: the tool's own loop, not a test's synchronisation


def exited(pid: int) -> bool:
    """Whether the forked child `pid` has exited (it is not reaped: `finished` does that)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # the child and the servers its fixtures started


def third_party(tree: Path) -> list[str]:
    """The modules imported in this process that are not the tree's."""
    names = []
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if origin and not origin.startswith(str(tree)) and name != "__main__":
            names.append(name)
    return names
