"""`llm_cache._refusals`: which answers refuse the credential itself, one rule per family, read by the
gateway and the router alike (the family cases: `tests/middleware/providers/test_gemini.py`,
`test_bedrock.py`)."""

from __future__ import annotations

import httpx2

from llm_cache import _refusals as refusals

EXPIRED = {"x-amzn-ErrorType": "ExpiredTokenException:http://internal.amazon.com/coral/com.amazon.coral.service/"}


def test_an_answer_naming_an_aws_error_type_is_judged_by_aws_s_rule_whatever_the_family() -> None:
    """Bedrock's OpenAI-compatible endpoint speaks OpenAI's API on a Bedrock API key: its expired token
    is a 400, which OpenAI's status rule would take for a refused request."""
    headers = httpx2.Headers(EXPIRED)
    said = b'{"message": "The security token included in the request is expired"}'
    assert refusals.rule_for("openai", headers).refuse(400, headers, said)
    validation = httpx2.Headers({"x-amzn-ErrorType": "ValidationException:http://internal/"})
    assert not refusals.rule_for("openai", validation).refuse(400, validation, b'{"message": "bad model"}')
    assert not refusals.rule_for("openai", httpx2.Headers()).refuse(400, httpx2.Headers(), said)


def test_each_family_has_its_rule_and_an_unknown_one_the_status_rule() -> None:
    assert refusals.rule_for("gemini", {}) is refusals.GEMINI
    assert refusals.rule_for("anthropic", {}) is refusals.STATUS
    assert refusals.rule_for("a-family-of-tomorrow", {}).refuse(401, {}, b"")
    assert not refusals.rule_for("a-family-of-tomorrow", {}).refuse(429, {}, b"")


def test_a_rule_reads_no_more_of_a_body_than_its_bound() -> None:
    """The gateway judges the first `READ` bytes of an answer before relaying it; the router, which has
    read the whole answer, judges the same bytes, so the two never disagree."""
    reason = b'{"error": {"code": 400, "status": "INVALID_ARGUMENT", "details": [{"reason": "API_KEY_INVALID"}]}}'
    assert refusals.GEMINI.refuse(400, {}, reason)
    padded = b'{"pad": "' + b"x" * refusals.READ + b'", ' + reason[1:]
    assert not refusals.GEMINI.refuse(400, {}, padded)
