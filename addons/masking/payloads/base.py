"""What every payload adapter shares: the slots of a parsed body, and rendering the body back.

An adapter turns a body into a ``Payload``: the parsed document plus ``TextSlot``s, each with its JSON path, its
text and a setter into the document. The adapter picks the conversation text (kind ``text``: pseudonyms are
numbered in its order); for a request, ``cover`` then denies by default: every other string value becomes a slot
(kind ``field``) except the adapter's ``structural`` fields (ids, enums, the model) holding a token, and every key
of every object does too (kind ``key``: a key that is masked is renamed in the rendered document). All slots are
analysed and masked alike. ``Payload.render()`` serialises the document with the new texts, its shape untouched.
JSON carried inside a string (tool-call arguments) is parsed and walked as JSON, so a replacement never breaks it,
and re-encoded on render; data URIs and base64 documents are decoded where they hold text (``encoded.py``), and
binary ones are listed in ``uninspected``.
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from addons.bodies.jsonlimits import parse_json
from addons.flow.errors import MalformedBody
from addons.masking.payloads.encoded import Encoded, base64_value, data_uri, is_data_uri

SlotKind = Literal["text", "field", "key"]
# A structural field is skipped only while it holds a token with a letter in it (an id, an enum, a model name):
# free text, an address, or a number (a card, an SSN, a phone) in it is analysed anyway.
_TOKEN = re.compile(r"[^\s@]+")
_LETTER = re.compile(r"[^\W\d_]")


def _setter(container: Any, key: Any) -> Callable[[str], None]:
    """A function that puts a new text at ``container[key]``."""
    def set_text(new: str) -> None:
        container[key] = new
    return set_text


@dataclass
class TextSlot:
    """One string of a body: where it is (``path``), what it says, how to change it, and what it is."""

    path: str
    text: str
    set: Callable[[str], None]
    kind: SlotKind = "text"


@dataclass(frozen=True)
class Uninspected:
    """A value no analyzer can read (binary content): where, what it declares, and why. Never the value."""

    path: str
    media_type: str
    why: str

    def __str__(self) -> str:
        return f"{self.path} ({self.media_type}: {self.why})"


MAX_DESCRIBED = 10


def described(uninspected: list[Uninspected]) -> str:
    """What was not inspected, for a refusal or the record: the first few by path and media type, then a count."""
    named = ", ".join(str(u) for u in uninspected[:MAX_DESCRIBED])
    more = len(uninspected) - MAX_DESCRIBED
    return named + (f" and {more} more" if more > 0 else "")


def _serialise(document: Any) -> bytes:
    text = json.dumps(document, ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate the body escaped: escape everything again
        return json.dumps(document).encode()


def _token(value: str) -> bool:
    """An id, an enum or a model name; never a data URI (one word, but content: it is decoded and analysed)."""
    return bool(_TOKEN.fullmatch(value)) and bool(_LETTER.search(value)) and not is_data_uri(value)


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if _plain(key) else f"{path}[{json.dumps(key, ensure_ascii=False)}]"


@dataclass
class _Rename:
    """A masked key, applied on render (so the setters of the values under it still find them): ``apply`` renames
    it and returns the path it then has."""

    old_path: str
    apply: Callable[[], str]
    new_path: str = ""


def _rename_key(obj: dict, old: str, new: str, parent: str) -> str:
    taken = set(obj) - {old}
    name, n = new, 2
    while name in taken:  # two keys masked alike: the rendered object still names each key once
        name, n = f"{new}_{n}", n + 1
    entries = list(obj.items())
    obj.clear()
    obj.update((name if k == old else k, v) for k, v in entries)
    return _child(parent, name)


@dataclass
class Payload:
    """A parsed body and its slots. ``render`` gives the body with the slots' new texts."""

    document: Any
    slots: list[TextSlot] = field(default_factory=list)
    serialise: Callable[[Any], bytes] = _serialise
    uninspected: list[Uninspected] = field(default_factory=list)
    _before_render: list[Callable[[], None]] = field(default_factory=list)
    _covered: set[tuple[int, Any]] = field(default_factory=set)  # (id of the container, key) of every slot
    _embedded: list[tuple[Any, str]] = field(default_factory=list)  # JSON documents inside strings, and their paths
    _renames: list[_Rename] = field(default_factory=list)
    _renamed: list[_Rename] = field(default_factory=list)
    _root_added: bool = False
    _inert: Callable[[str], bool] = lambda _: False

    def render(self) -> bytes:
        self._apply_renames()
        for step in self._before_render:
            step()
        return self.serialise(self.document)

    def sent_path(self, path: str) -> str:
        """``path`` as it reads in the rendered body: with the masked names of the keys it passes through."""
        self._apply_renames()
        for rename in sorted(self._renamed, key=lambda r: len(r.old_path), reverse=True):
            old = rename.old_path
            if path == old or (path.startswith(old) and path[len(old)] in ".[<"):
                path = rename.new_path + path[len(old):]
        return path

    # -- building slots ------------------------------------------------------------------------------

    def add(self, container: Any, key: Any, path: str, kind: SlotKind = "text") -> None:
        """A slot for ``container[key]`` if it holds a string (a data URI: its text, if it has one)."""
        value = container[key] if _has(container, key) else None
        if not isinstance(value, str) or not value:
            return
        self._covered.add((id(container), key))
        if is_data_uri(value):
            self._add_encoded(container, key, path, data_uri(value), kind)
            return
        self.slots.append(TextSlot(path, value, _setter(container, key), kind))

    def add_base64(self, container: Any, key: Any, media_type: Any, path: str) -> None:
        """A slot for the text in ``container[key]``, base64 of a ``media_type`` document; binary is uninspected."""
        value = container[key] if _has(container, key) else None
        if not isinstance(value, str) or not value:
            return
        self._covered.add((id(container), key))
        self._add_encoded(container, key, path, base64_value(value, str(media_type or "")), "text")

    def _add_encoded(self, container: Any, key: Any, path: str, encoded: Encoded, kind: SlotKind) -> None:
        if encoded.text is None:
            self.uninspected.append(Uninspected(path, encoded.media_type or "unknown", encoded.problem))
        elif encoded.text:

            def write(new: str) -> None:
                container[key] = encoded.encode(new)

            self.slots.append(TextSlot(f"{path}<{encoded.media_type}>", encoded.text, write, kind))

    def walk(self, node: Any, path: str) -> None:
        """A slot for every string value under ``node`` (keys are left to ``cover``)."""
        if isinstance(node, dict):
            children = ((key, _child(path, key)) for key in node)
        elif isinstance(node, list):
            children = ((i, f"{path}[{i}]") for i in range(len(node)))
        else:
            return
        for key, child_path in children:
            if isinstance(node[key], str):
                self.add(node, key, child_path)
            else:
                self.walk(node[key], child_path)

    def embed(self, inner: Payload, prefix: str) -> None:
        """The slots and uninspected values of ``inner``, a document inside this body (a JSONL line, a JSON part of a
        form), as this payload's, their paths under ``prefix``; this payload's ``serialise`` renders ``inner``."""
        self.slots += [TextSlot(prefix + slot.path.removeprefix("$"), slot.text, slot.set, slot.kind)
                       for slot in inner.slots]
        self.uninspected += [Uninspected(prefix + u.path.removeprefix("$"), u.media_type, u.why)
                             for u in inner.uninspected]

    def add_root(self, kind: SlotKind = "text") -> None:
        """A slot for the document itself when it is a string (a JSON body may be one)."""
        if isinstance(self.document, str) and self.document and not self._root_added:
            self._root_added = True
            owner = weakref.ref(self)  # a slot does not keep its payload alive (no cycle for the collector)
            self.slots.append(TextSlot("$", self.document, lambda new: setattr(owner(), "document", new), kind))

    def add_embedded_json(self, container: Any, key: Any, path: str) -> None:
        """A string that holds JSON (tool-call arguments): walked as JSON and re-encoded on render; else (not JSON,
        or JSON read two ways: a key named twice) plain text, so every character of it is analysed."""
        raw = container[key] if _has(container, key) else None
        if not isinstance(raw, str) or not raw:
            return
        try:
            inner = parse_json(raw)
        except MalformedBody:
            inner = None
        if not isinstance(inner, (dict, list)):
            self.add(container, key, path)
            return
        self._covered.add((id(container), key))
        root = f"{path}<json>$"
        self.walk(inner, root)
        self._embedded.append((inner, root))
        self._before_render.append(lambda: container.__setitem__(key, json.dumps(inner, ensure_ascii=False)))

    # -- deny by default ------------------------------------------------------------------------------

    def cover(self, structural: frozenset[str] = frozenset(), inert: Callable[[str], bool] = lambda _: False) -> None:
        """Every string the adapter did not pick becomes a ``field`` slot, and every key a ``key`` slot; strings at
        a ``structural`` path (``$.messages[*].role``: indexes as ``[*]``) are skipped while they hold a token, and
        strings and keys ``inert`` says no recognizer can flag need no slot (rendering writes them as they are)."""
        self._inert = inert
        self.add_root("field")
        self._cover(self.document, "$", "$" if structural else None, structural)
        for inner, root in self._embedded:
            self._cover(inner, root, None, structural)  # tool arguments are free-form: nothing is structural there

    def _cover(self, node: Any, path: str, pattern: str | None, structural: frozenset[str]) -> None:
        """``pattern`` is ``path`` with ``[*]`` for indexes, or None where nothing below can be structural."""
        if isinstance(node, dict):
            for key in list(node):
                child = _child(path, key)
                if not self._inert(key):
                    self._add_key(node, key, path, child)
                self._cover_value(node, key, child, pattern and _child(pattern, key), structural)
        elif isinstance(node, list):
            below = pattern and f"{pattern}[*]"
            for i in range(len(node)):
                self._cover_value(node, i, f"{path}[{i}]", below, structural)

    def _cover_value(self, node: Any, key: Any, path: str, pattern: str | None, structural: frozenset[str]) -> None:
        value = node[key]
        if not isinstance(value, str):
            self._cover(value, path, pattern, structural)
        elif not ((id(node), key) in self._covered or (pattern in structural and _token(value)) or self._inert(value)):
            self.add(node, key, path, "field")

    def _add_key(self, obj: dict, key: str, parent: str, path: str) -> None:
        if key:
            self.add_key(key, path, lambda new: _rename_key(obj, key, new, parent))

    def add_key(self, key: str, path: str, rename: Callable[[str], str]) -> None:
        """A ``key`` slot for the name at ``path``: masking it calls ``rename(new)`` on render, which renames it in
        the document and returns the path it then has."""
        renames = self._renames  # not ``self``: a slot does not keep its payload alive (no cycle for the collector)
        self.slots.append(TextSlot(f"{path}<key>", key, lambda new: renames.append(_Rename(path, lambda: rename(new))),
                                   "key"))

    def _apply_renames(self) -> None:
        while self._renames:
            rename = self._renames.pop(0)
            rename.new_path = rename.apply()
            self._renamed.append(rename)


def everything(document: Any) -> Payload:
    """Every string value of ``document``: for bodies an adapter does not know the shape of."""
    payload = Payload(document)
    payload.add_root()
    payload.walk(document, "$")
    return payload


def _has(container: Any, key: Any) -> bool:
    if isinstance(container, dict):
        return key in container
    return isinstance(container, list) and isinstance(key, int) and 0 <= key < len(container)


def _plain(key: str) -> bool:
    return key.isidentifier()


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
    return StreamSlot(channel, value, _setter(container, key), json_fragment)


@dataclass
class StreamEvent:
    """What one SSE event carries: deltas of running texts, and the channels it ends. Every other string
    of the event is a whole value (it arrives whole in this event): the stream rewriter scans those itself."""

    deltas: list[StreamSlot] = field(default_factory=list)
    closes: list[tuple] = field(default_factory=list)  # channel prefixes to flush before this event goes out


def structural(paths: str) -> frozenset[str]:
    """An adapter's structural fields, one path a line (``[*]``: any index): in a request, their values are not
    analysed while they hold a token (no whitespace, no ``@``, a letter). Listed in the README's masking section."""
    return frozenset(line.strip() for line in paths.splitlines() if line.strip())


class Adapter:
    """One API's payloads: by default every string value (generic JSON). A provider adapter names its
    ``path_suffix`` and its ``structural`` request fields (ids, enums, the model), and picks the conversation
    text of its requests (``conversation``), responses and stream events."""

    name = "json"
    path_suffix = ""  # the request paths the adapter reads end so ("": every path)
    structural: frozenset[str] = frozenset()

    def matches(self, path: str) -> bool:
        return path.endswith(self.path_suffix)

    def request(self, document: Any) -> Payload:
        """The request's text slots: a JSON object's conversation text (``conversation``); anything else whole."""
        return self.conversation(document) if isinstance(document, dict) else everything(document)

    def conversation(self, document: dict) -> Payload:
        """The conversation text of a request that is a JSON object (here: every string value)."""
        return everything(document)

    def response(self, document: Any) -> Payload:
        return everything(document)

    def stream(self, event: Any) -> StreamEvent:
        """No running texts: every string of the event is a whole value."""
        return StreamEvent()
