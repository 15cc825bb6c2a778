"""The store's unit: an ``Event``, its columns, and its place in the hash chain.

The canonical form of an event is a JSON array of every column but ``hash``, in ``COLUMNS`` order
(bytes as base64, the timestamp as ISO 8601 UTC). Each event carries ``prev_hash`` and ``hash``, in
one of two chain forms, named by the event itself (``chain_format`` in its record, so inside what
is hashed):

- form 2 (written now): ``hash = sha256(prev ‖ sha256(canonical))``, over the raw 32-byte digests.
  One event can then be proven up to a signed head with only the digests of the events after it
  (``addons.store.proofs``), and an event's content could be removed leaving its digest behind.
- form 1 (stores written before form 2, no ``chain_format``): ``hash = sha256(prev_hex "\n"
  canonical)``. Such events still verify; a chain never goes back from form 2 to form 1.

Changing, removing or reordering any event breaks the chain; the first event is seq 0 after
``GENESIS``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
CHAIN_FORMAT = 2  # the form new events are sealed in (see the module docstring)
CHAIN_FORMATS = (1, 2)
KINDS = ("request", "response", "error", "checkpoint", "journal_repair", "connection", "websocket", "startup",
         "approval", "config", "access", "purge", "hold", "keys")
# approval: a step of an approval, grant or access revocation (``fate`` names it); access: a read of the record
# through the admin API (who, what, when); purge: retention removed old events' content (tombstones); hold: an
# incident hold placed or lifted; keys: a signing, originals or hash key rotated.

# (column, DuckDB type). The order is part of the chain format: append only, never reorder.
# Few columns on purpose: DuckDB's commit cost grows with the column count. What is searched
# often is a column; everything else lives in ``record``, a JSON object (``record->>'path'``).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq", "BIGINT NOT NULL"),
    ("ts", "TIMESTAMP NOT NULL"),
    ("kind", "VARCHAR NOT NULL"),
    ("flow_id", "VARCHAR"),
    ("user", "VARCHAR"),
    ("host", "VARCHAR"),
    ("status", "INTEGER"),
    ("fate", "VARCHAR"),
    ("decision", "VARCHAR"),
    ("record", "JSON"),
    ("body", "BLOB"),
    ("original_enc", "BLOB"),
    ("prev_hash", "VARCHAR NOT NULL"),
    ("hash", "VARCHAR NOT NULL"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
RECORD_FIELDS = (
    "client", "mode", "method", "scheme", "port", "path", "http_version", "rule", "reason", "upstream", "model",
    "headers", "body_size", "body_truncated", "tokens_in", "tokens_out", "latency_upstream_ms", "latency_total_ms",
    "detail", "entities", "chain_format", "tombstone",
)


def utcnow() -> datetime:
    """Naive UTC with microseconds: what a DuckDB TIMESTAMP holds exactly."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Event:
    """One appended fact about a flow (or the chain itself). ``seq``/``prev_hash``/``hash`` are set on commit."""

    kind: str
    flow_id: str | None = None
    ts: datetime = dataclasses.field(default_factory=utcnow)
    user: str | None = None
    client: str | None = None
    mode: str | None = None
    method: str | None = None
    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None
    http_version: str | None = None
    status: int | None = None
    fate: str | None = None
    decision: str | None = None
    rule: str | None = None
    reason: str | None = None
    upstream: str | None = None
    model: str | None = None
    headers: list[list[str]] | None = None
    body: bytes | None = None
    body_size: int | None = None
    body_truncated: bool | None = None
    original_enc: bytes | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_upstream_ms: float | None = None
    latency_total_ms: float | None = None
    detail: dict[str, Any] | None = None
    entities: dict[str, int] | None = None  # masked entities by type (warden flows --entity)
    chain_format: int | None = None  # the hash form (None: form 1, from before the field existed)
    tombstone: dict[str, Any] | None = None  # content removed by a purge: {digest, purge_seq} (addons.store.tombstones)
    seq: int = -1
    prev_hash: str = ""
    hash: str = ""
    # The stored ``record`` text when read back, so verification hashes exactly what is stored.
    stored_record: str | None = dataclasses.field(default=None, repr=False, compare=False)

    def record(self) -> str:
        if self.stored_record is not None:
            return self.stored_record
        values = {name: getattr(self, name) for name in RECORD_FIELDS if getattr(self, name) is not None}
        return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def row(self) -> tuple:
        values = {name: getattr(self, name) for name in COLUMN_NAMES if name != "record"}
        values["record"] = self.record()
        return tuple(values[name] for name in COLUMN_NAMES)

    @classmethod
    def from_row(cls, row: tuple | list) -> Event:
        values = dict(zip(COLUMN_NAMES, row, strict=True))
        record = values.pop("record")
        fields = {k: v for k, v in (json.loads(record) if record else {}).items() if k in RECORD_FIELDS}
        for name in ("body", "original_enc"):
            if values[name] is not None:
                values[name] = bytes(values[name])
        return cls(**values, **fields, stored_record=record)


def event_to_json(event: Event) -> dict[str, Any]:
    """An event as its stored row, JSON-safe (bytes as base64): the journal's and the admin API's format."""
    out: dict[str, Any] = {}
    for name, value in zip(COLUMN_NAMES, event.row(), strict=True):
        if isinstance(value, (bytes, bytearray)):
            value = base64.b64encode(bytes(value)).decode()
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[name] = value
    return out


def event_from_json(data: dict[str, Any]) -> Event:
    row = []
    for name in COLUMN_NAMES:
        value = data[name]
        if name in ("body", "original_enc") and value is not None:
            value = base64.b64decode(value)
        elif name == "ts":
            value = datetime.fromisoformat(value)
        row.append(value)
    return Event.from_row(row)


_HASH = COLUMN_NAMES.index("hash")
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode


def canonical_row(row: tuple) -> bytes:
    """The exact bytes hashed for a stored row: a JSON array of every column in ``COLUMNS`` order but ``hash``, as
    ``json.dumps`` (compact, ASCII) writes it, bytes as ``{"b64": ...}`` and times as ISO 8601. Base64 and ISO text
    need no escaping, so they are written as they are: verification hashes every event, and the JSON encoder need
    not scan kilobytes of base64. Verification hashes rows as read, without building an ``Event``."""
    parts = []
    for value in row[:_HASH] + row[_HASH + 1:]:
        if value is None:
            parts.append(b"null")
        elif isinstance(value, str):
            parts.append(_ENCODE(value).encode())
        elif isinstance(value, (bytes, bytearray, memoryview)):
            parts.append(b'{"b64":"' + base64.b64encode(value) + b'"}')
        elif isinstance(value, datetime):
            parts.append(b'"' + value.isoformat().encode() + b'"')
        else:
            parts.append(_ENCODE(value).encode())
    return b"[" + b",".join(parts) + b"]"


def _sql_value(name: str, sql_type: str) -> str:
    """One column as ``canonical_row`` writes it, in DuckDB SQL (see ``CANONICAL_SQL``)."""
    column = f'"{name}"'
    if sql_type.startswith(("BIGINT", "INTEGER")):
        return f"coalesce(CAST({column} AS VARCHAR), 'null')"
    if sql_type.startswith("TIMESTAMP"):
        return (f"""'"' || strftime({column}, '%Y-%m-%dT%H:%M:%S') || CASE WHEN epoch_us({column}) % 1000000 = 0 """
                f"""THEN '' ELSE '.' || lpad(CAST(epoch_us({column}) % 1000000 AS VARCHAR), 6, '0') END || '"'""")
    if sql_type.startswith("BLOB"):
        return f"""CASE WHEN {column} IS NULL THEN 'null' ELSE '{{"b64":"' || to_base64({column}) || '"}}' END"""
    # VARCHAR and JSON: as a JSON string with only the backslash and the quote escaped, which is what
    # ``json.dumps`` writes for printable ASCII; other text comes out otherwise and is hashed by canonical_row.
    return (f"""CASE WHEN {column} IS NULL THEN 'null' ELSE '"' || replace(replace({column}, '\\', '\\\\'), """
            f"""'"', '\\"') || '"' END""")


CANONICAL_SQL = "encode('[' || " + " || ',' || ".join(
    _sql_value(name, sql_type) for name, sql_type in COLUMNS if name != "hash") + " || ']')"
"""A row's canonical form computed by DuckDB (a BLOB), for verifying millions of rows without building each in
Python: the same bytes as ``canonical_row`` for every row whose text is printable ASCII, other bytes otherwise.
Its encoding is unambiguous (strings quoted with their quotes and backslashes escaped, base64 in objects,
numbers and null bare), so when these bytes hash to the hash a row carries they are the bytes that were sealed,
and the row is as sealed. A row whose bytes do not match must be hashed again by ``canonical_row``, the
reference, before it is called changed (``addons.store.chainwalk``)."""


def canonical(event: Event) -> bytes:
    """The exact bytes hashed for ``event``: every column but ``hash``, in column order."""
    return canonical_row(event.row())


def event_digest(event: Event) -> str:
    """``sha256(canonical(event))``, hex: what a form-2 link and an inclusion proof carry for an event."""
    return hashlib.sha256(canonical(event)).hexdigest()


def stored_digest(event: Event) -> str:
    """The digest an event links with: its own, or the one its tombstone keeps of the content a purge removed."""
    return event.tombstone["digest"] if event.tombstone is not None else event_digest(event)


def link(prev_hash: str, digest: str) -> str:
    """A form-2 chain link: ``sha256(prev ‖ digest)`` over the raw bytes. Raises ValueError on non-hex input."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + bytes.fromhex(digest)).hexdigest()


def chain_hash(prev_hash: str, event: Event, body: bytes | None = None) -> str:
    """The hash ``event`` must carry after ``prev_hash``, in the form the event names; ValueError if unknown.
    ``body``: ``canonical(event)`` when the caller has it already."""
    return form_hash(prev_hash, event.chain_format, canonical(event) if body is None else body)


def form_hash(prev_hash: str, chain_format: int | None, body: bytes) -> str:
    """The hash of the canonical form ``body`` after ``prev_hash``, in chain form ``chain_format`` (None: 1);
    ValueError if the form is unknown or a hash is not hex."""
    form = chain_format or 1
    if form == 2:
        return link(prev_hash, hashlib.sha256(body).hexdigest())
    if form == 1:
        return hashlib.sha256(prev_hash.encode() + b"\n" + body).hexdigest()
    raise ValueError(f"unknown chain format {form!r}")


def journal_line(event: Event, body: bytes | None = None) -> bytes:
    """The journal line of a sealed event: its canonical form (``body``, if the caller has it), hash appended."""
    return (canonical(event) if body is None else body)[:-1] + b',"' + event.hash.encode() + b'"]\n'


def seal(event: Event, seq: int, prev_hash: str, chain_format: int = CHAIN_FORMAT) -> bytes:
    """Place ``event`` in the chain (seq, prev_hash, hash; its record frozen) and return its journal line.

    ``chain_format=1`` writes the old form; only tests use it, to build stores as older versions wrote them."""
    event.seq, event.prev_hash = seq, prev_hash
    event.chain_format = chain_format if chain_format != 1 else None
    event.stored_record = None
    event.stored_record = event.record()
    body = canonical(event)  # the hash excludes itself: the same bytes serve the hash and the journal line
    event.hash = chain_hash(prev_hash, event, body)
    return journal_line(event, body)


def unseal(line: bytes) -> Event:
    """The event a journal line holds (the inverse of ``seal``)."""
    values = json.loads(line)
    if not isinstance(values, list) or len(values) != len(COLUMN_NAMES):
        raise ValueError("not a journal line")
    row = []
    for name, value in zip(COLUMN_NAMES, values, strict=True):
        if isinstance(value, dict):
            value = base64.b64decode(value["b64"])
        elif name == "ts":
            value = datetime.fromisoformat(value)
        row.append(value)
    return Event.from_row(row)


def checkpoint_message(head_seq: int, head_hash: str) -> bytes:
    """What a checkpoint signs: the chain head it vouches for."""
    return f"warden-checkpoint|{head_seq}|{head_hash}".encode()
