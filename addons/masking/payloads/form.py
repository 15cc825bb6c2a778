"""``application/x-www-form-urlencoded``: every value, and every name (a masked name is renamed)."""

from __future__ import annotations

from functools import partial
from urllib.parse import parse_qsl, urlencode

from addons.flow.errors import MalformedBody
from addons.masking.payloads.base import Payload


def parse(body: bytes) -> Payload:
    try:
        pairs = [list(p) for p in parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))]
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedBody(f"the form body does not parse ({e}); it cannot be inspected for PII") from None
    payload = Payload(pairs, serialise=lambda doc: urlencode([tuple(p) for p in doc]).encode())
    for pair in pairs:
        payload.add(pair, 1, f"form.{pair[0]}")
    for pair in pairs:
        payload.add_key(pair[0], f"form.{pair[0]}", partial(_rename, pair))
    return payload


def _rename(pair: list[str], name: str) -> str:
    pair[0] = name
    return f"form.{name}"
