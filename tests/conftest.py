"""Shared fixtures live in `tests/support/`; each module there is a pytest plugin."""

from hypothesis import settings

pytest_plugins = [
    "tests.support.fake_provider_fixtures",
    "tests.support.servers",
]

# Property-based tests are deterministic: the same examples on every run and every machine (no
# example database carried between runs), so a test that passes here passes in CI.
settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")
