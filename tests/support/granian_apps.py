"""App factories granian imports in its worker (`tests/support/granian_server.py`); settings come from
`H2_TEST_*` environment variables."""

from __future__ import annotations

import os
from typing import Any

from llm_cache.middleware.config import parse_config
from llm_cache.middleware.gateway import create_gateway

LIMIT = 64 * 1024
"""`server.max_request_bytes` of the gateways under test."""


def gateway_for(openai_base_url: str) -> Any:
    """The gateway `llm-cache serve` runs (a memory store), in front of an OpenAI-shaped upstream."""
    upstreams = {"openai": {"base_url": openai_base_url}}
    config = {"cache": {"store": {"type": "memory"}}, "upstreams": upstreams, "server": {"max_request_bytes": LIMIT}}
    return create_gateway(parse_config(config))


def gateway() -> Any:
    """`gateway_for` the upstream in `H2_TEST_UPSTREAM`."""
    return gateway_for(os.environ["H2_TEST_UPSTREAM"])
