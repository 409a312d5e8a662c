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

from llm_cache.middleware import Cache
from llm_cache.middleware.stores import MemoryStore
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


def with_owner_keys(
    gateway_factory: Callable[..., Gateway],
    fake_provider: RunningFakeProvider,
    openai_allow: list[str],
    anthropic_allow: list[str],
) -> Gateway:
    """A gateway with two client keys and the owner's keys for OpenAI, Anthropic and Gemini."""
    return gateway_factory(
        {
            "auth": {"keys": [A_KEY, B_KEY]},
            "upstreams": {
                "openai": {"base_url": fake_provider.openai_base_url, "api_key": OPENAI_OWNER, "allow": openai_allow},
                "anthropic": {
                    "base_url": fake_provider.anthropic_base_url,
                    "api_key": ANTHROPIC_OWNER,
                    "allow": anthropic_allow,
                },
                "gemini": {"base_url": fake_provider.url, "api_key": GEMINI_OWNER},
            },
        }
    )


@pytest.fixture
def owned_gateway(gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider) -> Gateway:
    """File uploads opened by name."""
    openai_allow = ["POST /v1/responses", "POST /v1/chat/completions", "POST /v1/files"]
    return with_owner_keys(gateway_factory, fake_provider, openai_allow, ["POST /v1/messages", "POST /v1/files"])


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


@pytest.fixture
def opened_gateway(gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider) -> Gateway:
    """The owner opens stored chat completions, vector stores and file lists besides."""
    openai_allow = [
        "POST /v1/responses",
        "POST /v1/chat/completions",
        "* /v1/chat/completions/*",
        "GET /v1/chat/completions/*/messages",
        "* /v1/files",
        "POST /v1/vector_stores",
        "GET /v1/vector_stores/*",
    ]
    return with_owner_keys(gateway_factory, fake_provider, openai_allow, ["POST /v1/messages", "* /v1/files"])


SPOKEN: dict[str, Any] = {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}


def spoken_audio_id(client: openai.OpenAI, stream: bool) -> str:
    """The id of the audio a spoken answer's provider keeps (JSON: its message's; a stream: its first chunk's)."""
    asked = [{"role": "user", "content": "say my secret out loud"}]
    if not stream:
        answer = client.chat.completions.create(model=MODEL, messages=asked, **SPOKEN)  # type: ignore[arg-type]
        assert answer.choices[0].message.audio is not None
        return answer.choices[0].message.audio.id
    chunks = list(client.chat.completions.create(model=MODEL, messages=asked, stream=True, **SPOKEN))  # type: ignore[arg-type]
    return next(c.choices[0].delta.audio.id for c in chunks if c.choices[0].delta.audio and c.choices[0].delta.audio.id)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_spoken_answers_audio_id_is_its_callers(
    owned_gateway: Gateway, fake_provider: RunningFakeProvider, stream: bool
) -> None:
    """An assistant message naming `audio.id` is answered from the audio the provider kept for it."""
    a, b = owned_gateway.openai(api_key=A_KEY), owned_gateway.openai(api_key=B_KEY)
    audio_id = spoken_audio_id(a, stream)
    messages = [
        {"role": "user", "content": "say my secret out loud"},
        {"role": "assistant", "audio": {"id": audio_id}},
        {"role": "user", "content": "now say it again"},
    ]
    before = fake_provider.count("/chat/completions")

    with pytest.raises(openai.NotFoundError, match=audio_id):
        b.chat.completions.create(model=MODEL, messages=messages, **SPOKEN)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):  # an audio id no caller was handed
        a.chat.completions.create(model=MODEL, messages=[{"role": "assistant", "audio": {"id": "audio_owners"}}])

    assert fake_provider.count("/chat/completions") == before
    assert a.chat.completions.create(model=MODEL, messages=messages, **SPOKEN).choices  # type: ignore[arg-type]
    assert fake_provider.last.body["messages"][1]["audio"]["id"] == audio_id


def test_a_stored_chat_completion_is_its_callers(opened_gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    """`store: true` keeps a completion, read back (and its messages) or deleted by id where the owner opens it."""
    a, b = opened_gateway.openai(api_key=A_KEY), opened_gateway.openai(api_key=B_KEY)
    stored = a.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "my salary"}], store=True)
    unstored = a.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "not kept"}])
    before = len(fake_provider.requests)

    with pytest.raises(openai.NotFoundError, match=stored.id):
        b.chat.completions.retrieve(stored.id)
    with pytest.raises(openai.NotFoundError):
        b.chat.completions.messages.list(stored.id)
    with pytest.raises(openai.NotFoundError):
        b.chat.completions.update(stored.id, metadata={"taken": "yes"})
    with pytest.raises(openai.NotFoundError):
        b.chat.completions.delete(stored.id)
    with pytest.raises(openai.NotFoundError):  # the provider kept nothing of a completion not stored
        a.chat.completions.retrieve(unstored.id)

    assert len(fake_provider.requests) == before
    assert a.chat.completions.retrieve(stored.id).id == stored.id
    assert a.chat.completions.messages.list(stored.id).data
    assert a.chat.completions.delete(stored.id).deleted


def test_a_streamed_stored_chat_completion_is_its_callers(
    opened_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    a, b = opened_gateway.openai(api_key=A_KEY), opened_gateway.openai(api_key=B_KEY)
    asked = [{"role": "user", "content": "stream and keep it"}]
    chunks = list(a.chat.completions.create(model=MODEL, messages=asked, store=True, stream=True))  # type: ignore[arg-type]
    completion_id = chunks[0].id
    with pytest.raises(openai.NotFoundError):
        b.chat.completions.retrieve(completion_id)
    assert a.chat.completions.retrieve(completion_id).id == completion_id


def test_a_vector_store_is_its_callers(opened_gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    """A vector store holds the chunks of the files in it: named by `file_search`'s `vector_store_ids`, in
    Assistants' `tool_resources`, or in a path; a store made of another caller's files is refused too."""
    a, b = opened_gateway.openai(api_key=A_KEY), opened_gateway.openai(api_key=B_KEY)
    uploaded = a.files.create(file=("notes.txt", io.BytesIO(b"payroll figures"), "text/plain"), purpose="assistants")
    store = a.vector_stores.create(name="notes", file_ids=[uploaded.id])
    search = [{"type": "file_search", "vector_store_ids": [store.id]}]
    before = responses_count(fake_provider)

    with pytest.raises(openai.NotFoundError, match=store.id):
        b.responses.create(model=MODEL, input="what is in my notes?", tools=search)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        b.vector_stores.retrieve(store.id)
    with pytest.raises(openai.NotFoundError, match=uploaded.id):
        b.vector_stores.create(name="mine now", file_ids=[uploaded.id])
    resources = {"tool_resources": {"file_search": {"vector_store_ids": [store.id]}}}
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model=MODEL, input="x", extra_body=resources)

    assert responses_count(fake_provider) == before and fake_provider.count("/vector_stores") == 1
    assert a.responses.create(model=MODEL, input="what is in my notes?", tools=search).id  # type: ignore[arg-type]
    assert a.vector_stores.retrieve(store.id).id == store.id


def test_a_reasoning_item_sent_back_by_id_is_its_callers_and_an_encrypted_one_goes_on(
    owned_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """A reasoning item without `encrypted_content` is looked up by id in what the provider stored; one
    carried encrypted (`store: false`) is stateless, and an item carried whole with its content is no
    reference: both go on for any caller."""
    a, b = owned_gateway.openai(api_key=A_KEY), owned_gateway.openai(api_key=B_KEY)
    first = a.responses.create(model=MODEL, input="think about my plan", reasoning={"effort": "low"})
    thought = next(item for item in first.output if item.type == "reasoning")
    sent_back = [{"type": "reasoning", "id": thought.id, "summary": []}, {"role": "user", "content": "go on"}]
    before = responses_count(fake_provider)

    with pytest.raises(openai.NotFoundError, match=thought.id):
        b.responses.create(model=MODEL, input=sent_back, reasoning={"effort": "low"})  # type: ignore[arg-type]
    assert responses_count(fake_provider) == before
    assert a.responses.create(model=MODEL, input=sent_back, reasoning={"effort": "low"}).id  # type: ignore[arg-type]

    stateless = b.responses.create(
        model=MODEL,
        input="think without keeping it",
        reasoning={"effort": "low"},
        store=False,
        include=["reasoning.encrypted_content"],
    )
    carried = [item.model_dump(exclude_none=True) for item in stateless.output]
    assert carried[0]["type"] == "reasoning" and carried[0]["encrypted_content"]
    again = b.responses.create(
        model=MODEL,
        input=[*carried, {"role": "user", "content": "and then?"}],  # type: ignore[list-item]
        reasoning={"effort": "low"},
        store=False,
        include=["reasoning.encrypted_content"],
    )
    assert again.id and fake_provider.last.body["input"][0]["id"] == carried[0]["id"]


def test_a_list_of_files_shows_each_caller_its_own(opened_gateway: Gateway, fake_provider: RunningFakeProvider) -> None:
    """Every caller's uploads are in the one account: where the owner opens the list, each caller is shown
    the files uploaded through the gateway for it."""
    a, b = opened_gateway.openai(api_key=A_KEY), opened_gateway.openai(api_key=B_KEY)
    mine = a.files.create(file=("a.txt", io.BytesIO(b"a's payroll"), "text/plain"), purpose="user_data")
    theirs = b.files.create(file=("b.txt", io.BytesIO(b"b's payroll"), "text/plain"), purpose="user_data")

    assert [f.id for f in a.files.list()] == [mine.id]
    assert [f.id for f in b.files.list()] == [theirs.id]
    assert [f.id for f in opened_gateway.openai(api_key=B_KEY).files.list(purpose="user_data")] == [theirs.id]


def test_a_list_of_anthropic_files_shows_each_caller_its_own(
    opened_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    a, b = opened_gateway.anthropic(api_key=A_KEY), opened_gateway.anthropic(api_key=B_KEY)
    mine = a.beta.files.upload(file=("a.txt", io.BytesIO(b"a's payroll"), "text/plain"))
    b.beta.files.upload(file=("b.txt", io.BytesIO(b"b's payroll"), "text/plain"))

    listed = a.beta.files.list()
    assert [f.id for f in listed.data] == [mine.id]


@pytest.fixture
def by_id_gateway(gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider) -> Gateway:
    """The owner opened stored responses and files by id (`GET /v1/responses/{id}`, a file's content)."""
    allow = ["POST /v1/responses", "GET /v1/responses/*", "POST /v1/files", "GET /v1/files/*/content"]
    return gateway_factory(
        {
            "auth": {"keys": [A_KEY, B_KEY]},
            "upstreams": {
                "openai": {"base_url": fake_provider.openai_base_url, "api_key": OPENAI_OWNER, "allow": allow}
            },
        }
    )


ESCAPES = {
    "first_letter": lambda held_id: "%" + held_id[0].encode().hex() + held_id[1:],
    "separator": lambda held_id: held_id.replace("_", "%5F").replace("-", "%2D"),
    "every_byte_lower_case": lambda held_id: "".join("%" + b.encode().hex() for b in held_id),
}


@pytest.mark.parametrize("escape", list(ESCAPES), ids=list(ESCAPES))
def test_an_id_in_an_opened_path_is_read_as_the_provider_decodes_it(
    by_id_gateway: Gateway, fake_provider: RunningFakeProvider, escape: str
) -> None:
    """The gateway forwards a path's escapes as they came and the provider decodes them: B opening A's
    response or file at `/v1/responses/%72esp_...` was not seen to name an id, and went on."""
    a = by_id_gateway.openai(api_key=A_KEY)
    response = a.responses.create(model=MODEL, input="my secret plan").id
    uploaded = a.files.create(file=("notes.txt", io.BytesIO(b"payroll"), "text/plain"), purpose="user_data").id
    before = len(fake_provider.requests)
    for path in (f"/v1/responses/{ESCAPES[escape](response)}", f"/v1/files/{ESCAPES[escape](uploaded)}/content"):
        answer = httpx2.get(f"{by_id_gateway.url}{path}", headers={"authorization": f"Bearer {B_KEY}"}, timeout=10)
        assert answer.status_code == 404, path
    assert len(fake_provider.requests) == before  # refused before it left
    mine = f"/v1/responses/{ESCAPES[escape](response)}"
    httpx2.get(f"{by_id_gateway.url}{mine}", headers={"authorization": f"Bearer {A_KEY}"}, timeout=10)
    assert len(fake_provider.requests) == before + 1  # A's own, however spelt, goes on


def test_a_file_named_in_a_prompt_templates_variables_is_its_uploaders(
    owned_gateway: Gateway, fake_provider: RunningFakeProvider
) -> None:
    """A Responses `prompt` fills its variables with input files the provider reads: ids were looked for
    in `input` and `messages` only, so B's prompt variable reached A's upload."""
    a, b = owned_gateway.openai(api_key=A_KEY), owned_gateway.openai(api_key=B_KEY)
    uploaded = a.files.create(file=("notes.txt", io.BytesIO(b"payroll"), "text/plain"), purpose="user_data").id
    prompt = {"id": "pmpt_owners_template", "variables": {"report": {"type": "input_file", "file_id": uploaded}}}

    with pytest.raises(openai.NotFoundError, match=uploaded):
        b.responses.create(model=MODEL, prompt=prompt)  # type: ignore[arg-type]

    assert responses_count(fake_provider) == 0
    assert a.responses.create(model=MODEL, prompt=prompt).id  # type: ignore[arg-type]


def test_one_callers_flood_of_responses_never_pushes_another_callers_ids_out_of_a_full_store(
    gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider
) -> None:
    """Every Responses call records its ids for 30 days. All callers' records were one tenant of a bounded
    store, so B's unique calls made it the largest and pushed A's records out: A's own id, asked on a pod
    that had not minted it, was refused as never seen. Each caller's records are now that caller's."""
    shared = Cache(MemoryStore(max_entries=40))
    config = {
        "auth": {"keys": [A_KEY, B_KEY]},
        "upstreams": {"openai": {"base_url": fake_provider.openai_base_url, "api_key": OPENAI_OWNER}},
    }
    one, two = gateway_factory(config, cache=shared), gateway_factory(config, cache=shared)
    first = one.openai(api_key=A_KEY).responses.create(model=MODEL, input="started on pod one").id
    b = one.openai(api_key=B_KEY)
    for n in range(30):
        b.responses.create(model=MODEL, input=f"flood {n}")
    assert two.openai(api_key=A_KEY).responses.create(model=MODEL, input="go on", previous_response_id=first).id


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream"])
def test_a_json_body_sent_under_another_content_type_is_still_read_for_ids(
    owned_gateway: Gateway, fake_provider: RunningFakeProvider, content_type: str | None
) -> None:
    """Only a body declared JSON or a form was read for ids: the same JSON declared `text/plain`, or
    nothing, went on unread to a provider that may parse it whatever its declared type."""
    a = owned_gateway.openai(api_key=A_KEY)
    first = a.responses.create(model=MODEL, input="my secret plan").id
    raw = orjson.dumps({"model": MODEL, "input": "what was it?", "previous_response_id": first})
    headers = {"authorization": f"Bearer {B_KEY}"} | ({"content-type": content_type} if content_type else {})
    before = responses_count(fake_provider)

    answer = httpx2.post(f"{owned_gateway.url}/v1/responses", content=raw, headers=headers, timeout=10)

    assert answer.status_code == 400 and answer.json()["error"]["code"] == "previous_response_not_found"
    assert responses_count(fake_provider) == before


def test_a_list_opened_under_an_escaped_path_still_shows_each_caller_its_own(
    gateway_factory: Callable[..., Gateway], fake_provider: RunningFakeProvider
) -> None:
    """A list was known by its path as forwarded: `GET /v1/%66iles`, which the provider reads as
    `/v1/files`, was no list, and (where an allow rule's wildcard let it through) B was shown every
    caller's files."""
    gateway = with_owner_keys(gateway_factory, fake_provider, ["POST /v1/files", "GET /v1/*"], [])
    a = gateway.openai(api_key=A_KEY)
    mine = a.files.create(file=("a.txt", io.BytesIO(b"a's payroll"), "text/plain"), purpose="user_data").id
    for path in ("/v1/%66iles", "/v1/file%73"):
        answer = httpx2.get(f"{gateway.url}{path}", headers={"authorization": f"Bearer {B_KEY}"}, timeout=10)
        assert answer.status_code == 200 and mine not in answer.text, path
