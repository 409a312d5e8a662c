"""`import llm_cache.middleware.stores` works without the optional extras; using one names the extra to install."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["aiobotocore"] = None  # as if the [s3] extra were not installed
sys.modules["aiomcache"] = None  # as if the [memcached] extra were not installed
sys.modules["azure.storage.blob.aio"] = None  # as if the [azure] extra were not installed
import llm_cache.middleware.stores as stores
assert stores.RedisStore and stores.TieredStore
for name, extra in (("S3Store", "[s3]"), ("MemcachedStore", "[memcached]"), ("AzureBlobStore", "[azure]")):
    try:
        getattr(stores, name)
    except ImportError as error:
        assert extra in str(error), error
    else:
        raise AssertionError(name + " imported without its extra")
print("ok")
"""


def test_import_without_extras() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
