"""The public surface of `router`, and its independence from the caching layer."""

from __future__ import annotations

import subprocess
import sys

from llm_cache import router


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
    code = (
        "import sys, pkgutil, importlib, llm_cache.router as r\n"
        "for m in pkgutil.walk_packages(r.__path__, 'llm_cache.router.'): importlib.import_module(m.name)\n"
        "assert not [n for n in sys.modules if n.split('.')[:2] == ['llm_cache', 'middleware']], sys.modules\n"
        "assert 'middleware' not in sys.modules and 'router' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
