"""The modules mutated by default, each with the tests that specify it."""

from __future__ import annotations

from pathlib import Path

HUNDRED_TENANTS = "test_a_hundred_tenants_never_see_each_others_answers"  # 30 s of load: `make test` runs it
MODULES: dict[str, tuple[str, ...]] = {
    "middleware/_keys.py": (
        "tests/middleware/test_golden_keys.py",
        "tests/middleware/test_keys.py",
        "tests/middleware/test_isolation.py",
        f"--deselect=tests/middleware/test_isolation.py::{HUNDRED_TENANTS}",
    ),
    "middleware/_policy.py": ("tests/middleware/test_policy.py", "tests/middleware/test_golden_keys.py"),
    "middleware/semantic/guard.py": (
        "tests/middleware/semantic/test_guard.py",
        "tests/middleware/semantic/test_cache.py::test_the_guard_lets_paraphrases_through",
        "tests/middleware/semantic/test_cache.py::test_the_guard_vetoes_a_changed_fact",
    ),
    "middleware/semantic/bound.py": ("tests/middleware/semantic/test_bound.py",),
    "router/_retry.py": ("tests/router/test_breaker.py", "tests/router/test_core.py"),
    "router/_breaker.py": ("tests/router/test_breaker.py", "tests/router/test_core.py"),
    "router/_core.py": (
        "tests/router/test_core.py",
        "tests/router/test_errors.py",
        "tests/router/test_api.py",
        "tests/router/test_cancellation.py",
        "tests/router/test_telemetry.py",
        "tests/router/test_cross_family.py",
    ),
    "middleware/_engine.py": (
        "tests/middleware/test_engine.py",
        "tests/middleware/test_plan.py",
        "tests/middleware/test_what_may_be_stored.py",
        "tests/middleware/test_prepared_memo.py",
        "tests/middleware/semantic/test_cache.py",
        "tests/middleware/test_telemetry.py",
        "tests/middleware/test_distributed.py",
        "tests/middleware/test_additions.py",
        "tests/middleware/test_hooks.py",
        "tests/middleware/test_stale_if_error.py",
        "tests/middleware/test_items.py",
    ),
    "middleware/_additions.py": (
        "tests/middleware/test_additions.py",
        "tests/middleware/test_prompt_caching.py",
        "tests/middleware/test_plan.py",
        "tests/middleware/test_prepared_memo.py::test_an_addition_the_upstream_refused_is_left_out_of_requests_prepared_before",
    ),
    "middleware/_singleflight.py": (
        "tests/middleware/test_engine.py",
        "tests/middleware/test_distributed.py",
        "tests/middleware/test_singleflight.py",
    ),
    "middleware/_recorder.py": (
        "tests/middleware/test_recorder.py",
        "tests/middleware/test_relay.py",
        "tests/middleware/test_engine.py",
        "tests/middleware/test_plan.py",
        "tests/middleware/test_what_may_be_stored.py",
        "tests/middleware/test_telemetry.py",
        "tests/middleware/test_additions.py",
        "tests/router/test_with_cache.py",
        "tests/middleware/test_transport.py::test_a_stream_is_stored_at_its_terminal_event_whatever_the_reader_does_next",
        "tests/middleware/test_hooks.py",
        "tests/middleware/test_distributed.py",
        "tests/middleware/semantic/test_cache.py",
        "tests/middleware/test_singleflight.py",
    ),
    "middleware/_freshness.py": (
        "tests/middleware/test_upstream_cache_control.py",
        "tests/middleware/test_what_may_be_stored.py::test_a_list_answer_the_upstream_marks_no_store_stores_none_of_its_items",
    ),
    "middleware/_items.py": (
        "tests/middleware/test_items.py",
        "tests/middleware/test_hit_headers.py::test_a_list_served_item_by_item_names_a_call_only_when_one_call_answered_every_item",
        "tests/router/test_with_cache.py",
    ),
    "middleware/_relay.py": (
        "tests/middleware/test_relay.py",
        "tests/middleware/test_asgi.py",
        "tests/middleware/test_stream_fidelity.py",
    ),
    "middleware/_prepared_memo.py": ("tests/middleware/test_prepared_memo.py",),
    "middleware/providers/openai.py": (
        "tests/middleware/providers/test_openai.py",
        "tests/middleware/test_golden_keys.py",
        "tests/middleware/providers/test_base.py",
        "tests/middleware/providers/test_chat_stream_properties.py",
        "tests/middleware/providers/test_storable_replays.py",
    ),
    "middleware/providers/anthropic.py": (
        "tests/middleware/providers/test_anthropic.py",
        "tests/middleware/providers/test_base.py",
        "tests/middleware/providers/test_bedrock.py",
        "tests/middleware/providers/test_storable_replays.py",
    ),
    "middleware/providers/gemini.py": (
        "tests/middleware/providers/test_gemini.py",
        "tests/middleware/providers/test_base.py",
        "tests/middleware/providers/test_storable_replays.py",
    ),
    "middleware/providers/bedrock.py": (
        "tests/middleware/providers/test_bedrock.py",
        "tests/middleware/providers/test_base.py",
        "tests/middleware/test_bedrock.py",
    ),
    "middleware/providers/base.py": (
        "tests/middleware/providers/test_base.py",
        "tests/middleware/providers/test_openai.py",
        "tests/middleware/providers/test_anthropic.py",
        "tests/middleware/providers/test_gemini.py",
        "tests/middleware/test_keys.py",
        "tests/middleware/test_hit_headers.py",
    ),
    "middleware/providers/converse.py": (
        "tests/middleware/providers/test_converse.py",
        "tests/middleware/providers/test_converse_stream_properties.py",
        "tests/middleware/test_bedrock.py",
    ),
    "middleware/providers/deltas.py": (
        "tests/middleware/providers/test_deltas.py",
        "tests/middleware/providers/test_chat_stream_properties.py",
    ),
    "middleware/providers/sse.py": (
        "tests/middleware/providers/test_sse.py",
        "tests/middleware/providers/test_anthropic.py",
    ),
    "middleware/providers/eventstream.py": (
        "tests/middleware/providers/test_eventstream.py",
        "tests/middleware/providers/test_bedrock.py",
    ),
}
"""The modules mutated by default, each with the tests that specify it (missing files are skipped)
and any other pytest arguments."""


def tests_of(tree: Path, arguments: tuple[str, ...]) -> tuple[str, ...]:
    """pytest's `arguments` for a module, less the test files `tree` does not have."""
    return tuple(test for test in arguments if test.startswith("-") or (tree / test.split("::")[0]).exists())
