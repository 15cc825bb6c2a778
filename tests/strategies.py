"""Hypothesis strategies for issue 11's properties: planted values in any JSON body, any chunking of a stream.

* ``emails``, ``cards``, ``ssns``: valid values of each entity (Luhn-valid cards of the common networks, with
  or without separators; SSNs outside the never-issued areas), so a detector that validates must find them.
* ``planted_body(value)``: an API-shaped or free-form JSON document, nested arrays and objects with unicode
  keys and strings, and ``value`` inside some text at any offset, carried as a string value, a key, JSON text
  in a string (tool-call arguments), a data URI (base64 or percent-encoded), a base64 document source, or the
  whole body; the text goes to any position of the document.
* ``splits(text)``: ``text`` cut into pieces at any places (a value may be cut anywhere).

``decoded_strings`` (tests/planted.py) reads a document back the way a reader who decodes everything would.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

PATHS = ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/embeddings", "/any/api")
CHARS = st.characters(blacklist_categories=("Cs",))  # any code point JSON text can carry in UTF-8
TEXT = st.text(CHARS, max_size=24)


def _luhn_completed(digits: str) -> str:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return digits + str((10 - total % 10) % 10)


@st.composite
def cards(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(("4", "51", "52", "53", "54", "55", "6011")))
    body = draw(st.text("0123456789", min_size=15 - len(prefix), max_size=15 - len(prefix)))
    number = _luhn_completed(prefix + body)
    separator = draw(st.sampled_from(("", " ", "-")))
    return separator.join(number[i:i + 4] for i in range(0, 16, 4))


@st.composite
def ssns(draw: st.DrawFn) -> str:
    area = draw(st.integers(1, 899).filter(lambda a: a != 666))
    group, serial = draw(st.integers(1, 99)), draw(st.integers(1, 9999))
    value = f"{area:03d}-{group:02d}-{serial:04d}"
    return draw(st.just(value).filter(lambda v: len(set(v.replace("-", ""))) > 1))


emails = st.builds(
    lambda local, labels, top: f"{local}@{'.'.join(labels)}.{top}",
    st.from_regex(r"[a-z][a-z0-9]{0,9}(?:[._+-][a-z0-9]{1,6}){0,2}", fullmatch=True),
    st.lists(st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True), min_size=1, max_size=2),
    st.from_regex(r"[a-z]{2,6}", fullmatch=True),
)
VALUES = {"EMAIL_ADDRESS": emails, "CREDIT_CARD": cards(), "US_SSN": ssns()}


@st.composite
def around(draw: st.DrawFn, value: str) -> str:
    """``value`` at any offset of any text, set off by a space where it has a neighbour (glued to digits or
    letters it would be another number or another address)."""
    text = draw(TEXT)
    at = draw(st.integers(0, len(text)))
    before, after = text[:at], text[at:]
    return (before + " " if before else "") + value + (" " + after if after else "")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def _skeleton(path: str, draw: st.DrawFn) -> Any:
    """The request shape of each API the gateway has an adapter for, with arbitrary texts and extra keys."""
    text = lambda: draw(TEXT)  # noqa: E731
    if path == "/v1/chat/completions":
        document: Any = {"model": text(), "messages": [
            {"role": "user", "content": text()},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "f", "arguments": json.dumps({"q": text()})}}]},
            {"role": "user", "content": [{"type": "text", "text": text()},
                                         {"type": "image_url", "image_url": {"url": text()}}]}]}
    elif path == "/v1/messages":
        document = {"model": "claude", "system": text(), "messages": [
            {"role": "user", "content": [{"type": "text", "text": text()}, {"type": "document", "source": {
                "type": "base64", "media_type": "text/plain", "data": base64.b64encode(text().encode()).decode()}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t", "name": "f", "input": draw(json_values)}]}]}
    elif path == "/v1/responses":
        document = {"model": "gpt", "instructions": text(), "input": [
            {"role": "user", "content": [{"type": "input_text", "text": text()}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": json.dumps({"q": text()})}]}
    elif path == "/v1/embeddings":
        document = {"model": "e", "input": [text(), text()]}
    else:
        return draw(json_values)
    document.update(draw(st.dictionaries(TEXT.filter(lambda k: k not in document), json_values, max_size=3)))
    return document


def _containers(node: Any, out: list) -> list:
    """Every object and array in ``node``, in document order."""
    if isinstance(node, dict | list):
        out.append(node)
        for child in node.values() if isinstance(node, dict) else node:
            _containers(child, out)
    return out


def _carried(carrier: str, text: str) -> str:
    if carrier == "json-text":
        return json.dumps({"note": text, "n": 1})
    if carrier == "data-base64":
        return "data:text/plain;base64," + base64.b64encode(text.encode()).decode()
    if carrier == "data-percent":
        return "data:text/plain;charset=utf-8," + quote(text.encode())
    return text


@st.composite
def planted_body(draw: st.DrawFn, value: str) -> tuple[str, Any]:
    """(the request path, a JSON document that holds ``value`` once, at a position drawn from the whole document)."""
    path = draw(st.sampled_from(PATHS))
    text = draw(around(value))
    carrier = draw(st.sampled_from(("string", "key", "json-text", "data-base64", "data-percent", "body", "document")))
    if carrier == "body":
        return path, text  # a JSON body may be a bare string
    document = _skeleton(path, draw)
    if carrier == "document" and path == "/v1/messages":
        document["messages"][0]["content"][1]["source"]["data"] = base64.b64encode(text.encode()).decode()
        return path, document
    carried = _carried(carrier, text)
    if not isinstance(document, dict | list):
        document = [document]
    containers = _containers(document, [])
    into = containers[draw(st.integers(0, len(containers) - 1))]
    if isinstance(into, list):
        into.insert(draw(st.integers(0, len(into))), carried)
    elif carrier == "key":
        into[text] = draw(json_values)
    else:
        keys = list(into)
        key = draw(st.sampled_from(keys)) if keys and draw(st.booleans()) else draw(TEXT)
        into[key] = carried  # in place of a value the document had, or beside them
    return path, document


@st.composite
def splits(draw: st.DrawFn, text: str, most: int = 12) -> list[str]:
    """``text`` in pieces cut at up to ``most`` places drawn anywhere in it."""
    if len(text) < 2:
        return [text]
    cuts = sorted(draw(st.sets(st.integers(1, len(text) - 1), max_size=most)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
