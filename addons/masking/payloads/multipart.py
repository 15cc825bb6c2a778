"""``multipart/form-data`` (OpenAI Files and Batch uploads, audio transcription, any form with files).

Parsed with werkzeug's multipart decoder (mitmproxy's own drops the parts' headers and line ends). Every part's
name and file name are analysed (a masked name or file name is written back in its Content-Disposition), and its
content by what it declares or, undeclared, what it is: JSON Lines (``application/jsonl``, ``.jsonl``) line by line
(``jsonl.py``: Batch lines by the adapter of their ``url``), JSON walked as a JSON body, text (``text/*``, a field
without a type, undeclared content that reads as UTF-8) whole; anything else is binary and listed in
``uninspected`` (``masking.unknown_content`` decides). The body is rendered again with the same boundary, the
parts in order with the headers they came with, CRLF line ends; a preamble and an epilogue (which servers ignore)
are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import quote

from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder

from addons.bodies.jsonlimits import parse_json
from addons.flow.errors import MalformedBody
from addons.masking.payloads import generic_json, jsonl, text
from addons.masking.payloads.base import Adapter, Payload, TextSlot, Uninspected

MAX_PARTS = 1000
TEXT_EXTENSIONS = (".txt", ".md", ".csv", ".tsv", ".html", ".htm", ".xml", ".yaml", ".yml", ".log", ".srt", ".vtt")
_PLAIN_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


@dataclass
class Part:
    """One part of the form: its name, file name (None for a plain field), headers as received, and content."""

    name: str
    filename: str | None
    headers: list[tuple[str, str]]
    data: bytes = b""
    render: Callable[[], bytes] | None = None  # the content again, from what was analysed (None: as received)
    renamed: bool = False  # its name or file name was masked: its Content-Disposition is written again


def boundary(content_type: str) -> str:
    found = parse_options_header(content_type)[1].get("boundary")
    if not found or len(found) > 70:
        raise MalformedBody("the multipart body's Content-Type names no boundary (or one over 70 characters); "
                            "it cannot be inspected for PII")
    return found


def _parts(body: bytes, separator: str) -> list[Part]:
    decoder = MultipartDecoder(separator.encode("latin-1"), max_parts=MAX_PARTS)
    decoder.receive_data(body)
    decoder.receive_data(None)
    parts: list[Part] = []
    try:
        while not isinstance(event := decoder.next_event(), Epilogue):
            if isinstance(event, (Field, File)):
                parts.append(Part(event.name or "", event.filename if isinstance(event, File) else None,
                                  list(event.headers.items())))
            elif isinstance(event, Data) and parts:
                parts[-1].data += event.data
    except RequestEntityTooLarge:
        raise MalformedBody(f"the multipart body has more than {MAX_PARTS} parts; this gateway reads at most that "
                            "many") from None
    except (ValueError, UnicodeDecodeError) as e:  # a part without Content-Disposition, no closing boundary, ...
        raise MalformedBody(f"the multipart body does not parse ({e}); it cannot be inspected for PII") from None
    return parts


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ") + '"'


def _disposition(part: Part) -> str:
    value = f"form-data; name={_quoted(part.name)}"
    if part.filename is not None:
        value += f"; filename={_quoted(part.filename)}"
        if not part.filename.isascii():  # RFC 5987 beside the plain one, as browsers write it
            value += f"; filename*=UTF-8''{quote(part.filename, safe='')}"
    return value


def render(separator: str, parts: list[Part]) -> bytes:
    out = bytearray()
    for part in parts:
        out += f"--{separator}\r\n".encode("latin-1")
        for name, value in part.headers:
            if part.renamed and name.lower() == "content-disposition":
                value = _disposition(part)
            out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + (part.render() if part.render is not None else part.data) + b"\r\n"
    out += f"--{separator}--\r\n".encode("latin-1")
    return bytes(out)


def _media_type(part: Part) -> str:
    return Headers(part.headers).get("content-type", "").split(";", 1)[0].strip().lower()


def _reads_as_text(data: bytes) -> bool:
    try:
        return not _CONTROL.search(data.decode("utf-8"))
    except UnicodeDecodeError:
        return False


def _kind(part: Part) -> str:
    """``jsonl``, ``json``, ``text`` or ``binary``: by the declared type or file name, else by the content."""
    mime = _media_type(part)
    suffix = PurePosixPath(part.filename or "").suffix.lower()
    if mime in jsonl.MEDIA_TYPES or (suffix in jsonl.EXTENSIONS and mime in ("", "application/octet-stream")):
        return "jsonl"
    if mime == "application/json" or mime.endswith("+json"):
        return "json"
    if mime.startswith("text/") or (part.filename is None and not mime) or suffix in TEXT_EXTENSIONS:
        return "text"
    if mime in ("", "application/octet-stream") and _reads_as_text(part.data):
        return "text"
    return "binary"


def _add_name(payload: Payload, part: Part, path: str) -> None:
    if part.name:
        def rename(new: str) -> str:
            part.name, part.renamed = new, True
            return path

        payload.add_key(part.name, path, rename)
    if part.filename:
        def write(new: str) -> None:
            part.filename, part.renamed = new, True

        payload.slots.append(TextSlot(f"{path}<filename>", part.filename, write, "field"))


def _add_content(payload: Payload, part: Part, path: str, adapter_for: Callable[[str], Adapter],
                 inert: Callable[[str], bool]) -> None:
    kind = _kind(part)
    if kind == "binary":
        payload.uninspected.append(Uninspected(path, _media_type(part) or "unknown", "binary"))
    elif kind == "jsonl":
        lines = jsonl.parse(part.data, adapter_for, what=f"part {path}", inert=inert)
        payload.embed(lines, f"{path}<jsonl>")
        part.render = lines.render
    elif kind == "json":
        try:
            document = parse_json(part.data)
        except MalformedBody as e:
            raise type(e)(f"the JSON part {path}: {e.message}") from None
        inner = generic_json.ADAPTER.request(document)
        inner.cover(frozenset(), inert)
        payload.embed(inner, f"{path}<json>$")
        part.render = inner.render
    elif part.data:
        content_type = Headers(part.headers).get("content-type", "")
        try:
            inner = text.parse(part.data, content_type if content_type.lower().startswith("text/") else "")
        except MalformedBody as e:
            raise type(e)(f"the text part {path}: {e.message}") from None
        payload.embed(inner, path)
        part.render = inner.render


def parse(body: bytes, content_type: str, adapter_for: Callable[[str], Adapter],
          inert: Callable[[str], bool] = lambda _: False) -> Payload:
    """The form's slots: part ``multipart[N]`` (``.name`` beside it when the name is a plain word) by its content,
    ``<key>`` its name, ``<filename>`` its file name. ``MalformedBody`` if it does not parse, naming the part
    whose content does not read as it declares."""
    separator = boundary(content_type)
    parts = _parts(body, separator)
    payload = Payload(parts, serialise=lambda document: render(separator, document))
    for i, part in enumerate(parts):
        path = f"multipart[{i}]" + (f".{part.name}" if _PLAIN_NAME.fullmatch(part.name) and inert(part.name) else "")
        _add_name(payload, part, path)
        _add_content(payload, part, path, adapter_for, inert)
    return payload
