"""Bedrock adapters: paths and model ids, keyed headers, drafts that bypass, what is stored, and the
assembly of Claude's events inside event-stream frames. (The SDK end to end: tests/middleware/test_bedrock.py.)"""

from __future__ import annotations

import base64
from typing import Any

import httpx2
import orjson
import pytest

from llm_cache._refusals import BY_FAMILY
from llm_cache.middleware.providers import cuts, resolve
from llm_cache.middleware.providers.anthropic import Messages, MessageStreamAssembler
from llm_cache.middleware.providers.base import Usage
from llm_cache.middleware.providers.bedrock import Converse, InvokeModel, InvokeModelStream, InvokeStreamAssembler
from llm_cache.middleware.providers.eventstream import EventStreamDecoder, encode_message

from .streams import view
from .test_anthropic import TEXT

CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
CHUNK = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
MESSAGE = TEXT


@pytest.mark.parametrize(
    ("path", "name", "model", "stream"),
    [
        (f"/model/{CLAUDE}/invoke", "bedrock.invoke", CLAUDE, False),
        (f"/model/{CLAUDE}/invoke-with-response-stream", "bedrock.invoke-stream", CLAUDE, True),
        (f"/model/{CLAUDE}/converse", "bedrock.converse", CLAUDE, False),
        (f"/model/{CLAUDE}/converse-stream", "bedrock.converse", CLAUDE, True),
        (
            "/model/arn:aws:bedrock:us-east-1:1:inference-profile%2Fus.anthropic.claude/invoke",
            "bedrock.invoke",
            "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude",
            False,
        ),
    ],
)
def test_model_paths_name_the_model_and_the_stream(path: str, name: str, model: str, stream: bool) -> None:
    route = resolve(path)
    assert route is not None
    assert (route.endpoint.name, route.model, route.stream_by_path) == (name, model, stream)
    assert route.endpoint.is_stream(route, "", {"stream": not stream}) is stream
    assert route.endpoint.model(route, {"model": "other"}) == model


@pytest.mark.parametrize("path", [f"/model/{CLAUDE}", f"/model/{CLAUDE}/converse-streams", "/models/x/invoke"])
def test_other_bedrock_paths_are_not_owned(path: str) -> None:
    assert resolve(path) is None


def test_the_settings_bedrock_reads_from_headers_are_keyed() -> None:
    headers = {
        "x-amzn-bedrock-trace": "ENABLED",
        "accept": "application/json",
        "x-amzn-bedrock-guardrailidentifier": "gr-1",
        "x-amz-date": "20261127T050000Z",
        "authorization": "AWS4-HMAC-SHA256 ...",
        "content-type": "application/json",
    }
    assert InvokeModel().header_key(headers) == (
        ("accept", "application/json"),
        ("x-amzn-bedrock-guardrailidentifier", "gr-1"),
        ("x-amzn-bedrock-trace", "ENABLED"),
    )
    assert InvokeModel().keyed_headers and InvokeModel().signed_body


PROMPT_DRAFT = "a Prompt management ARN without a version runs the prompt's editable draft"
GUARDRAIL_DRAFT = "a guardrail's DRAFT version is editable"


@pytest.mark.parametrize(
    ("model", "headers", "body", "reason"),
    [
        ("arn:aws:bedrock:us-east-1:1:prompt/P1", {}, {}, PROMPT_DRAFT),
        ("arn:aws:bedrock:us-east-1:1:prompt/P1:3", {}, {}, None),
        (CLAUDE, {}, {"guardrailConfig": {"guardrailVersion": "DRAFT"}}, GUARDRAIL_DRAFT),
        (CLAUDE, {}, {"guardrailConfig": {"guardrailVersion": "2"}}, None),
        (CLAUDE, {}, {"guardrailConfig": "DRAFT"}, None),
        (CLAUDE, {"x-amzn-bedrock-guardrailversion": "DRAFT"}, {}, GUARDRAIL_DRAFT),
        (CLAUDE, {"x-amzn-bedrock-guardrailversion": "1"}, {}, None),
    ],
)
def test_drafts_bypass_the_cache(model: str, headers: dict[str, str], body: dict[str, Any], reason: str | None) -> None:
    route = resolve(f"/model/{model.replace('/', '%2F')}/converse")
    assert route is not None and route.model == model
    assert route.endpoint.server_state(route, headers, body) == reason


def test_invoke_counts_usage_as_messages_do_and_converse_in_its_own_names() -> None:
    messages = {"usage": {"input_tokens": 3, "cache_read_input_tokens": 4, "output_tokens": 2}}
    assert InvokeModel().usage(messages) == InvokeModelStream().usage(messages) == Usage(7, 2, 4, None)
    converse = {"usage": {"inputTokens": 3, "cacheReadInputTokens": 4, "cacheWriteInputTokens": 5, "outputTokens": 2}}
    assert Converse().usage(converse) == Usage(12, 2, 4, 5)


def test_converse_answers_name_no_model_or_id() -> None:
    answer = {"id": "x", "model": "y", "output": {}}
    assert (Converse().response_model(answer), Converse().response_id(answer)) == (None, None)
    assert (InvokeModel().response_model(MESSAGE), InvokeModel().response_id(MESSAGE)) == (TEXT["model"], TEXT["id"])


def test_claudes_invoke_answers_must_be_messages_and_other_models_answers_are_their_own() -> None:
    claude = view(f"/model/{CLAUDE}/invoke")
    titan = view("/model/amazon.titan-text-express-v1/invoke")
    titan_answer = orjson.dumps({"results": [{"outputText": "Paris"}]})
    assert InvokeModel().unstorable(orjson.dumps(MESSAGE), claude) is None
    assert InvokeModel().unstorable(titan_answer, claude) == "invalid response: `type` is None, not 'message'"
    assert InvokeModel().unstorable(titan_answer, titan) is None
    assert InvokeModel().unstorable(orjson.dumps({**MESSAGE, "content": "Paris"}), titan) is not None


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"output": {"message": {"content": [{"text": "Paris"}]}}, "stopReason": "end_turn"}, None),
        ({"output": {"message": {"content": []}}, "stopReason": "end_turn", "usage": None}, None),
        ({"output": {"message": "Paris"}, "stopReason": "end_turn"}, "`output.message` is str"),
        ({"output": "Paris", "stopReason": "end_turn"}, "`output` is str"),
        (
            {"output": {"message": {"content": "Paris"}}, "stopReason": "end_turn"},
            "`output.message.content` is str, not a list",
        ),
        ({"output": {"message": {"content": []}}}, "`stopReason` is null or missing"),
        ({"output": {"message": {"content": []}}, "stopReason": "end_turn", "usage": 3}, "`usage` is int"),
    ],
)
def test_a_converse_answer_is_stored_when_its_message_is_readable(answer: dict[str, Any], reason: str | None) -> None:
    got = Converse().unstorable(orjson.dumps(answer), view(f"/model/{CLAUDE}/converse"))
    assert got == (None if reason is None else f"invalid response: {reason}")


# -- invoke-with-response-stream -------------------------------------------------------------------------

STREAM_VIEW = view(f"/model/{CLAUDE}/invoke-with-response-stream")


def frames_of(final: dict[str, Any]) -> bytes:
    return InvokeModelStream().render_stream(orjson.dumps(final), STREAM_VIEW)


def chunk_frame(payload: bytes, **headers: str) -> bytes:
    return encode_message({**CHUNK, **headers}, payload)


def assembled(data: bytes) -> dict[str, Any] | None:
    assembler = InvokeStreamAssembler()
    assembler.feed(data)
    result = assembler.result()
    return None if result is None else orjson.loads(result)


def test_a_replay_is_claudes_events_base64_encoded_in_chunk_frames() -> None:
    assert InvokeModelStream().stream_media_type(STREAM_VIEW) == "application/vnd.amazon.eventstream"
    frames = EventStreamDecoder().feed(frames_of(MESSAGE))
    assert all(headers == CHUNK for headers, _ in frames)
    events = [orjson.loads(base64.b64decode(orjson.loads(payload)["bytes"])) for _, payload in frames]
    assert [event["type"] for event in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert assembled(frames_of(MESSAGE)) == MESSAGE


def test_a_cut_kept_before_chunk_payloads_were_replays_its_events_in_unpadded_frames() -> None:
    """Entries stored before the cut kept each `chunk` payload (with its padding) kept Claude's bare
    events: they still replay, event for event, as frames without `p`."""
    messages = MessageStreamAssembler()
    messages.feed(Messages().render_stream(orjson.dumps(MESSAGE), view("/v1/messages", {"stream": True})))
    answer = messages.result()
    assert answer is not None
    cut = messages.cut(answer)
    assert cut is not None
    endpoint = InvokeModelStream()

    replay = endpoint.render_events(endpoint.replayed_events(cuts.replay(cut, answer)), STREAM_VIEW)

    assert replay == frames_of(orjson.loads(answer))


@pytest.mark.parametrize("payload", [b'{"p":"abc"}', b'["bytes"]', b'"bytes"', b"{"])
def test_a_kept_chunk_payload_no_bedrock_stream_has_is_a_cut_that_does_not_fit(payload: bytes) -> None:
    """A cut read from a store whose `chunk` payload has no event (no `bytes`, not an object, not
    JSON) is refused as a cut (the hit synthesises its stream), not an error that fails the hit."""
    with pytest.raises(cuts.CutError):
        InvokeModelStream().replayed_events([("chunk", payload, {})])


def test_a_stream_of_one_frame_short_is_not_complete() -> None:
    replay = frames_of(MESSAGE)
    assembler = InvokeStreamAssembler()
    assembler.feed(replay[:-1])
    assert not assembler.complete and assembler.result() is None
    assembler.feed(replay[-1:])
    assert assembler.complete


@pytest.mark.parametrize(
    "bad",
    [
        encode_message(
            {**CHUNK, ":message-type": "exception"}, b'{"bytes": "' + base64.b64encode(b'{"type": "ping"}') + b'"}'
        ),
        chunk_frame(b'{"bytes": "e30="}', **{":event-type": "metadata"}),
        chunk_frame(b"not json"),
        chunk_frame(b'{"bytes": 7}'),
        chunk_frame(b'{"bytes": "not base64!"}'),
        chunk_frame(b'{"bytes": "!' + base64.b64encode(b'{"type": "ping"}') + b'"}'),
        chunk_frame(b'{"bytes": "' + base64.b64encode(b"[1]") + b'"}'),
        chunk_frame(b'{"bytes": "' + base64.b64encode(b'{"type": 1}') + b'"}'),
        b"\x00" * 16,
    ],
    ids=[
        "exception",
        "not-a-chunk",
        "not-json",
        "bytes-not-a-string",
        "not-base64",
        "base64-with-junk",
        "not-an-object",
        "no-type",
        "bad-frame",
    ],
)
def test_anything_but_claudes_events_in_chunk_frames_breaks_the_stream(bad: bytes) -> None:
    replay = frames_of(MESSAGE)
    assembler = InvokeStreamAssembler()
    assembler.feed(bad)
    assembler.feed(replay)
    assert not assembler.complete and assembler.result() is None


def test_a_finished_message_followed_by_part_of_a_frame_is_not_complete() -> None:
    assembler = InvokeStreamAssembler()
    assembler.feed(frames_of(MESSAGE) + chunk_frame(b"{}")[:20])
    assert not assembler.complete and assembler.result() is None


def test_the_last_plain_user_turn_is_what_the_semantic_cache_embeds() -> None:
    body = {"anthropic_version": "bedrock-2023-05-31", "messages": [{"role": "user", "content": [{"text": "Paris?"}]}]}
    assert InvokeModel().semantic_query(body) == ({**body, "messages": []}, "Paris?")
    assert Converse().semantic_query({"messages": [{"role": "assistant", "content": "Hi"}]}) is None


def test_a_streamed_invoke_stores_only_a_message_it_can_replay() -> None:
    assert InvokeModelStream().unstorable(orjson.dumps(MESSAGE), STREAM_VIEW) is None
    assert InvokeModelStream().unstorable(orjson.dumps({"results": []}), STREAM_VIEW) == (
        "invalid response: `type` is None, not 'message'"
    )


def bedrock_answer(provider: Any) -> tuple[int, httpx2.Headers, bytes]:
    """What the fake provider answers a Converse call on the owner's Bedrock API key with."""
    answer = httpx2.post(
        f"{provider.url}/model/{CLAUDE}/converse",
        json={"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
        headers={"authorization": "Bearer bedrock-api-key-of-the-owner"},
        timeout=10,
    )
    return answer.status_code, answer.headers, answer.content


def test_bedrock_s_answers_refusing_the_credential_are_told_from_those_refusing_the_request(
    fake_provider: Any,
) -> None:
    """AWS refuses an unknown key id, a bad signature or an expired session with a 403 naming its error
    type in `x-amzn-ErrorType` (`UnrecognizedClientException:http://...`); a refused request is a 400
    `ValidationException`. `llm_cache._refusals` says which refuse the credential (a gateway spending
    its owner's key answers those as its own 502)."""
    refusals = BY_FAMILY["bedrock"]
    fake_provider.revoke_key("bedrock-api-key-of-the-owner")
    status, headers, body = bedrock_answer(fake_provider)
    assert status == 403 and refusals.refuse(status, headers, body)
    for kind in ("InvalidSignatureException", "ExpiredTokenException", "AccessDeniedException"):
        assert refusals.refuse(403, {"x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/"}, b"{}")
        assert refusals.refuse(400, {}, orjson.dumps({"__type": f"com.amazon.coral.service#{kind}", "message": "no"}))
    refused_request = orjson.dumps({"message": "The provided model identifier is invalid."})
    assert not refusals.refuse(400, {"x-amzn-errortype": "ValidationException:http://internal/"}, refused_request)
    assert not refusals.refuse(400, {}, refused_request)
    assert not refusals.refuse(429, {"x-amzn-errortype": "ThrottlingException:http://internal/"}, b"{}")
