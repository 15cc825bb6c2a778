"""``multipart/form-data`` (OpenAI Files and Batch uploads, audio transcription, any form with files).

Parsed with werkzeug's multipart decoder (mitmproxy's own drops the parts' headers and line ends). Every part's
name and file name are analysed, and its content by what it declares or, undeclared, what it is: JSON Lines
(``application/jsonl``, ``.jsonl``) line by line (``jsonl.py``: Batch lines by the adapter of their ``url``), JSON
walked as a JSON body, text (``text/*``, a field without a type, undeclared content that reads as UTF-8) whole;
anything else is binary and listed in ``uninspected`` (``masking.unknown_content`` decides).

A part's headers leave only as what was read from them: its Content-Disposition is written again from its name
and file name (every other parameter dropped), its Content-Type keeps the media type and a known charset, and every
other header is dropped (folded or not). What cannot be read one way is refused (``MalformedBody``, naming the
part, never its values): a parameter named twice, a plain and an extended (``filename*``) form that disagree, a
header that is there twice, a ``Content-Transfer-Encoding`` other than the identity (RFC 7578 deprecates it; the
encoded text is never analysed as if it were plain). The body is rendered again with the same boundary, the parts
in order, CRLF line ends; a preamble and an epilogue (which servers ignore) are dropped.
"""

from __future__ import annotations

import codecs
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
_TOKEN = r"[\w!#$%&'*+\-.^`|~]+"  # RFC 9110's token, as werkzeug reads parameter keys and bare values
_PARAMETER = re.compile(rf'[ \t]*({_TOKEN})=({_TOKEN}|"(?:\\.|[^"\\])*")[ \t]*(?:;|$)', re.ASCII)
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}", re.ASCII)
_READ_PARAMETERS = ("name", "filename")  # the Content-Disposition parameters a part is read by
_IDENTITY_ENCODINGS = ("", "7bit", "8bit", "binary")


@dataclass
class Part:
    """One part of the form: its name, file name (None for a plain field), the Content-Type it leaves with (media
    type and charset; "" if it declared none), and content."""

    name: str
    filename: str | None
    content_type: str
    data: bytes = b""
    render: Callable[[], bytes] | None = None  # the content again, from what was analysed (None: as received)


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
                                  _read_headers(event.headers, f"multipart[{len(parts)}]")))
            elif isinstance(event, Data) and parts:
                parts[-1].data += event.data
    except RequestEntityTooLarge:
        raise MalformedBody(f"the multipart body has more than {MAX_PARTS} parts; this gateway reads at most that "
                            "many") from None
    except (ValueError, UnicodeDecodeError) as e:  # a part without Content-Disposition, no closing boundary, ...
        raise MalformedBody(f"the multipart body does not parse ({e}); it cannot be inspected for PII") from None
    return parts


def _refused(path: str, problem: str) -> MalformedBody:
    return MalformedBody(f"the multipart part {path} {problem}; it cannot be read one way only, so it is not "
                         "forwarded")


def _parameters(value: str, path: str) -> list[tuple[str, str]]:
    """The parameters of a header value as written (keys lower-cased, values raw), in order."""
    rest, found, at = value.partition(";")[2], [], 0
    while rest[at:].strip(" \t"):
        match = _PARAMETER.match(rest, at)
        if match is None:
            raise _refused(path, "has a Content-Disposition whose parameters do not parse")
        found.append((match[1].lower(), match[2]))
        at = match.end()
    return found


def _check_disposition(value: str, path: str) -> None:
    """Refuses a disposition whose name or file name reads two ways: a parameter twice, or a plain and an extended
    (RFC 2231 ``filename*``) form that disagree. The rest of its parameters are dropped when it is written again."""
    parameters = _parameters(value, path)
    for key in _READ_PARAMETERS:
        plain = [(k, v) for k, v in parameters if k == key]
        extended = [(k, v) for k, v in parameters if k.startswith(key + "*")]
        keys = [k for k, _ in plain + extended]
        if len(keys) != len(set(keys)):
            raise _refused(path, f"names its {key} twice in its Content-Disposition")
        if plain and extended and _decoded(plain, key) != _decoded(extended, key):
            raise _refused(path, f"gives two different {key}s ({key} and {key}*) in its Content-Disposition")


def _decoded(parameters: list[tuple[str, str]], key: str) -> str | None:
    written = "; ".join(f"{k}={v}" for k, v in parameters)
    return parse_options_header(f"form-data; {written}")[1].get(key)


def _read_headers(headers: Headers, path: str) -> str:
    """The Content-Type the part leaves with (its media type and a known charset, or "" if it declares none), once
    its headers are found to read one way. Every other header is dropped when the part is written again."""
    for name in ("Content-Disposition", "Content-Type", "Content-Transfer-Encoding"):
        if len(headers.getlist(name)) > 1:
            raise _refused(path, f"has {name} twice")
    encoding = headers.get("content-transfer-encoding", "").strip().lower()
    if encoding not in _IDENTITY_ENCODINGS:
        raise _refused(path, "declares a Content-Transfer-Encoding (RFC 7578 deprecates it); send its bytes as "
                             "they are, without one")
    _check_disposition(headers.get("content-disposition", ""), path)
    declared = headers.get("content-type")
    if declared is None:
        return ""
    media_type, options = parse_options_header(declared)
    if not _MEDIA_TYPE.fullmatch(media_type):
        raise _refused(path, "has a Content-Type that is not a media type")
    charset = options.get("charset")
    if charset is None:
        return media_type
    try:
        codecs.lookup(charset)
    except LookupError:
        raise _refused(path, "declares a charset this gateway does not know") from None
    if not re.fullmatch(_TOKEN, charset, re.ASCII):
        raise _refused(path, "declares a charset this gateway does not know")
    return f"{media_type}; charset={charset}"


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
        out += f"--{separator}\r\nContent-Disposition: {_disposition(part)}\r\n".encode()
        if part.content_type:
            out += f"Content-Type: {part.content_type}\r\n".encode()
        out += b"\r\n" + (part.render() if part.render is not None else part.data) + b"\r\n"
    out += f"--{separator}--\r\n".encode("latin-1")
    return bytes(out)


def _media_type(part: Part) -> str:
    return part.content_type.split(";", 1)[0].lower()


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
            part.name = new
            return path

        payload.add_key(part.name, path, rename)
    if part.filename:
        def write(new: str) -> None:
            part.filename = new

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
        try:
            inner = text.parse(part.data, part.content_type if _media_type(part).startswith("text/") else "")
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
