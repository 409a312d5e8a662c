"""Shared fixtures live in `tests/support/`; each module there is a pytest plugin."""

pytest_plugins = [
    "tests.support.fake_provider_fixtures",
    "tests.support.servers",
]
