"""Whole texts screened: a string value, a JSON document, an answer's body not streamed.

A value is searched as it stands and, where it holds JSON (tool-call arguments inside a body, a body inside a
string), as a JSON parser reads it too: every key and string in it, escapes decoded (``\\u002f`` is ``/``). A JSON
document is read with every member of an object kept (``Pairs``: an object naming a key twice has both values
searched, whichever a client reads) and numbers as written (``Number``), so a document with nothing masked is
passed as it came and one with something masked is written back in its own shape. JSON Lines are read line by
line; any other body as text (bytes that are not UTF-8 survive untouched).
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from addons.bodies.jsonlimits import MAX_JSON_DEPTH, json_depth
from addons.screening.patterns import masked
from addons.screening.screen import Blocked, Screen

MAX_NESTING = 4  # levels of JSON held in strings that are read as JSON (deeper: searched as text)
JSON_LINES = ("application/jsonl", "application/x-ndjson", "application/ndjson", "application/x-jsonlines",
              "application/jsonlines", "application/json-lines")


class Pairs(list):
    """A JSON object's members in order, a key named twice kept twice."""


class Number(str):
    """A JSON number (or NaN, Infinity) as written."""


def parse(text: str) -> Any:
    """``text`` as JSON (``Pairs`` for objects, ``Number`` for numbers), or ``None`` if it is not JSON (or nests
    deeper than ``MAX_JSON_DEPTH``). A JSON ``null`` gives ``Ellipsis``."""
    if json_depth(text) > MAX_JSON_DEPTH:
        return None
    try:
        document = json.loads(text, object_pairs_hook=Pairs, parse_float=Number, parse_int=Number,
                              parse_constant=Number)
    except (ValueError, RecursionError):
        return None
    return ... if document is None else document


def render(node: Any) -> str:
    """A document ``parse`` gave, written back as JSON."""
    if isinstance(node, Pairs):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{render(v)}" for k, v in node) + "}"
    if isinstance(node, list):
        return "[" + ",".join(render(v) for v in node) + "]"
    if isinstance(node, Number):
        return str(node)
    return json.dumps(None if node is ... else node, ensure_ascii=False)


def screen_value(value: str, screen: Screen, nesting: int = 0) -> str:
    """``value`` as the client gets it: each mask rule's matches replaced; ``screen.blocked`` set if a block rule
    matched (``value`` is then returned as it was, and must not be passed on)."""
    if nesting < MAX_NESTING and value.lstrip()[:1] in ("{", "[", '"'):
        document = parse(value)
        if document is not None:
            new = _walk(document, screen, nesting + 1)
            if screen.blocked is not None:
                return value
            if new != document:
                value = render(new)
    found = screen.patterns.scan(value, final=True)
    if not found.hits:
        return value
    text, count = masked(value, found.hits, screen.patterns.marks)
    return value if screen.hit(found.hits, count) else text


def _walk(node: Any, screen: Screen, nesting: int) -> Any:
    if screen.blocked is not None:
        return node
    if isinstance(node, Pairs):
        out = Pairs()
        for key, item in node:
            out.append((screen_value(key, screen, MAX_NESTING), _walk(item, screen, nesting)))
        return out
    if isinstance(node, list):
        return [_walk(item, screen, nesting) for item in node]
    if isinstance(node, str) and not isinstance(node, Number):
        return screen_value(node, screen, nesting)
    return node


def screen_text(body: str, content_type: str, screen: Screen) -> str:
    """A whole body that is not an event stream, as the client gets it (see ``screen_value``)."""
    if content_type.split(";", 1)[0].strip().lower() not in JSON_LINES:
        return screen_value(body, screen)
    out = []
    for line in body.splitlines(keepends=True):
        text = line.rstrip("\r\n")
        out.append(screen_value(text, screen) + line[len(text):] if text.strip() else line)
        if screen.blocked is not None:
            return body
    return "".join(out)


def _declared(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return None


def _same(a: str, b: str) -> bool:
    try:
        return codecs.lookup(a).name == codecs.lookup(b).name
    except LookupError:
        return False


def _json_media(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime in ("", "application/json", *JSON_LINES) or mime.endswith("+json")


def readings(body: bytes, content_type: str) -> list[str]:
    """The encodings a client may read ``body`` in, the one it is masked in first: for JSON, as JSON parsers detect
    it, else as declared (as detected if not); then the others of these and UTF-8 (bytes read as they stand)."""
    detected, declared = json.detect_encoding(body), _declared(content_type)
    order = [detected, declared or detected] if _json_media(content_type) else [declared or detected, detected]
    found: list[str] = []
    for encoding in [*order, "utf-8"]:
        if not any(_same(encoding, known) for known in found):
            found.append(encoding)
    return found


def decoded(body: bytes, encoding: str) -> str | None:
    """``body`` as text in ``encoding`` (in UTF-8, bytes that are not are kept as they are), None if it is not."""
    try:
        if _same(encoding, "utf-8"):
            return body.decode("utf-8", "surrogateescape")
        return body.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def _encoded(text: str, encoding: str) -> bytes:
    return text.encode("utf-8", "surrogateescape") if _same(encoding, "utf-8") else text.encode(encoding)


def screen_body(body: bytes, content_type: str, screen: Screen) -> bytes | None:
    """A whole body that is not an event stream as the client gets it (None: unchanged), in each of its
    ``readings``; ``screen.blocked`` says whether it was blocked."""
    encodings = readings(body, content_type)
    primary = encodings[0]
    text = decoded(body, primary)
    if text is None:
        primary, text = "utf-8", body.decode("utf-8", "surrogateescape")
    screened = screen_text(text, content_type, screen)
    for other in encodings[1:]:
        if screen.blocked is not None:
            return None
        reading = decoded(body, other)
        if reading is None or reading == text:
            continue
        probe = screen.probe()
        screen_text(reading, content_type, probe)
        if probe.blocked is not None or probe.masked:
            rule = probe.blocked.rule if probe.blocked is not None else next(iter(probe.masked))
            why = f"answer rule {rule!r} matched the answer read as {other} (as a client may); the answer was blocked"
            screen.blocked = Blocked(rule, why, screen.checks[rule].rule.status)
    if screen.blocked is not None or screened == text:
        return None
    return _encoded(screened, primary)
