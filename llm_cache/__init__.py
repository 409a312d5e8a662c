"""llm-cache-middleware, installed under one distinctive import name.

``llm_cache.middleware`` and ``llm_cache.router`` are the repository's top-level ``middleware/`` and
``router/`` folders (linked here), so an application's own ``middleware.py`` or ``router.py`` can
never shadow them.
"""
