"""The settings a gateway runs with, printable: secrets masked, defaults filled in."""

from __future__ import annotations

import re
from typing import Any

from ..._wire import masked_url
from .schema import FAMILIES, GatewayConfig

SECRET_FIELDS = re.compile(
    r"(password|secret|api[-_]?key|admin_key|master_key|private_key|token|access_key|credential|connection_string"
    r"|authorization|cookie|subscription[-_]?key|^keys$)",
    re.IGNORECASE,
)
"""Names of fields (and of headers a config may carry, `x-api-key`, `Authorization`) that hold a secret."""
_COUNTS = re.compile(r"tokens", re.IGNORECASE)
"""`max_tokens`, `max_output_tokens`: numbers under a name like a secret's that are counts, not secrets."""


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        ordered = sorted(value.items(), key=lambda item: item[0] != "type")  # the type first
        return {k: _drop_none(v) for k, v in ordered if v is not None}
    return value


def masked(value: Any, key: str = "", within: bool = False) -> Any:
    """A copy with every secret-looking field replaced by '****' (unset secrets stay null): its text, a
    number (a key of digits), and every value of a mapping under such a name (a service account given
    as one, `vertex_credentials: {private_key: ...}`), `within` it."""
    secret = within or bool(key and SECRET_FIELDS.search(key))
    if isinstance(value, dict):
        return {k: masked(v, str(k), secret) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, key, within) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if secret and (isinstance(value, str) or within or not _COUNTS.search(key)):
        return "****"
    if isinstance(value, str) and "://" in value:
        return masked_url(value)
    return value


def effective_settings(config: GatewayConfig) -> dict[str, Any]:
    """The settings a gateway would run with, secrets masked, upstream defaults filled in."""
    data = config.model_dump(mode="json")
    data["cache"]["store"] = _drop_none(data["cache"]["store"])
    for family in FAMILIES:
        data["upstreams"][family]["base_url"] = config.upstreams.base_url(family)
    if data["cache"]["store"]["type"] == "disk" and data["cache"]["store"].get("directory") is None:
        from ..stores.disk import default_cache_dir

        data["cache"]["store"]["directory"] = str(default_cache_dir())
    return masked(data)
