"""`ConfigError` and validation errors rewritten to name the field, as the file spells it, and what is allowed."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError

from ..._wire import masked_url
from .printing import SECRET_FIELDS
from .schema import STORE_TYPES, EmbedderConfig, GatewayConfig, IndexConfig


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message says where and what is allowed."""


def dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
_SHORTEST_SECRET = 4
"""Environment values shorter than this are not looked for in messages (`1`, `yes`: no secret, and
masking them would garble the message)."""


def unechoed(message: str, secrets: Iterable[str] = ()) -> str:
    """`message` without the `secrets` (values read from the environment), as written or as `repr`
    writes them, and with the password and secret query values of every URL in it masked."""
    for secret in secrets:
        if len(secret) >= _SHORTEST_SECRET:
            message = message.replace(secret, "****").replace(repr(secret)[1:-1], "****")
    return _URL.sub(lambda url: masked_url(url.group()), message)


def describe(error: ValidationError, where: str, dialect: str, secrets: Iterable[str] = ()) -> str:
    """`error` as lines naming each field as the file spells it; never a secret's value: not a field
    named like a secret, a value read from the environment (`secrets`) or a URL's password."""
    secrets = tuple(secrets)
    lines = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        field = dotted(_without_tags(loc))
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_fields(loc[:-1])
            hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
            message = f"unknown field {loc[-1]!r}{hint}"
        elif kind == "union_tag_invalid":
            expected = item.get("ctx", {}).get("expected_tags")
            allowed_tags = expected.replace("'", "") if expected else ", ".join(STORE_TYPES)
            message = (
                f"unknown type {item['input'] if not isinstance(item['input'], dict) else item['ctx']['tag']!r}"
                f"; allowed: {allowed_tags}"
            )
            field = dotted((*_without_tags(loc), "type"))
        elif kind == "union_tag_not_found":
            message = f"a store needs a 'type'; allowed: {', '.join(STORE_TYPES)}"
            field = dotted((*_without_tags(loc), "type"))
        elif kind == "missing":
            message = "required field is missing"
        else:
            message = item["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            secret = any(SECRET_FIELDS.search(str(part)) for part in loc)  # never echoed: a password of digits
            if kind != "value_error" and "input" in item and not isinstance(item["input"], (dict, list)) and not secret:
                message += f" (got {item['input']!r})"
        lines.append(f"{field}: {unechoed(message, secrets)}")
    translated = "" if dialect == "native" else f" (after translating the {dialect} dialect to native settings)"
    head = f"{where}: invalid configuration{translated}"
    return head + ":\n  " + "\n  ".join(lines) if len(lines) > 1 else f"{head}: {lines[0]}"


def _tags(union: Any) -> frozenset[str]:
    """The `type` values that pick the members of a tagged union of config models."""
    members = typing.get_args(typing.get_args(union)[0])
    return frozenset(tag for member in members for tag in typing.get_args(member.model_fields["type"].annotation))


_UNION_TAGS: dict[Any, frozenset[str]] = {
    "store": frozenset(STORE_TYPES),
    "l1": frozenset(STORE_TYPES),
    "l2": frozenset(STORE_TYPES),
    "embedder": _tags(EmbedderConfig),
    "index": _tags(IndexConfig),
}
"""Field name -> the union tags that pydantic puts after it in an error's location."""


def _without_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """`cache.store.redis.port` -> `cache.store.port`: the union tag is not a key in the file."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if i and part in _UNION_TAGS.get(loc[i - 1], ()):
            continue
        out.append(part)
    return tuple(out)


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model at `loc` in GatewayConfig (for "unknown field" hints)."""
    target: Any = GatewayConfig
    for part in loc:
        model = _as_model(target, part)
        if model is None:
            return []
        if part in model.model_fields:
            target = model.model_fields[part].annotation
        elif isinstance(part, str) and _union_member(target, part) is not None:
            target = _union_member(target, part)
        else:
            return []
    model = _as_model(target, None)
    return sorted(model.model_fields) if model is not None else []


def _as_model(target: Any, part: Any) -> type[BaseModel] | None:
    if isinstance(target, type) and issubclass(target, BaseModel):
        return target
    member = _union_member(target, part)
    if member is not None:
        return member
    for arg in typing.get_args(target):  # Optional[Model]
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _union_member(target: Any, tag: Any) -> type[BaseModel] | None:
    if typing.get_origin(target) is Annotated:
        target = typing.get_args(target)[0]
    if typing.get_origin(target) not in (Union, types.UnionType):
        return None
    for member in typing.get_args(target):
        if (
            isinstance(member, type)
            and issubclass(member, BaseModel)
            and "type" in member.model_fields
            and tag in typing.get_args(member.model_fields["type"].annotation)
        ):
            return member
    return None
