"""Reading a config: YAML, environment references, the dialect, validation."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..._wire import UnsetVariable, expand_env
from .dialects import detect_dialect, from_guide, from_litellm
from .errors import ConfigError, describe, dotted
from .schema import FAMILIES, GatewayConfig


def with_upstreams(config: GatewayConfig, overrides: list[str]) -> GatewayConfig:
    """A copy of `config` with `family=URL` overrides (the `--upstream` option) applied."""
    if not overrides:
        return config
    data = config.model_dump()
    for item in overrides:
        family, sep, url = item.partition("=")
        family = family.strip().lower()
        if not sep or family not in FAMILIES:
            raise ConfigError(f"--upstream {item!r}: expected FAMILY=URL with FAMILY one of {', '.join(FAMILIES)}")
        data["upstreams"][family]["base_url"] = url.strip()
    try:
        updated = GatewayConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe(error, "--upstream", "native")) from None
    updated.dialect, updated.source, updated.notes = config.dialect, config.source, config.notes
    return updated


def default_config() -> GatewayConfig:
    """The embedded default: a disk store under the user's cache directory, exact matching."""
    return GatewayConfig(dialect="default", source="<embedded default>")


_PASSTHROUGH = ("model_list", "router", "router_settings")


def _interpolate(value: Any, env: Mapping[str, str], where: str, path: tuple[Any, ...] = ()) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env, where, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, where, (*path, i)) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    try:
        return expand_env(value, env)
    except UnsetVariable as unset:
        fallback = f"; write ${{{unset.name}:-default}} for a fallback" if unset.reference.startswith("$") else ""
        raise ConfigError(
            f"{where}: {dotted(path)}: environment variable {unset.name} is not set "
            f"(referenced as {unset.reference}{fallback})"
        ) from None


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, interpolate, translate and validate a YAML config file."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{where}: cannot read the file ({error.strerror or error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}") from None
    return parse_config(data, where=where, env=env)


def parse_config(data: Any, where: str = "<config>", env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate an already parsed mapping (the body of a YAML file)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    # The router sections are passed through untouched: the router resolves its own references.
    untouched = {k: data[k] for k in _PASSTHROUGH if k in data}
    data = _interpolate(
        {k: v for k, v in data.items() if k not in _PASSTHROUGH}, os.environ if env is None else env, where
    )
    data.update(untouched)
    dialect = detect_dialect(data, where)
    notes: list[str] = []
    if dialect == "guide":
        native = from_guide(data, where, notes)
    elif dialect == "litellm":
        native = from_litellm(data, where, notes, os.environ if env is None else env)
    else:
        native = data
    try:
        config = GatewayConfig.model_validate(native)
    except ValidationError as error:
        raise ConfigError(describe(error, where, dialect)) from None
    config.dialect = dialect
    config.source = where
    config.notes = notes
    return config
