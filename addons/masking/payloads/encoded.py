"""Documents carried inside a string value: data URIs (``data:text/plain;base64,...``, RFC 2397) and base64 with a
declared media type (Anthropic's ``source: {type: base64, media_type, data}``).

What the analyzer can read is decoded: text media types in their charset, and any other content whose bytes are
UTF-8 text (text labelled ``image/png`` is still text). A masked value is encoded back in the same form. The rest
is binary, which no analyzer reads: the caller decides by ``masking.unknown_content`` and says it was not
inspected. A value that claims base64 but does not decode is not inspected either (an upstream may decode it
leniently; the gateway does not guess).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

TEXT_TYPES = frozenset({
    "application/json", "application/xml", "application/x-ndjson", "application/jsonl", "application/x-jsonlines",
    "application/x-www-form-urlencoded", "application/javascript", "application/ecmascript", "application/yaml",
    "application/x-yaml", "application/toml", "application/sql", "application/graphql", "application/csv",
    "application/x-sh", "application/rtf",
})
_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # bytes text never holds (tab, newlines aside)
_URI_SAFE = "/:;=,@!$&'()*+~"  # kept as they are when a data URI that was not base64 is written back


@dataclass(frozen=True)
class Encoded:
    """A decoded value: its media type, its text (None: binary, or it does not decode) and how to write a new text
    back in the value's form."""

    media_type: str
    text: str | None
    encode: Callable[[str], str]
    problem: str = ""  # why ``text`` is None, for the record


def is_data_uri(value: str) -> bool:
    return value[:5].lower() == "data:" and "," in value


def textual(media_type: str) -> bool:
    return (media_type.startswith("text/") or media_type in TEXT_TYPES or media_type.endswith(("+json", "+xml")))


def utf8_text(raw: bytes) -> str | None:
    """``raw`` as text if it is UTF-8 holding no control character text never holds (tab, newlines aside), else
    None: bytes no label calls text are read as text when they are text."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _CONTROL.search(text) else text


def _decode_text(raw: bytes, media_type: str, charset: str | None) -> tuple[str | None, str]:
    """The text in ``raw`` and the codec it was read with, or (None, why not)."""
    if textual(media_type):
        try:
            codec = codecs.lookup(charset or "utf-8").name
            return raw.decode(codec), codec
        except (LookupError, UnicodeDecodeError) as e:
            return None, f"declared {media_type} but does not decode ({type(e).__name__})"
    text = utf8_text(raw)
    return (None, "binary") if text is None else (text, "utf-8")


def _b64decode(data: str) -> bytes | None:
    data = _WHITESPACE.sub("", data)
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def base64_value(data: str, media_type: str) -> Encoded:
    """``data`` (base64 of a ``media_type`` document) decoded."""
    media_type = media_type.strip().lower()
    raw = _b64decode(data)
    if raw is None:
        return Encoded(media_type, None, lambda new: new, "does not decode as base64")
    text, codec = _decode_text(raw, media_type, None)
    if text is None:
        return Encoded(media_type, None, lambda new: new, codec)
    return Encoded(media_type, text, lambda new: base64.b64encode(new.encode(codec)).decode("ascii"))


def data_uri(value: str) -> Encoded:
    """``value``, a data URI (see ``is_data_uri``), decoded."""
    head, _, data = value[5:].partition(",")
    params = [p.strip() for p in head.split(";")]
    is_base64 = len(params) > 1 and params[-1].lower() == "base64"
    if is_base64:
        params.pop()
    media_type = params[0].lower() or "text/plain"
    pairs = (p.partition("=") for p in params[1:])
    charset = next((v.strip('"') for k, _, v in pairs if k.strip().lower() == "charset"), None)
    prefix = value[:len(value) - len(data)]
    raw = _b64decode(data) if is_base64 else unquote_to_bytes(data)
    if raw is None:
        return Encoded(media_type, None, lambda new: new, "does not decode as base64")
    text, codec = _decode_text(raw, media_type, charset)
    if text is None:
        return Encoded(media_type, None, lambda new: new, codec)

    def encode(new: str) -> str:
        raw_new = new.encode(codec)
        return prefix + (base64.b64encode(raw_new).decode("ascii") if is_base64 else quote(raw_new, safe=_URI_SAFE))

    return Encoded(media_type, text, encode)
