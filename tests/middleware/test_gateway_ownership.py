"""Callers of a gateway spending its owner's key reach only the provider-held state minted for them
(docs/security.md, "Gateway": "Provider-held ids are their caller's").

Every admitted caller spends one provider account, so the provider cannot keep them apart: a Responses
id, an uploaded file, a conversation created by one caller was reachable by any other naming its id.
Each test runs the real gateway app on uvicorn with two client keys and the owner's upstream keys, the
real openai and anthropic SDKs, and the fake provider behind.
"""

# ruff: noqa: F811 (the gateway fixtures are imported from test_gateway)
from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest

from tests.middleware.stores.conftest import unique_prefix
from tests.middleware.test_gateway import MODEL, Gateway, gateway_factory  # noqa: F401
from tests.support.anthropic_streams import anthropic_events
from tests.support.fake_provider_fixtures import RunningFakeProvider

A_KEY = "gw-caller-a"
B_KEY = "gw-caller-b"
OPENAI_OWNER = "sk-owner-openai"
ANTHROPIC_OWNER = "sk-ant-owner"
GEMINI_OWNER = "gemini-owner-key"
CLAUDE = "claude-sonnet-4-6"


@pytest.fixture
def owned_gateway(gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider) -> Gateway:
    """Two client keys; the owner's keys for OpenAI, Anthropic and Gemini; file uploads opened by name."""
    return gateway_factory(
        {
            "auth": {"keys": [A_KEY, B_KEY]},
            "upstreams": {
                "openai": {
                    "base_url": fake_provider.openai_base_url,
                    "api_key": OPENAI_OWNER,
                    "allow": ["POST /v1/responses", "POST /v1/chat/completions", "POST /v1/files"],
                },
                "anthropic": {
                    "base_url": fake_provider.anthropic_base_url,
                    "api_key": ANTHROPIC_OWNER,
                    "allow": ["POST /v1/messages", "POST /v1/files"],
                },
                "gemini": {"base_url": fake_provider.url, "api_key": GEMINI_OWNER},
            },
        }
    )


def responses_count(fake_provider: RunningFakeProvider) -> int:
    return fake_provider.count("/v1/responses")


def test_a_caller_cannot_continue_a_response_another_caller_created(
    owned_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """Responses stores every response by default: B continuing A's id would be answered in A's context."""
    a, b = owned_gateway.openai(api_key=A_KEY), owned_gateway.openai(api_key=B_KEY)
    first = a.responses.create(model=MODEL, input="my secret plan is to buy the company")
    before = responses_count(fake_provider)

    with pytest.raises(openai.BadRequestError) as refused:
        b.responses.create(model=MODEL, input="what was my plan?", previous_response_id=first.id)

    assert refused.value.code == "previous_response_not_found"
    assert first.id in refused.value.message
    assert responses_count(fake_provider) == before  # refused before it left
    follow_up = a.responses.create(model=MODEL, input="and then?", previous_response_id=first.id)
    assert follow_up.id != first.id and responses_count(fake_provider) == before + 1
    assert fake_provider.last.body["previous_response_id"] == first.id
    # A's continuation minted an id of A's too, which B cannot continue either
    with pytest.raises(openai.BadRequestError):
        b.responses.create(model=MODEL, input="and then?", previous_response_id=follow_up.id)


def test_an_id_the_gateway_never_handed_out_is_refused(
    owned_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """An id minted on the owner's account some other way (or guessed) is no caller's."""
    a = owned_gateway.openai(api_key=A_KEY)
    with pytest.raises(openai.BadRequestError, match="not found"):
        a.responses.create(model=MODEL, input="hi", previous_response_id="resp_owners_own")
    with pytest.raises(openai.NotFoundError):
        a.responses.create(model=MODEL, input="hi", conversation="conv_owners_own")
    with pytest.raises(openai.NotFoundError):  # an item of a stored response, by reference
        a.responses.create(model=MODEL, input=[{"type": "item_reference", "id": "msg_owners_own"}])  # type: ignore[list-item]
    assert responses_count(fake_provider) == 0


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_a_streamed_response_is_its_callers_from_its_first_event(
    owned_gateway: Gateway, fake_provider: RunningFakeProvider, gzipped: bool
) -> None:
    """A stream names its id in `response.created`: recorded before that event reaches the caller (read
    through the gzip the upstream may send, which is relayed as it came)."""
    if gzipped:
        fake_provider.gzip_streams()
    a, b = owned_gateway.openai(api_key=A_KEY), owned_gateway.openai(api_key=B_KEY)
    with a.responses.create(model=MODEL, input="stream me a plan", stream=True) as stream:
        created = next(event for event in stream if event.type == "response.created")
        streamed_id = created.response.id
        for _ in stream:
            pass
    with pytest.raises(openai.BadRequestError) as refused:
        b.responses.create(model=MODEL, input="what was it?", previous_response_id=streamed_id)
    assert refused.value.code == "previous_response_not_found"
    assert a.responses.create(model=MODEL, input="go on", previous_response_id=streamed_id).id


def test_a_hit_replays_an_id_its_caller_may_continue_and_mints_nothing_for_another(
    owned_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """Entries are scoped by the caller's key: A's hit replays the id minted for A, which A continues;
    B asking the same is B's own miss and its own id."""
    a, b = owned_gateway.openai(api_key=A_KEY), owned_gateway.openai(api_key=B_KEY)
    first = a.responses.with_raw_response.create(model=MODEL, input="same question")
    again = a.responses.with_raw_response.create(model=MODEL, input="same question")
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
    replayed = again.parse().id
    assert replayed == first.parse().id
    assert a.responses.create(model=MODEL, input="go on", previous_response_id=replayed).id
    other = b.responses.with_raw_response.create(model=MODEL, input="same question")
    assert other.headers["x-cache"] == "MISS" and other.parse().id != replayed
    with pytest.raises(openai.BadRequestError):
        b.responses.create(model=MODEL, input="go on", previous_response_id=replayed)
    assert b.responses.create(model=MODEL, input="go on", previous_response_id=other.parse().id).id


def test_a_file_one_caller_uploaded_is_not_another_callers_to_read(
    owned_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """With uploads opened by the owner, a file id in message content is its uploader's."""
    a, b = owned_gateway.openai(api_key=A_KEY), owned_gateway.openai(api_key=B_KEY)
    uploaded = a.files.create(file=("notes.txt", io.BytesIO(b"payroll figures"), "text/plain"), purpose="user_data")
    content = [{"type": "file", "file": {"file_id": uploaded.id}}, {"type": "text", "text": "summarise"}]
    messages = [{"role": "user", "content": content}]
    before = fake_provider.count("/chat/completions")

    with pytest.raises(openai.NotFoundError, match=uploaded.id):
        b.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):  # the same id as a Responses input file
        b.responses.create(
            model=MODEL,
            input=[{"role": "user", "content": [{"type": "input_file", "file_id": uploaded.id}]}],  # type: ignore[list-item]
        )

    assert fake_provider.count("/chat/completions") == before and responses_count(fake_provider) == 0
    assert a.chat.completions.create(model=MODEL, messages=messages).choices  # type: ignore[arg-type]


def test_an_anthropic_file_one_caller_uploaded_is_not_another_callers_document(
    owned_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    a, b = owned_gateway.anthropic(api_key=A_KEY), owned_gateway.anthropic(api_key=B_KEY)
    uploaded = a.beta.files.upload(file=("notes.txt", io.BytesIO(b"payroll figures"), "text/plain"))
    document = {"type": "document", "source": {"type": "file", "file_id": uploaded.id}}
    messages = [{"role": "user", "content": [document, {"type": "text", "text": "summarise"}]}]

    with pytest.raises(anthropic.NotFoundError, match=uploaded.id):
        b.messages.create(model=CLAUDE, max_tokens=20, messages=messages)  # type: ignore[arg-type]

    assert fake_provider.count("/v1/messages") == 0
    assert a.messages.create(model=CLAUDE, max_tokens=20, messages=messages).content  # type: ignore[arg-type]


def container_stream(container: str) -> list[Any]:
    """An Anthropic stream whose message ran in a code execution `container`, named at its start."""
    text = ({"type": "text", "text": ""}, [{"type": "text_delta", "text": "ran"}])
    events = anthropic_events([text], {"output_tokens": 1}, model=CLAUDE)
    start = events[0][1]
    start["message"] = {**start["message"], "container": {"id": container, "expires_at": "2026-12-08T00:00:00Z"}}
    return events


def test_an_anthropic_container_is_its_callers(owned_gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    """A code execution container keeps the files and state of the calls that ran in it."""
    a, b = owned_gateway.anthropic(api_key=A_KEY), owned_gateway.anthropic(api_key=B_KEY)
    fake_provider.stream_next(container_stream("container_of_a"))
    with a.messages.stream(model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "run it"}]) as stream:
        assert stream.get_final_message().container.id == "container_of_a"  # type: ignore[union-attr]
    again = {"model": CLAUDE, "max_tokens": 20, "messages": [{"role": "user", "content": "and again"}]}

    with pytest.raises(anthropic.NotFoundError, match="container_of_a"):
        b.messages.create(**again, extra_body={"container": "container_of_a"})  # type: ignore[call-overload]
    with pytest.raises(anthropic.NotFoundError):
        a.messages.create(**again, extra_body={"container": "container_never_made"})  # type: ignore[call-overload]

    assert fake_provider.count("/v1/messages") == 1
    assert a.messages.create(**again, extra_body={"container": "container_of_a"}).content  # type: ignore[call-overload]


def test_a_gemini_files_uri_no_caller_uploaded_is_refused_as_gemini_refuses_it(
    owned_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """Uploads to Gemini do not go through the gateway, so a Files URI on the owner's account is no
    caller's; a web URL in `fileData` names nothing the provider holds and goes on."""
    url = f"{owned_gateway.url}/v1beta/models/gemini-2.0-flash:generateContent"

    def ask(uri: str) -> httpx2.Response:
        part = {"fileData": {"mimeType": "application/pdf", "fileUri": uri}}
        body = {"contents": [{"role": "user", "parts": [part, {"text": "summarise"}]}]}
        return httpx2.post(url, json=body, headers={"x-goog-api-key": A_KEY}, timeout=10)

    refused = ask("https://generativelanguage.googleapis.com/v1beta/files/abc123")
    assert refused.status_code == 403
    assert refused.json()["error"]["status"] == "PERMISSION_DENIED"
    assert fake_provider.requests == []
    assert ask("https://www.youtube.com/watch?v=9hE5-98ZeCg").status_code == 200


def test_a_body_naming_an_id_field_twice_is_refused(owned_gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    """The gateway reads the last of two values, a provider may read the first."""
    a = owned_gateway.openai(api_key=A_KEY)
    mine = a.responses.create(model=MODEL, input="mine").id
    raw = (
        b'{"model": "%s", "input": "x", "previous_response_id": "resp_someone_elses", "previous_response_id": "%s"}'
        % (MODEL.encode(), mine.encode())
    )
    headers = {"authorization": f"Bearer {A_KEY}", "content-type": "application/json"}
    answer = httpx2.post(f"{owned_gateway.url}/v1/responses", content=raw, headers=headers, timeout=10)
    assert answer.status_code == 400 and "twice" in answer.json()["error"]["message"]
    assert responses_count(fake_provider) == 1


def test_callers_without_client_keys_are_told_apart_by_the_key_they_send(
    gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider
) -> None:
    """No `auth.keys`: the gateway replaces whatever key a caller sends with the owner's; the key sent is
    still who the caller is (as the cache scopes entries by it), so a caller's ids are not another's."""
    gateway = gateway_factory(
        {"upstreams": {"openai": {"base_url": fake_provider.openai_base_url, "api_key": OPENAI_OWNER}}}
    )
    a, b = gateway.openai(api_key="sk-anything-a"), gateway.openai(api_key="sk-anything-b")
    first = a.responses.create(model=MODEL, input="mine")
    with pytest.raises(openai.BadRequestError):
        b.responses.create(model=MODEL, input="x", previous_response_id=first.id)
    assert a.responses.create(model=MODEL, input="x", previous_response_id=first.id).id
    assert fake_provider.last.headers["authorization"] == f"Bearer {OPENAI_OWNER}"


def test_a_caller_spending_its_own_provider_key_is_not_checked(
    gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider
) -> None:
    """Without a key of the owner's, each caller's key is its own account: the provider keeps them apart."""
    gateway = gateway_factory({"upstreams": {"openai": {"base_url": fake_provider.openai_base_url}}})
    headers = {"authorization": "Bearer sk-callers-own"}
    body = {"model": MODEL, "input": "hi", "previous_response_id": "resp_from_somewhere"}
    answer = httpx2.post(f"{gateway.url}/v1/responses", json=body, headers=headers, timeout=10)
    assert answer.status_code == 200
    assert orjson.loads(fake_provider.last.raw)["previous_response_id"] == "resp_from_somewhere"
    assert fake_provider.last.headers["authorization"] == "Bearer sk-callers-own"


def test_pods_sharing_a_store_agree_whose_an_id_is(
    gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider, redis_server: Any
) -> None:
    """The record is in the store: a caller's next call may land on another pod."""
    config = {
        "cache": {"store": {"type": "redis", "url": redis_server.url}, "key_prefix": unique_prefix()},
        "auth": {"keys": [A_KEY, B_KEY]},
        "upstreams": {"openai": {"base_url": fake_provider.openai_base_url, "api_key": OPENAI_OWNER}},
    }
    one, two = gateway_factory(config), gateway_factory(config)
    first = one.openai(api_key=A_KEY).responses.create(model=MODEL, input="started on pod one")
    with pytest.raises(openai.BadRequestError):
        two.openai(api_key=B_KEY).responses.create(model=MODEL, input="x", previous_response_id=first.id)
    assert two.openai(api_key=A_KEY).responses.create(model=MODEL, input="x", previous_response_id=first.id).id


def test_a_store_that_cannot_say_whose_an_id_is_forwards_nothing_on_a_guess(
    gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider, redis_factory: Any
) -> None:
    redis = redis_factory()
    config = {
        "cache": {"store": {"type": "redis", "url": redis.url}},
        "auth": {"keys": [A_KEY, B_KEY]},
        "upstreams": {"openai": {"base_url": fake_provider.openai_base_url, "api_key": OPENAI_OWNER}},
    }
    one, two = gateway_factory(config), gateway_factory(config)
    first = one.openai(api_key=A_KEY).responses.create(model=MODEL, input="started on pod one")
    redis.stop()
    redis.wait_down()
    before = responses_count(fake_provider)

    with pytest.raises(openai.APIStatusError) as unanswered:
        two.openai(api_key=A_KEY).responses.create(model=MODEL, input="x", previous_response_id=first.id)

    assert unanswered.value.status_code == 503 and responses_count(fake_provider) == before
    # the pod that minted it still knows, from its memo, whose it is
    assert one.openai(api_key=A_KEY).responses.create(model=MODEL, input="x", previous_response_id=first.id).id
    with pytest.raises(openai.BadRequestError):
        one.openai(api_key=B_KEY).responses.create(model=MODEL, input="x", previous_response_id=first.id)
