"""Plain text (``text/*`` other than event streams): the whole body is one text, in its declared charset."""

from __future__ import annotations

import codecs

from addons.flow.errors import MalformedBody
from addons.masking.payloads.base import Payload


def charset(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "charset" and value:
            try:
                return codecs.lookup(value.strip('"')).name
            except LookupError:
                raise MalformedBody(f"unknown charset {value!r} in Content-Type {content_type!r}") from None
    return "utf-8"


def parse(body: bytes, content_type: str) -> Payload:
    encoding = charset(content_type)
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as e:
        raise MalformedBody(f"the body does not decode as {encoding} ({e}); it cannot be inspected for PII") from None
    box = [text]
    payload = Payload(box, serialise=lambda doc: doc[0].encode(encoding, errors="strict"))
    payload.add(box, 0, "$")
    return payload
