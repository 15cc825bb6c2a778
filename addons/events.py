"""The store's unit: an ``Event``, its columns, and its place in the hash chain.

Each event carries ``prev_hash`` and ``hash = sha256(prev_hash || canonical(event))``, where the
canonical form is a JSON array of every column but ``hash``, in ``COLUMNS`` order (bytes as base64,
the timestamp as ISO 8601 UTC). Changing, removing or reordering any event breaks the chain.
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
KINDS = ("request", "response", "error", "checkpoint")

# (column, DuckDB type). The order is part of the chain format: append only, never reorder.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq", "BIGINT NOT NULL"),
    ("ts", "TIMESTAMP NOT NULL"),
    ("kind", "VARCHAR NOT NULL"),
    ("flow_id", "VARCHAR"),
    ("user", "VARCHAR"),
    ("client", "VARCHAR"),
    ("mode", "VARCHAR"),
    ("method", "VARCHAR"),
    ("scheme", "VARCHAR"),
    ("host", "VARCHAR"),
    ("port", "INTEGER"),
    ("path", "VARCHAR"),
    ("http_version", "VARCHAR"),
    ("status", "INTEGER"),
    ("fate", "VARCHAR"),
    ("decision", "VARCHAR"),
    ("rule", "VARCHAR"),
    ("reason", "VARCHAR"),
    ("upstream", "VARCHAR"),
    ("model", "VARCHAR"),
    ("headers", "VARCHAR"),
    ("body", "BLOB"),
    ("body_size", "BIGINT"),
    ("body_truncated", "BOOLEAN"),
    ("original_enc", "BLOB"),
    ("tokens_in", "BIGINT"),
    ("tokens_out", "BIGINT"),
    ("latency_upstream_ms", "DOUBLE"),
    ("latency_total_ms", "DOUBLE"),
    ("detail", "VARCHAR"),
    ("prev_hash", "VARCHAR NOT NULL"),
    ("hash", "VARCHAR NOT NULL"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)


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
    headers: str | None = None
    body: bytes | None = None
    body_size: int | None = None
    body_truncated: bool | None = None
    original_enc: bytes | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_upstream_ms: float | None = None
    latency_total_ms: float | None = None
    detail: str | None = None
    seq: int = -1
    prev_hash: str = ""
    hash: str = ""

    def row(self) -> tuple:
        return tuple(getattr(self, name) for name in COLUMN_NAMES)

    @classmethod
    def from_row(cls, row: tuple | list) -> Event:
        return cls(**dict(zip(COLUMN_NAMES, row, strict=True)))

    def detail_json(self) -> dict[str, Any]:
        return json.loads(self.detail) if self.detail else {}


def _canonical_value(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"b64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def canonical(event: Event) -> bytes:
    """The exact bytes hashed for ``event``: every column but ``hash``, in column order."""
    values = [_canonical_value(getattr(event, name)) for name in COLUMN_NAMES if name != "hash"]
    return json.dumps(values, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def chain_hash(prev_hash: str, event: Event) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(event)).hexdigest()


def checkpoint_message(head_seq: int, head_hash: str) -> bytes:
    """What a checkpoint signs: the chain head it vouches for."""
    return f"warden-checkpoint|{head_seq}|{head_hash}".encode()
