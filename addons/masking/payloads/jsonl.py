"""JSON Lines (``application/jsonl``, ``application/x-ndjson``; ``.jsonl`` files in a form): each line a JSON document.

A line is walked as a JSON body is, deny by default: an OpenAI Batch input line (``{"custom_id", "method", "url",
"body"}``) by the adapter of its ``url`` for its ``body`` (the line's own ids and method structural), any other
line (a fine-tuning example, a record) by the generic JSON adapter. Lines are rendered back in order with their
line ends; blank lines stay as they were. A line that is not JSON, or names a key twice, refuses the body (400,
naming the line): it cannot be read one way only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from addons.bodies.jsonlimits import parse_json
from addons.flow.errors import MalformedBody
from addons.masking.payloads import generic_json
from addons.masking.payloads.base import Adapter, Payload, everything, structural

BATCH_LINE = structural("""
    $.custom_id
    $.method
    $.url
""")
MEDIA_TYPES = ("application/jsonl", "application/x-ndjson", "application/ndjson", "application/x-jsonlines",
               "application/jsonlines", "application/json-lines")
EXTENSIONS = (".jsonl", ".ndjson")


def _batch_line(document: Any) -> bool:
    return isinstance(document, dict) and isinstance(document.get("url"), str) and \
        isinstance(document.get("body"), dict)


def _line(document: Any, adapter_for: Callable[[str], Adapter], response: bool,
          inert: Callable[[str], bool]) -> tuple[list[tuple[str, Payload]], Callable[[], str]]:
    """The payloads of one line (with the path each sits at in the line) and how to render the line again."""
    if response:
        whole = everything(document)
        return [("", whole)], lambda: whole.render().decode()
    if not _batch_line(document):
        adapter = generic_json.ADAPTER
        line = adapter.request(document)
        line.cover(adapter.structural, inert)
        return [("", line)], lambda: line.render().decode()
    adapter = adapter_for(document["url"])
    body = adapter.request(document.pop("body"))
    body.cover(adapter.structural, inert)
    rest = Payload(document)
    rest.cover(BATCH_LINE, inert)

    def render() -> str:
        body.render()
        rest.document["body"] = body.document
        return rest.render().decode()

    return [("", rest), (".body", body)], render


def _as_is(line: str) -> str:
    return line


def _ended(render: Callable[[], str], ending: str) -> str:
    return render() + ending


def parse(data: bytes, adapter_for: Callable[[str], Adapter], *, what: str = "body", response: bool = False,
          inert: Callable[[str], bool] = lambda _: False) -> Payload:
    """The slots of every line of ``data`` (UTF-8 JSON Lines), under ``$[N]`` for line N+1. ``MalformedBody`` names
    the first line that does not parse, and ``what`` (the body, or a form's part)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedBody(f"the JSONL {what} is not UTF-8 ({e}); it cannot be inspected for PII") from None
    renderers: list[Callable[[], str]] = []
    payload = Payload(renderers, serialise=lambda lines: "".join(render() for render in lines).encode())
    lines = text.split("\n")  # not splitlines: a JSON string may hold U+2028 and other line breaks unescaped
    for n, raw in enumerate(lines):
        line = raw if n == len(lines) - 1 else raw + "\n"
        content = raw.removesuffix("\r")
        if not content.strip():
            if line:
                renderers.append(partial(_as_is, line))
            continue
        try:
            document = parse_json(content)
        except MalformedBody as e:
            raise type(e)(f"line {n + 1} of the JSONL {what}: {e.message}") from None
        parts, render = _line(document, adapter_for, response, inert)
        for prefix, part in parts:
            payload.embed(part, f"$[{n}]{prefix}")
        ending = line[len(content):]
        renderers.append(partial(_ended, render, ending))
    return payload
