"""What every payload adapter shares: text slots in a parsed body, and rendering the body back.

An adapter turns a body into a ``Payload``: the parsed document plus the ``TextSlot``s that hold
natural-language text (only these are analysed and masked), each with its JSON path and a setter
into the document. ``Payload.render()`` serialises the document with the new texts; its shape is
untouched. JSON carried inside a string (tool-call arguments) is parsed and walked as JSON, so a
replacement never breaks it, and re-encoded on render.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from addons.flow.errors import MalformedBody


@dataclass
class TextSlot:
    """One text value of a body: where it is (``path``), what it says, and how to change it."""

    path: str
    text: str
    set: Callable[[str], None]


@dataclass
class Payload:
    """A parsed body and its text slots. ``render`` gives the body with the slots' new texts."""

    document: Any
    slots: list[TextSlot] = field(default_factory=list)
    serialise: Callable[[Any], bytes] = lambda doc: json.dumps(doc, ensure_ascii=False).encode()
    _before_render: list[Callable[[], None]] = field(default_factory=list)

    def render(self) -> bytes:
        for step in self._before_render:
            step()
        return self.serialise(self.document)

    # -- building slots ------------------------------------------------------------------------------

    def add(self, container: Any, key: Any, path: str) -> None:
        """A slot for ``container[key]`` if it holds a string."""
        value = container[key] if _has(container, key) else None
        if isinstance(value, str) and value:
            self.slots.append(TextSlot(path, value, lambda new, c=container, k=key: c.__setitem__(k, new)))

    def walk(self, node: Any, path: str) -> None:
        """A slot for every string value under ``node`` (keys are left alone)."""
        if isinstance(node, dict):
            children = ((key, f"{path}.{key}" if _plain(key) else f"{path}[{json.dumps(key)}]") for key in node)
        elif isinstance(node, list):
            children = ((i, f"{path}[{i}]") for i in range(len(node)))
        else:
            return
        for key, child_path in children:
            if isinstance(node[key], str):
                self.add(node, key, child_path)
            else:
                self.walk(node[key], child_path)

    def add_embedded_json(self, container: Any, key: Any, path: str) -> None:
        """A string that holds JSON (tool-call arguments): walked as JSON, re-encoded on render; else plain text."""
        raw = container[key] if _has(container, key) else None
        if not isinstance(raw, str) or not raw:
            return
        try:
            inner = json.loads(raw)
        except ValueError:
            self.add(container, key, path)
            return
        if isinstance(inner, str):
            self.add(container, key, path)
            return
        box = [inner]
        before = len(self.slots)
        self.walk(box, f"{path}<json>")
        if len(self.slots) > before:
            for slot in self.slots[before:]:
                slot.path = slot.path.replace("<json>[0]", "<json>$", 1)

            def reencode() -> None:
                container[key] = json.dumps(box[0], ensure_ascii=False)

            self._before_render.append(reencode)


def everything(document: Any) -> Payload:
    """Every string value of ``document``: for bodies an adapter does not know the shape of."""
    payload = Payload(document)
    payload.walk(document, "$")
    return payload


def _has(container: Any, key: Any) -> bool:
    if isinstance(container, dict):
        return key in container
    return isinstance(container, list) and isinstance(key, int) and 0 <= key < len(container)


def _plain(key: str) -> bool:
    return key.isidentifier()


def parse_json(body: bytes, what: str = "request") -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedBody(f"the {what} body is not valid JSON ({e}); it cannot be inspected for PII") from None


def items(node: Any) -> Iterator[tuple[int, Any]]:
    """``enumerate`` over a list, nothing for anything else (bodies are untrusted)."""
    if isinstance(node, list):
        yield from enumerate(node)


def add_content(payload: Payload, container: Any, key: str, path: str, text_types: tuple[str, ...] = ("text",)) -> None:
    """A message's content: a string, or a list of parts of which those typed ``text_types`` carry ``text``."""
    content = container.get(key) if isinstance(container, dict) else None
    if isinstance(content, str):
        payload.add(container, key, path)
        return
    for i, part in items(content):
        if isinstance(part, dict) and part.get("type") in text_types:
            payload.add(part, "text", f"{path}[{i}].text")


@dataclass
class StreamSlot:
    """A text delta inside one SSE event: which running text it continues (``channel``) and how to set it.

    ``json_fragment`` marks deltas that are pieces of a JSON document (tool-call arguments), where
    restored values must be JSON-escaped.
    """

    channel: tuple
    text: str
    set: Callable[[Any], None]  # the new text (the stream rewriter first puts a marker there)
    json_fragment: bool = False


def stream_slot(container: Any, key: str, channel: tuple, json_fragment: bool = False) -> StreamSlot | None:
    value = container.get(key) if isinstance(container, dict) else None
    if not isinstance(value, str):
        return None
    return StreamSlot(channel, value, lambda new, c=container, k=key: c.__setitem__(k, new), json_fragment)


@dataclass
class StreamEvent:
    """What one SSE event carries: deltas of running texts, and the channels it ends. Every other string
    of the event is a whole value (it arrives whole in this event): the stream rewriter scans those itself."""

    deltas: list[StreamSlot] = field(default_factory=list)
    closes: list[tuple] = field(default_factory=list)  # channel prefixes to flush before this event goes out


class Adapter:
    """One API's payloads: by default every string value (generic JSON). Provider adapters override
    ``matches`` and pick the text slots of their requests, responses and stream events."""

    name = "json"

    def matches(self, path: str) -> bool:
        return True

    def request(self, document: Any) -> Payload:
        return everything(document)

    def response(self, document: Any) -> Payload:
        return everything(document)

    def stream(self, event: Any) -> StreamEvent:
        """No running texts: every string of the event is a whole value."""
        return StreamEvent()
