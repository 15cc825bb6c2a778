"""Reading JSON one way only: how deep a text nests, measured without parsing it (a parser recurses, and a deep
body exhausts the stack), and the one parser of bodies that refuses what parsers read differently.

Every reader of a body (intake's check, PII masking, the recorder's usage parsing) asks ``json_depth`` first;
bodies nested deeper than ``MAX_JSON_DEPTH`` are refused by intake and never parsed by anyone. ``parse_json``
is how a body that goes on is read: an object naming a key twice is refused, since one parser keeps the first
value and another the last, and the gateway would mask one while the upstream reads the other.
"""

from __future__ import annotations

import json
import operator
import re
from itertools import accumulate, repeat
from typing import Any

from addons.flow.errors import DuplicateJsonKey, MalformedBody

MAX_JSON_DEPTH = 128  # levels of arrays and objects: deeper than any API payload, far below the parser's stack
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # +1 and -1, offset by one to stay bytes


def json_depth(data: bytes | str) -> int:
    """The deepest nesting of arrays and objects in ``data`` (strings ignored), in linear time at C speed."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    steps = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS).translate(_STEPS)
    return max(0, max(accumulate(map(operator.sub, steps, repeat(1))), default=0))


def loads_bounded(data: bytes | str | None, limit: int = MAX_JSON_DEPTH) -> object | None:
    """``json.loads`` that never raises: None for empty, invalid, or too deeply nested text."""
    if not data:
        return None
    try:
        if json_depth(data) > limit:
            return None
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError, TypeError):
        return None


_SHOWN_KEY = re.compile(r"[a-z_][a-z0-9_]{0,39}")  # a key is named in an error only if it cannot be personal data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) == len(pairs):
        return found
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            break
        seen.add(key)
    shown = f"the key {json.dumps(key)}" if _SHOWN_KEY.fullmatch(key) else "a key (not shown: it may be personal data)"
    raise DuplicateJsonKey(f"an object in the JSON body names {shown} twice; parsers disagree on which value counts, "
                           "so the gateway cannot mask the body as the upstream would read it: send each key once")


def parse_json(data: bytes | str) -> Any:
    """The JSON text ``data``, read one way only. Raises ``MalformedBody`` when it is not JSON or nests deeper than
    ``MAX_JSON_DEPTH``, ``DuplicateJsonKey`` (a ``MalformedBody``) when an object names a key twice."""
    if json_depth(data) > MAX_JSON_DEPTH:
        raise MalformedBody(f"the JSON body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep; "
                            "this gateway reads at most that many, flatten the body")
    try:
        return json.loads(data, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise MalformedBody(f"the body is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except UnicodeDecodeError as e:
        raise MalformedBody(f"the body is not valid JSON: it does not decode as UTF-8 "
                            f"({e.reason} at offset {e.start})") from None
