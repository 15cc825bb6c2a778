"""Which strings of a server-sent event are scanned, and the smallest event that carries one delta.

Every string of an event is a value that may carry PII, except structural ones: a value under one
of ``STRUCTURAL_KEYS`` that holds no whitespace and no ``@`` (an id, an enum, a model name, an
opaque signature) stays as the upstream sent it. A key is scanned when it could hold an entity
(``key_may_hold``: digits, ``@``, ``.``, ``:``, ``/``, ``<`` or whitespace in it); field names
are left alone. The deltas an adapter reads are marked in the event with a ``Hole`` each, so one
walk in document order (``rebuild``) finds the deltas and the whole values, and gives the event back
with new texts. ``alone`` cuts an event down to one delta and what locates it (a flush event).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from addons.masking.payloads import StreamSlot

# Values under these keys are structure (ids, enums, names of models, opaque blobs), never text.
STRUCTURAL_KEYS = frozenset({
    "id", "object", "type", "role", "model", "created", "created_at", "finish_reason", "stop_reason", "status",
    "system_fingerprint", "service_tier", "item_id", "call_id", "tool_call_id", "response_id",
    "previous_response_id", "tool_choice", "truncation", "signature", "encrypted_content", "event", "retry",
})
_TOKEN = re.compile(r"[^\s@]*")  # one word without @: an identifier or an enum, never a sentence or an address
_KEY_MAY_HOLD = re.compile(r"[\d@.:/<\s]")  # a key without these is a field name (no pattern entity fits in it)
_ROOT_LOCATORS = frozenset({"id", "object", "created", "model", "type", "index", "item_id"})  # and "*_index"
_LOCATORS = frozenset({"type", "index"})  # inside the event: never a tool call's id or name (clients join those)
SSE_FIELDS = ("", "event", "id", "retry", "data")  # comments and the fields of the SSE spec; others are dropped

Text = Callable[[Any], Any]


@dataclass(eq=False)
class Hole:
    """Where an adapter's delta sits in an event while the event is rewritten."""

    slot: StreamSlot


def structural(key: Any, value: str) -> bool:
    """A value kept as sent: under a structural key, and one word without ``@``."""
    return key in STRUCTURAL_KEYS and _TOKEN.fullmatch(value) is not None


def key_may_hold(key: str) -> bool:
    return _KEY_MAY_HOLD.search(key) is not None


def _scanned(node: Any, key: Any) -> bool:
    return isinstance(node, Hole) or (isinstance(node, str) and node != "" and not structural(key, node))


def rebuild(node: Any, text: Text, key: Any = None) -> Any:
    """A copy of ``node`` in which ``text`` gives each hole, each string value that is not structural and
    each key that may hold an entity, in document order (the same order for the same ``node``)."""
    if _scanned(node, key):
        return text(node)
    if isinstance(node, list):
        return [rebuild(item, text, key) for item in node]
    if isinstance(node, dict):
        out: dict = {}
        for name, value in node.items():
            new = text(name) if key_may_hold(name) else name
            while new in out:  # two keys masked alike: both kept
                new = f"{new}_"
            out[new] = rebuild(value, text, name)
        return out
    return node


def rebuild_fields(fields: list[tuple[str, str]], text: Text) -> list[tuple[str, str]]:
    """An event's SSE fields: comments and non-structural values through ``text``; fields the spec
    does not define are dropped (clients ignore them)."""
    return [(name, text(value) if _scanned(value, name or None) else value)
            for name, value in fields if name in SSE_FIELDS]


def alone(node: Any, hole: Hole, text: str, root: bool = True) -> Any:
    """The smallest copy of ``node`` that carries ``hole`` (as ``text``) and the structural scalars that
    locate it (the stream's id and model at the top, ``type`` and indexes on the way), or ``None``."""
    if node is hole:
        return text
    if isinstance(node, list):
        for item in node:
            found = alone(item, hole, text, root=False)
            if found is not None:
                return [found]
    elif isinstance(node, dict):
        for name, value in node.items():
            found = alone(value, hole, text, root=False)
            if found is not None:
                kept = {k: v for k, v in node.items() if _locator(k, v, root)}
                kept[name] = found
                return kept
    return None


def _locator(key: str, value: Any, root: bool) -> bool:
    if not (key in _LOCATORS or (root and (key in _ROOT_LOCATORS or key.endswith("_index")))):
        return False
    if isinstance(value, str):
        return structural(key, value)
    return value is None or isinstance(value, int | float | bool)
