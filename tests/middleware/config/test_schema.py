"""`config/schema.py`: `cache:` is the engine's own settings, so a file can set every one of them."""

from __future__ import annotations

import pytest

from llm_cache.middleware import CacheSettings
from llm_cache.middleware.config import CacheConfig, ConfigError, build_cache, parse_config
from llm_cache.middleware.stores import MemoryStore


def test_every_engine_setting_is_a_cache_setting_of_the_file() -> None:
    assert set(CacheSettings.model_fields) <= set(CacheConfig.model_fields)


def test_engine_settings_that_no_file_could_set_before_reach_the_cache() -> None:
    config = parse_config(
        {
            "cache": {
                "store": {"type": "memory"},
                "max_response_bytes": 1024,
                "coalesce": False,
                "coalesce_timeout": 5,
                "capture_stream_usage": False,
                "cacheable_statuses": [200, 201],
            }
        }
    )
    settings = build_cache(config, store=MemoryStore()).settings
    assert (settings.max_response_bytes, settings.coalesce, settings.coalesce_timeout) == (1024, False, 5)
    assert settings.capture_stream_usage is False
    assert settings.cacheable_statuses == frozenset({200, 201})


def test_a_file_and_the_engine_refuse_the_same_values() -> None:
    for field, value in (("max_response_bytes", 0), ("coalesce_timeout", -1), ("ttl", -5)):
        with pytest.raises(ConfigError, match=f"cache.{field}"):
            parse_config({"cache": {field: value}})
        with pytest.raises(ValueError):
            CacheSettings(**{field: value})


def test_code_settings_stay_the_dotted_paths_the_file_wrote() -> None:
    cache = parse_config({"cache": {"scope": "header:X-Tenant", "key_builder": None}}).cache
    assert cache.scope == "header:X-Tenant"  # the engine lower-cases it when it is built
    assert build_cache(cache, store=MemoryStore()).settings.scope == "header:x-tenant"
