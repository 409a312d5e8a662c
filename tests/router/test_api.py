"""The public surface of `router`, and its independence from the caching layer."""

from __future__ import annotations

import subprocess
import sys

import router


def test_public_api_is_pinned():
    assert sorted(router.__all__) == [
        "ConfigError",
        "Deployment",
        "Kind",
        "ModelGroup",
        "Router",
        "RouterConfig",
        "RouterSettings",
        "RouterTransport",
        "STREAM_FAILED",
        "SyncRouterTransport",
        "from_litellm",
        "from_portkey",
        "load_config",
    ]
    for name in router.__all__:
        assert hasattr(router, name)


def test_router_never_imports_middleware():
    code = "import sys, router, router.transport, router.core; assert 'middleware' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
