"""State the provider holds for whoever created it, by id: which ids a request names, which an answer mints.

A gateway spending its owner's key gives every admitted caller one provider account, so a Responses
id, a conversation, an uploaded file or a Gemini cached content created by one caller is reachable by
any other who names its id (`_ownership.Ownership` records whose each id is). These are the wire
facts of each gateway family: where a request names such an id (body and path) and where an answer
hands one out (JSON or, for Responses, its stream), with the error the provider itself answers for
an id its caller cannot see.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

__all__ = [
    "ID_MARKS",
    "SSE_MARKERS",
    "STREAM_EVENTS",
    "Listing",
    "as_read",
    "listed",
    "minted",
    "minting",
    "named",
    "not_found",
]

# (kind, id): a kind keeps a file id and a response id of the same text apart.
Held = tuple[str, str]
# (kind, the list answer's array field, its entries' id field)
Listing = tuple[str, str, str]

_OPENAI_PATH = re.compile(
    r"/(responses|conversations|files|vector_stores|containers)/((?:resp|conv|file|vs|cntr)[-_][^/]+)"
    r"|/chat/(completions)/([^/]+)"
)
"""An id in an OpenAI path the owner opened (`GET /v1/responses/{id}`, `DELETE /v1/files/{id}`,
`GET /v1/vector_stores/{id}/files`, a stored chat completion's `GET /v1/chat/completions/{id}/messages`)."""
_PATH_KIND = {
    "responses": "response",
    "conversations": "conversation",
    "files": "file",
    "vector_stores": "vector_store",
    "containers": "container",
}
_ANTHROPIC_PATH = re.compile(r"/v1/files/(file_[^/]+)")
_GEMINI_PATH = re.compile(r"/v1(?:beta|alpha)?/(files/[^/:]+|cachedContents/[^/:]+)")
_GEMINI_FILE = re.compile(r"(?:^|/v1(?:beta|alpha)?/)(files/[A-Za-z0-9_-]+)(?:$|[/?#])")
"""A Gemini Files API URI (`https://generativelanguage.googleapis.com/v1beta/files/abc`, or `files/abc`),
with whatever query or trailing slash follows (a URI the gateway let through on a guess may be the
file's); `fileData` also takes YouTube and web URLs, which no caller owns."""

STREAM_EVENTS: dict[str, frozenset[str]] = {
    "openai": frozenset({"response.created", "response.completed", "chat.completion.chunk"}),
    "azure": frozenset({"response.created", "response.completed", "chat.completion.chunk"}),
    "anthropic": frozenset({"message_start", "message_delta"}),
}
"""By family, the stream events (`type`, or a chat chunk's `object`) that may carry ids minted: a Responses
stream names its response first and its output items (and their containers) last; a chat stream asked to
store or speak names its completion and its audio in its chunks; a Messages stream names its container at
its start or end."""
SSE_MARKERS: dict[str, tuple[bytes, ...]] = {
    "openai": (b"response.created", b"response.completed", b"chat.completion.chunk"),
    "azure": (b"response.created", b"response.completed", b"chat.completion.chunk"),
    "anthropic": (b'"container"',),
}
"""By family, bytes an event naming ids holds (a cheap test before an event is parsed)."""


def _file_ids(value: Any) -> Iterator[str]:
    """Every `file_id` string under `value`, at any depth: a provider reads one in message or input
    content, a prompt template's variables, and wherever its API grows one next."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found = item.get("file_id")
            if isinstance(found, str):
                yield found
            # (an output item sent back as input cites files in `annotations`: the provider does not read them)
            stack.extend(v for k, v in item.items() if k != "annotations" and isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))


def _item_references(value: Any) -> Iterator[str]:
    """The input items the provider resolves by id against what it stored: an `item_reference`, and a
    `reasoning` item carried without its `encrypted_content` (its thought is looked up by id; one carried
    encrypted is stateless). Any other item sent back carries its content whole: its id is no reference."""
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            kind = item.get("type")
            if kind == "item_reference" or (kind == "reasoning" and not item.get("encrypted_content")):
                yield item["id"]


def _strings(value: Any) -> Iterator[str]:
    yield from (v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _audio_ids(messages: Any) -> Iterator[str]:
    """Chat Completions: an assistant message naming the audio the provider kept for a spoken answer."""
    for message in messages if isinstance(messages, list) else ():
        audio = message.get("audio") if isinstance(message, dict) and message.get("role") == "assistant" else None
        if isinstance(audio, dict) and isinstance(audio.get("id"), str):
            yield audio["id"]


def _stores_and_files(body: dict[str, Any]) -> Iterator[Held]:
    """Vector stores and files a body attaches: `file_search` tools' `vector_store_ids`, Assistants'
    `tool_resources` (`file_search.vector_store_ids`, a new store's `file_ids`, `code_interpreter.file_ids`),
    and a vector store's or container's own `file_id` / `file_ids`."""
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict):
            yield from (("vector_store", found) for found in _strings(tool.get("vector_store_ids")))
    resources = body.get("tool_resources")
    resources = resources if isinstance(resources, dict) else {}
    search, code = resources.get("file_search"), resources.get("code_interpreter")
    if isinstance(search, dict):
        yield from (("vector_store", found) for found in _strings(search.get("vector_store_ids")))
        made = search.get("vector_stores")
        for new in made if isinstance(made, list) else ():
            yield from (("file", found) for found in _strings(new.get("file_ids") if isinstance(new, dict) else None))
    if isinstance(code, dict):
        yield from (("file", found) for found in _strings(code.get("file_ids")))
    yield from (("file", found) for found in _strings(body.get("file_ids")))
    if isinstance(body.get("file_id"), str):
        yield "file", body["file_id"]


def _openai_named(path: str, body: Any) -> Iterator[Held]:
    for match in _OPENAI_PATH.finditer(path):
        yield (_PATH_KIND[match.group(1)], match.group(2)) if match.group(1) else ("chat_completion", match.group(4))
    if not isinstance(body, dict):
        return
    previous = body.get("previous_response_id")
    if isinstance(previous, str):
        yield "response", previous
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    if isinstance(conversation, str):
        yield "conversation", conversation
    # (anywhere in the body: `input`, `messages`, a `prompt`'s variables ... wherever the provider reads one)
    yield from (("file", file_id) for file_id in _file_ids(body))
    yield from (("item", item) for item in _item_references(body.get("input")))
    yield from (("audio", audio) for audio in _audio_ids(body.get("messages")))
    yield from _stores_and_files(body)
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        container = tool.get("container") if isinstance(tool, dict) else None
        if isinstance(container, str):  # an existing code interpreter container
            yield "container", container
        elif isinstance(container, dict) and isinstance(container.get("file_ids"), list):
            yield from (("file", file_id) for file_id in container["file_ids"] if isinstance(file_id, str))


def _anthropic_named(path: str, body: Any) -> Iterator[Held]:
    for match in _ANTHROPIC_PATH.finditer(path):
        yield "file", match.group(1)
    if isinstance(body, dict):
        yield from (("file", file_id) for file_id in _file_ids(body))
        container = body.get("container")
        if isinstance(container, dict):  # an id with skills
            container = container.get("id")
        if isinstance(container, str):
            yield "container", container


def _gemini_named(path: str, body: Any) -> Iterator[Held]:
    for match in _GEMINI_PATH.finditer(path):
        name = match.group(1)
        yield ("file" if name.startswith("files/") else "cached_content"), name
    if not isinstance(body, dict):
        return
    cached = body.get("cachedContent", body.get("cached_content"))
    if isinstance(cached, str):
        yield "cached_content", cached.rpartition("/v1beta/")[2]
    stack: list[Any] = [body.get("contents")]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            data = item.get("fileData", item.get("file_data"))
            uri = data.get("fileUri", data.get("file_uri")) if isinstance(data, dict) else None
            file = _GEMINI_FILE.search(uri) if isinstance(uri, str) else None
            if file is not None:
                yield "file", file.group(1)
            stack.extend(v for v in item.values() if isinstance(v, (dict, list)))


_DECODE_ROUNDS = 4


def as_read(path: str) -> str:
    """`path` as the provider reads it: the gateway forwards escapes as they came and the provider decodes
    them (`/v1/responses/%72esp_1` opens `resp_1`). Decoded until nothing changes (at most a few rounds,
    as `gateway.forwarded_path` checks it): an id spelt under two escapes is still read, never missed.
    An escaped slash (`%2F`) stays one: a server routes on the segments the path has, and the gateway
    forwards it as one segment (`gateway.forwarded_path`)."""
    for _ in range(_DECODE_ROUNDS):
        if "%" not in path:
            break
        path, before = "%2F".join(unquote(part) for part in _SLASH.split(path)), path
        if path == before:
            break
    return path


_SLASH = re.compile("%2F", re.IGNORECASE)


ID_MARKS = (
    b"\\u",
    b"previous_response_id",
    b"conversation",
    b"container",
    b"file_id",
    b"item_reference",
    b"fileData",
    b"file_data",
    b"cachedContent",
    b"cached_content",
    b"audio",
    b"reasoning",
    b"store",
)
"""Bytes without which a body names no provider-held id (`named`), nor asks for one to be minted
(`minting`): `store` is also in `vector_store_ids`, `file_id` in `file_ids`; an escape may spell a key's
name. A key `named` or `minting` learns to read is spelt with one of these, or added here: the gateway
reads a body for ids, and refuses one that names a key twice (a provider may read the value the
gateway did not), only when one is in it."""


_NAMED = {"openai": _openai_named, "azure": _openai_named, "anthropic": _anthropic_named, "gemini": _gemini_named}


def named(family: str, path: str, body: Any) -> list[Held]:
    """The provider-held ids a request to `family` names: in its path as the provider decodes it (a call
    the owner opened by name) and its JSON body (`previous_response_id`, `conversation`,
    `item_reference`s, file ids anywhere, Gemini `fileData` Files URIs and `cachedContent`). Prompt ids
    are not among them: the owner creates those."""
    reader = _NAMED.get(family)
    return list(dict.fromkeys(reader(as_read(path), body))) if reader is not None else []


_OPENAI_LISTS = re.compile(r"(?:/openai)?(?:/v1)?/(files|vector_stores|chat/completions|containers)/?")
_OPENAI_LISTED = {"files": "file", "vector_stores": "vector_store", "chat/completions": "chat_completion"}
_GEMINI_LISTS = re.compile(r"/v1(?:beta|alpha)?/(files|cachedContents)/?")


def listed(family: str, method: str, path: str) -> Listing | None:
    """What a call listing the account's held state lists, or None: OpenAI's `GET /v1/files`,
    `/v1/vector_stores`, `/v1/chat/completions` (stored ones), `/v1/containers` (a list object's `data`);
    Anthropic's `GET /v1/files` (`data`); Gemini's `GET files`, `cachedContents` (by `name`). The path is
    read as the provider reads it (`as_read`): `/v1/%66iles` lists the files too."""
    if method != "GET":
        return None
    path = as_read(path)
    if family in ("openai", "azure") and (match := _OPENAI_LISTS.fullmatch(path)) is not None:
        return _OPENAI_LISTED.get(match.group(1), "container"), "data", "id"
    if family == "anthropic" and path.rstrip("/") == "/v1/files":
        return "file", "data", "id"
    if family == "gemini" and (match := _GEMINI_LISTS.fullmatch(path)) is not None:
        kind = "file" if match.group(1) == "files" else "cached_content"
        return kind, match.group(1), "name"
    return None


def minting(family: str, method: str, path: str, body: Any = None) -> bool:
    """Whether a successful answer to this call (whose JSON body is `body`) hands out ids its caller will
    name later. A chat completion does only when asked to be stored or to speak (its audio is kept)."""
    if method != "POST":
        return False
    path = as_read(path)
    if family in ("openai", "azure"):
        if path.endswith("/chat/completions"):
            return isinstance(body, dict) and (_stored(body) or "audio" in _strings(body.get("modalities")))
        return path.endswith(("/responses", "/conversations", "/files", "/vector_stores", "/containers"))
    if family == "anthropic":
        return path in ("/v1/files", "/v1/messages")
    return family == "gemini" and path.endswith("/cachedContents")


def _stored(body: dict[str, Any]) -> bool:
    return body.get("store") is True


def minted(family: str, path: str, answer: Any, request: Any = None) -> list[Held]:
    """The ids a successful answer (a JSON object, or one event of its stream among `STREAM_EVENTS`) to
    `request` (its JSON body) hands out: a response's id, its output items' ids and the code interpreter
    containers they ran in; a chat completion's audio, and its id when stored; an Anthropic message's
    container; a conversation's, an uploaded file's, a vector store's, a container's id; a Gemini cached
    content's name."""
    path = as_read(path)  # (as `minting` read it)
    if not isinstance(answer, dict):
        return []
    if family in ("openai", "azure") and path.endswith("/chat/completions"):
        return _chat_minted(answer, isinstance(request, dict) and _stored(request))
    if family == "gemini":
        name = answer.get("name")
        return [("cached_content", name)] if isinstance(name, str) else []
    if family == "anthropic" and path == "/v1/messages":
        return _anthropic_container(answer)
    if isinstance(answer.get("response"), dict):  # a Responses stream event
        answer = answer["response"]
    found = answer.get("id")
    if not isinstance(found, str):
        return []
    if family == "anthropic" or path.endswith("/files"):
        return [("file", found)]
    for ending, kind in _CREATED:
        if path.endswith(ending):
            return [(kind, found)]
    ids: list[Held] = [("response", found)]
    output = answer.get("output")
    for item in output if isinstance(output, list) else ():
        if isinstance(item, dict):
            ids += [(kind, item[field]) for kind, field in _ITEM_IDS if isinstance(item.get(field), str)]
    return ids


_ITEM_IDS = (("item", "id"), ("container", "container_id"))
_CREATED = (("/conversations", "conversation"), ("/vector_stores", "vector_store"), ("/containers", "container"))


def _chat_minted(answer: dict[str, Any], stored: bool) -> list[Held]:
    """A chat completion's (or chunk's) audio ids (`choices[].message.audio.id`, a chunk's `delta.audio.id`),
    and its own id when the request stored it."""
    ids: list[Held] = [("chat_completion", answer["id"])] if stored and isinstance(answer.get("id"), str) else []
    choices = answer.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        holder = (choice.get("message") or choice.get("delta")) if isinstance(choice, dict) else None
        audio = holder.get("audio") if isinstance(holder, dict) else None
        if isinstance(audio, dict) and isinstance(audio.get("id"), str):
            ids.append(("audio", audio["id"]))
    return ids


def _anthropic_container(answer: dict[str, Any]) -> list[Held]:
    """The container of a message (`container`), of its stream's `message_start` (`message.container`) or
    `message_delta` (`delta.container`)."""
    for holder in (answer, answer.get("message"), answer.get("delta")):
        container = holder.get("container") if isinstance(holder, dict) else None
        if isinstance(container, dict) and isinstance(container.get("id"), str):
            return [("container", container["id"])]
    return []


_OPENAI_KINDS = {
    "response": "Response",
    "conversation": "Conversation",
    "file": "File",
    "item": "Item",
    "container": "Container",
    "audio": "Audio",
    "chat_completion": "Chat completion",
    "vector_store": "Vector store",
}


def not_found(family: str, kind: str, held_id: str, in_path: bool = False) -> tuple[int, str, str | None]:
    """(status, message, OpenAI code) the provider answers for an id its caller's account cannot see:
    OpenAI's 400 `previous_response_not_found` (404 for other ids, and for one in the path), Anthropic's
    404, Gemini's 403."""
    if family == "gemini":
        what = "File" if kind == "file" else "CachedContent"
        return 403, f"You do not have permission to access the {what} {held_id} or it may not exist.", None
    if family == "anthropic":
        return 404, f"{'Container' if kind == 'container' else 'File'} not found: {held_id}", None
    if kind == "response" and not in_path:
        return 400, f"Previous response with id '{held_id}' not found.", "previous_response_not_found"
    return 404, f"{_OPENAI_KINDS.get(kind, 'Object')} with id '{held_id}' not found.", None
