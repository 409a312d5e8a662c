"""Which request paths an ASGI mount hands to the cache, and the path its provider adapters see."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any


class MountedPaths:
    """`mount_prefix` is cut off the path; `include` (default: every path) and `exclude` are globs
    on what remains."""

    __slots__ = ("prefix", "include", "exclude")

    def __init__(self, prefix: str = "", include: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> None:
        self.prefix = prefix.rstrip("/")
        self.include = tuple(include) if include is not None else None
        self.exclude = tuple(exclude)

    def route_path(self, path: str) -> str | None:
        """The path the provider adapters see, or None when the cache leaves this request alone."""
        prefix = self.prefix
        if prefix:
            if path != prefix and not path.startswith(prefix + "/"):
                return None
            path = path[len(prefix) :] or "/"
        if self.include is not None and not any(fnmatchcase(path, p) for p in self.include):
            return None
        if self.exclude and any(fnmatchcase(path, p) for p in self.exclude):  # (no generator per request)
            return None
        return path


def mount_root(path: str, root_path: str) -> str:
    """The part of an ASGI `path` that is the app's mount (`root_path`, as Starlette's `Mount` and
    uvicorn's `--root-path` put it in front), or "": the app routes on the rest, so the cache keys and
    matches that, as the transport sees the provider's path."""
    if root_path and path.startswith(root_path) and (len(path) == len(root_path) or path[len(root_path)] == "/"):
        return root_path
    return ""


def routed_path(scope: Mapping[str, Any]) -> tuple[str, bytes]:
    """The (path, raw path) an app routes on: the scope's, less its mount (`mount_root`). A raw path
    that does not begin with the mount as written (escaped otherwise) is taken from the decoded rest."""
    path: str = scope["path"]
    raw_path: bytes = scope.get("raw_path") or path.encode("utf-8")
    root = mount_root(path, scope.get("root_path") or "")
    if root:
        path = path[len(root) :] or "/"
        raw_root = root.encode("utf-8")
        if raw_path.startswith(raw_root) and raw_path[len(raw_root) : len(raw_root) + 1] in (b"", b"/"):
            raw_path = raw_path[len(raw_root) :] or b"/"
        else:
            raw_path = path.encode("utf-8")
    return path, raw_path


__all__ = ["MountedPaths", "mount_root", "routed_path"]
