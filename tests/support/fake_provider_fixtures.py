"""Fixtures that run the fake LLM provider (tests/support/fake_provider.py) on 127.0.0.1."""
