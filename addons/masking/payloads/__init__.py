"""Payload adapters: which values of a body are conversation text, and which are structural, for each API the
gateway understands.

One file per API (OpenAI chat, responses, embeddings; Anthropic messages), then generic JSON,
JSON Lines, multipart and urlencoded forms and plain text. A JSON body goes to the first adapter whose path
matches, else to generic JSON; a body that is none of these is ``None`` (binary or unknown: passed or refused
by policy, never half-masked). In a request every other string and every key is analysed too (deny by default,
``Payload.cover``), save the adapter's ``structural`` fields. Add a provider by adding a file and
listing its ``ADAPTER`` here.
"""

from __future__ import annotations

from collections.abc import Callable

from addons.bodies.jsonlimits import MAX_JSON_DEPTH, json_depth, parse_json
from addons.flow.errors import DuplicateJsonKey, MalformedBody
from addons.masking.payloads import (
    anthropic_messages,
    form,
    generic_json,
    jsonl,
    multipart,
    openai_chat,
    openai_embeddings,
    openai_responses,
    text,
)
from addons.masking.payloads.base import (
    Adapter,
    Payload,
    StreamEvent,
    StreamSlot,
    TextSlot,
    Uninspected,
    described,
)

ADAPTERS: tuple[Adapter, ...] = (openai_chat.ADAPTER, openai_responses.ADAPTER, openai_embeddings.ADAPTER,
                                 anthropic_messages.ADAPTER)
GENERIC = generic_json.ADAPTER

__all__ = ["ADAPTERS", "Adapter", "Payload", "StreamEvent", "StreamSlot", "TextSlot", "Uninspected", "adapter_for",
           "body_kind", "described", "parse_body"]


def adapter_for(path: str) -> Adapter:
    """The adapter for a request path (query string ignored): a provider's, else generic JSON."""
    path = path.split("?", 1)[0].rstrip("/")
    return next((a for a in ADAPTERS if a.matches(path)), GENERIC)


def _mime(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def body_kind(content_type: str, body: bytes) -> str:
    """``empty``, ``json``, ``jsonl``, ``form``, ``multipart``, ``sse``, ``text`` or ``binary``. Undeclared bodies
    are sniffed."""
    if not body:
        return "empty"
    mime = _mime(content_type)
    if mime == "application/json" or mime.endswith("+json"):
        return "json"
    if mime in jsonl.MEDIA_TYPES:
        return "jsonl"
    if mime == "application/x-www-form-urlencoded":
        return "form"
    if mime == "multipart/form-data":
        return "multipart"
    if mime == "text/event-stream":
        return "sse"
    if mime.startswith("text/"):
        return "text"
    if mime in ("", "application/octet-stream") and body.lstrip()[:1] in (b"{", b"["):
        try:
            parse_json(body)
            return "json"
        except DuplicateJsonKey:
            return "json"  # JSON read two ways: refused as JSON, never passed on as text
        except MalformedBody:
            if json_depth(body) > MAX_JSON_DEPTH:
                return "json"
    if mime == "":
        try:
            body.decode("utf-8")
            return "text"
        except UnicodeDecodeError:
            pass
    return "binary"


def parse_body(path: str, content_type: str, body: bytes, *, response: bool = False,
               inert: Callable[[str], bool] = lambda _: False) -> tuple[Payload, str] | None:
    """The body's slots and the adapter's name; ``None`` for bodies that cannot be inspected (binary, SSE). A
    request's slots cover every string and key but the adapter's structural fields and what ``inert`` says no
    recognizer can flag (``Payload.cover``).

    Raises ``MalformedBody`` when the body does not parse as what it declares, or parses two ways
    (``DuplicateJsonKey``).
    """
    kind = body_kind(content_type, body)
    if kind == "empty":
        return Payload(None, serialise=lambda _: b""), "empty"
    if kind == "json":
        adapter = adapter_for(path)
        document = parse_json(body)
        if response:
            return adapter.response(document), adapter.name
        payload = adapter.request(document)
        payload.cover(adapter.structural, inert)
        return payload, adapter.name
    if kind == "jsonl":
        return jsonl.parse(body, adapter_for, response=response, inert=inert), "jsonl"
    if kind == "multipart" and not response:
        return multipart.parse(body, content_type, adapter_for, inert), "multipart"
    if kind == "form":
        return form.parse(body), "form"
    if kind == "text":
        return text.parse(body, content_type), "text"
    return None
