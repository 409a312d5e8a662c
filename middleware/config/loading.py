"""Reading a config: YAML, environment references, the dialect, validation."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..._wire import UnsetVariable, expand_optional
from ..._yaml import MAX_CONFIG_VALUES, TOO_MANY_VALUES, YamlError, expanded_size, read_yaml
from .dialects import detect_dialect, from_guide, from_litellm
from .errors import ConfigError, describe, dotted, unechoed
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
            raise ConfigError(
                unechoed(f"--upstream {item!r}: expected FAMILY=URL with FAMILY one of {', '.join(FAMILIES)}")
            )  # (the URL's password masked, as every config error masks it)
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
_NAMED_KEYS = {
    ("general_settings", "master_key"): "the gateway would run with no client key and no admin key",
}
"""Keys that guard the gateway: one read from an unset `os.environ/NAME` is an error, never null (LiteLLM
reads it as null, and runs open). `auth.keys` needs no entry: a null in it is a validation error."""


def _interpolate(
    value: Any, env: Mapping[str, str], where: str, unset: list[str], read: set[str], path: tuple[Any, ...] = ()
) -> Any:
    """`value` with its environment references replaced; an unset `os.environ/NAME` is None (as
    LiteLLM reads it) and its path is added to `unset`, so a required field can say why it is empty.
    What a reference was replaced with is added to `read`: errors never echo it (it may be a secret)."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env, where, unset, read, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, where, unset, read, (*path, i)) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    try:
        expanded = expand_optional(value, env)
    except UnsetVariable as missing:
        raise ConfigError(
            f"{where}: {dotted(path)}: environment variable {missing.name} is not set "
            f"(referenced as {missing.reference}; write ${{{missing.name}:-default}} for a fallback)"
        ) from None
    if expanded is None:
        if path in _NAMED_KEYS:
            raise ConfigError(
                f"{where}: {dotted(path)}: {value.strip()} is not set: {_NAMED_KEYS[path]}"
                " (a gateway meant to run open names no key)"
            )
        unset.append(f"{dotted(path)} ({value.strip()})")
    elif expanded != value:
        read.add(expanded)
    return expanded


@contextmanager
def _importable_from(folder: Path | None) -> Iterator[None]:
    """The config file's folder on the import path while the config is read, so a `key_builder`,
    `scope` function or hook in a module beside the file is found (as LiteLLM finds its hooks). Imported
    modules stay in `sys.modules`, so the cache built later finds them without it."""
    if folder is None or str(folder) in sys.path:
        yield
        return
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        with suppress(ValueError):  # someone else removed it
            sys.path.remove(str(folder))


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, interpolate, translate and validate a YAML config file."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{where}: cannot read the file ({error.strerror or error})") from None
    try:
        data = read_yaml(text)
    except YamlError as error:
        raise ConfigError(f"{where}: {error}") from None
    with _importable_from(Path(path).resolve().parent):
        return parse_config(data, where=where, env=env)


def parse_config(data: Any, where: str = "<config>", env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Validate an already parsed mapping (the body of a YAML file)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return _parsed(data, where, env)
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to read (hundreds of levels)") from None


def _parsed(data: dict[str, Any], where: str, env: Mapping[str, str] | None) -> GatewayConfig:
    if expanded_size(data) > MAX_CONFIG_VALUES:  # (a mapping given as it is: `read_yaml` counted a file's)
        raise ConfigError(f"{where}: {TOO_MANY_VALUES}")
    environ: Mapping[str, str] = os.environ if env is None else env
    dialect = detect_dialect(data, where)
    # The router's sections pass through untouched (the router resolves its own references); they
    # are read here only to name what is unset.
    routed = data if dialect == "router" else {k: data[k] for k in _PASSTHROUGH if k in data}
    rest = {} if dialect == "router" else {k: v for k, v in data.items() if k not in _PASSTHROUGH}
    unset: list[str] = []
    read: set[str] = set()
    data = _interpolate(rest, environ, where, unset, read)
    _interpolate(routed, environ, where, unset, read)
    data.update(routed)
    notes = [f"unset: {field} is not set; read as null" for field in unset]
    if dialect == "router":
        native = {"router": data}
    elif dialect == "guide":
        native = from_guide(data, where, notes, environ)
    elif dialect == "litellm":
        native = from_litellm(data, where, notes, environ)
    else:
        native = data
    try:
        config = GatewayConfig.model_validate(native)
    except ValidationError as error:
        message = describe(error, where, dialect, read)
        if unset:
            message += f"\n  (environment variables not set, read as null: {', '.join(unset)})"
        raise ConfigError(message) from None
    config.dialect = dialect
    config.source = where
    config.notes = notes
    return config
