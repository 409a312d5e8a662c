"""State the provider holds for whoever created it, by id: which ids a request names, which an answer mints.

A gateway spending its owner's key (`gateway._Owned`) gives every admitted caller one provider account,
so a Responses id, a conversation, an uploaded file or a Gemini cached content created by one caller is
reachable by any other who names its id. These are the wire facts of each gateway family: where a
request names such an id (body and path) and where an answer hands one out (JSON or, for Responses,
its stream), with the error the provider itself answers for an id its caller cannot see.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

__all__ = ["SSE_MARKERS", "STREAM_EVENTS", "minted", "minting", "named", "not_found"]

# (kind, id): a kind keeps a file id and a response id of the same text apart.
Held = tuple[str, str]

_OPENAI_PATH = re.compile(r"/(responses|conversations|files)/((?:resp|conv|file)[-_][^/]+)")
"""An id in an OpenAI path the owner opened (`GET /v1/responses/{id}`, `DELETE /v1/files/{id}`, ...)."""
_PATH_KIND = {"responses": "response", "conversations": "conversation", "files": "file"}
_ANTHROPIC_PATH = re.compile(r"/v1/files/(file_[^/]+)")
_GEMINI_PATH = re.compile(r"/v1(?:beta|alpha)?/(files/[^/:]+|cachedContents/[^/:]+)")
_GEMINI_FILE = re.compile(r"(?:^|/v1(?:beta|alpha)?/)(files/[A-Za-z0-9_-]+)$")
"""A Gemini Files API URI (`https://generativelanguage.googleapis.com/v1beta/files/abc`, or `files/abc`);
`fileData` also takes YouTube and web URLs, which no caller owns."""

STREAM_EVENTS: dict[str, frozenset[str]] = {
    "openai": frozenset({"response.created", "response.completed"}),
    "azure": frozenset({"response.created", "response.completed"}),
    "anthropic": frozenset({"message_start", "message_delta"}),
}
"""By family, the stream events that may carry ids minted: a Responses stream names its response first and
its output items (and their containers) last; a Messages stream names its container at its start or end."""
SSE_MARKERS: dict[str, tuple[bytes, ...]] = {
    "openai": (b"response.created", b"response.completed"),
    "azure": (b"response.created", b"response.completed"),
    "anthropic": (b'"container"',),
}
"""By family, bytes an event naming ids holds (a cheap test before an event is parsed)."""


def _file_ids(value: Any) -> Iterator[str]:
    """Every `file_id` string under `value` (message or input content, at any depth)."""
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
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item.get("type") == "item_reference" and isinstance(item.get("id"), str):
                yield item["id"]


def _openai_named(path: str, body: Any) -> Iterator[Held]:
    for match in _OPENAI_PATH.finditer(path):
        yield _PATH_KIND[match.group(1)], match.group(2)
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
    for field in ("input", "messages"):
        yield from (("file", file_id) for file_id in _file_ids(body.get(field)))
    yield from (("item", item) for item in _item_references(body.get("input")))
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
        for field in ("messages", "system"):
            yield from (("file", file_id) for file_id in _file_ids(body.get(field)))
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


_NAMED = {"openai": _openai_named, "azure": _openai_named, "anthropic": _anthropic_named, "gemini": _gemini_named}


def named(family: str, path: str, body: Any) -> list[Held]:
    """The provider-held ids a request to `family` names: in its path (a call the owner opened by name) and
    its JSON body (`previous_response_id`, `conversation`, `item_reference`s, file ids in content, Gemini
    `fileData` Files URIs and `cachedContent`). Prompt ids are not among them: the owner creates those."""
    reader = _NAMED.get(family)
    return list(dict.fromkeys(reader(path, body))) if reader is not None else []


def minting(family: str, method: str, path: str) -> bool:
    """Whether a successful answer to this call hands out ids its caller will name later."""
    if method != "POST":
        return False
    if family in ("openai", "azure"):
        return path.endswith(("/responses", "/conversations", "/files"))
    if family == "anthropic":
        return path in ("/v1/files", "/v1/messages")
    return family == "gemini" and path.endswith("/cachedContents")


def minted(family: str, path: str, answer: Any) -> list[Held]:
    """The ids a successful answer (a JSON object, or one event of its stream among `STREAM_EVENTS`) hands
    out: a response's id, its output items' ids and the code interpreter containers they ran in; an
    Anthropic message's container; a conversation's, an uploaded file's id; a Gemini cached content's name."""
    if not isinstance(answer, dict):
        return []
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
    if path.endswith("/conversations"):
        return [("conversation", found)]
    ids: list[Held] = [("response", found)]
    output = answer.get("output")
    for item in output if isinstance(output, list) else ():
        if isinstance(item, dict):
            ids += [(kind, item[field]) for kind, field in _ITEM_IDS if isinstance(item.get(field), str)]
    return ids


_ITEM_IDS = (("item", "id"), ("container", "container_id"))


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
