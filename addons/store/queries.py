"""Read-side queries over the store, shared by the admin API (in the gateway) and the CLI (on the file).

Every function takes an open DuckDB connection or cursor and returns plain data, so both paths
answer alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from addons.rules.durations import DurationError, parse_duration
from addons.store.events import CHAIN_FORMATS, COLUMN_NAMES, GENESIS, Event, chain_hash, checkpoint_message
from addons.store.keys import key_id, verify_signature

FLOW_COLUMNS = (
    "flow_id", "started", "user", "client", "mode", "method", "scheme", "host", "port", "path",
    "upstream", "decision", "rule", "model", "status", "fate", "reason", "latency_upstream_ms",
    "latency_total_ms", "tokens_in", "tokens_out", "request_bytes", "response_bytes", "entities",
    "response_entities", "answer_decision", "answer_rule",
)


@dataclass
class FlowFilter:
    """What ``warden flows`` can filter on. Times are naive UTC."""

    user: str | None = None
    host: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    decision: str | None = None
    fate: str | None = None
    entity: str | None = None  # masked in the request or the response
    limit: int = 100


_FLOWS_SQL = """
WITH last AS (
  SELECT flow_id,
         arg_max(status, seq) AS status,
         arg_max(fate, seq) AS fate,
         arg_max(record->>'reason', seq) AS reason,
         arg_max(CAST(record->>'latency_upstream_ms' AS DOUBLE), seq) AS latency_upstream_ms,
         arg_max(CAST(record->>'latency_total_ms' AS DOUBLE), seq) AS latency_total_ms,
         arg_max(CAST(record->>'tokens_in' AS BIGINT), seq) AS tokens_in,
         arg_max(CAST(record->>'tokens_out' AS BIGINT), seq) AS tokens_out,
         arg_max(CAST(record->>'body_size' AS BIGINT), seq) AS response_bytes,
         arg_max(record->'entities', seq) AS response_entities,
         arg_max(decision, seq) AS answer_decision,  -- what answer rules did to it (block, mask)
         arg_max(record->>'rule', seq) AS answer_rule
  FROM events WHERE kind IN ('response', 'error') GROUP BY flow_id
)
SELECT r.flow_id, r.ts, r.user, r.record->>'client', r.record->>'mode', r.record->>'method',
       r.record->>'scheme', r.host, CAST(r.record->>'port' AS INTEGER), r.record->>'path',
       r.record->>'upstream', r.decision, r.record->>'rule', r.record->>'model', last.status,
       coalesce(last.fate, CASE WHEN r.fate IS NOT NULL AND r.fate <> 'forwarded' THEN r.fate ELSE 'incomplete' END),
       coalesce(last.reason, r.record->>'reason'), last.latency_upstream_ms, last.latency_total_ms,
       last.tokens_in, last.tokens_out, CAST(r.record->>'body_size' AS BIGINT), last.response_bytes,
       r.record->'entities', last.response_entities, last.answer_decision, last.answer_rule
FROM events r LEFT JOIN last USING (flow_id)
WHERE r.kind = 'request' {where}
ORDER BY r.seq DESC
LIMIT ?
"""


def search_flows(con: duckdb.DuckDBPyConnection, f: FlowFilter) -> list[dict[str, Any]]:
    """One row per flow (newest first): who, where, what was decided and how it ended."""
    where: list[str] = []
    params: list[object] = []
    for column, value in (("r.user", f.user), ("r.host", f.host), ("r.decision", f.decision)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if f.entity is not None:
        where.append("((r.record->'entities'->>?) IS NOT NULL OR (last.response_entities->>?) IS NOT NULL)")
        params += [f.entity, f.entity]
    if f.fate is not None:
        where.append("coalesce(last.fate, r.fate, 'incomplete') = ?")
        params.append(f.fate)
    if f.since is not None:
        where.append("r.ts >= ?")
        params.append(f.since)
    if f.until is not None:
        where.append("r.ts < ?")
        params.append(f.until)
    sql = _FLOWS_SQL.format(where="".join(f" AND {w}" for w in where))
    rows = con.execute(sql, [*params, f.limit]).fetchall()
    out = [dict(zip(FLOW_COLUMNS, row, strict=True)) for row in rows]
    for row in out:
        for column in ("entities", "response_entities"):
            row[column] = json.loads(row[column]) if row[column] else None
    return out


def flow_events(con: duckdb.DuckDBPyConnection, flow_id: str) -> list[Event]:
    cols = ", ".join(f'"{c}"' for c in COLUMN_NAMES)
    rows = con.execute(f"SELECT {cols} FROM events WHERE flow_id = ? ORDER BY seq", [flow_id]).fetchall()
    return [Event.from_row(r) for r in rows]


def events_of_kind(con: duckdb.DuckDBPyConnection, kind: str) -> list[Event]:
    """Every event of ``kind``, in chain order (e.g. ``approval``, to rebuild the approvals from the record)."""
    cols = ", ".join(f'"{c}"' for c in COLUMN_NAMES)
    rows = con.execute(f"SELECT {cols} FROM events WHERE kind = ? ORDER BY seq", [kind]).fetchall()
    return [Event.from_row(r) for r in rows]


def iter_events(con: duckdb.DuckDBPyConnection, after_seq: int = -1, batch: int = 500) -> Iterator[Event]:
    """Every event with ``seq > after_seq`` in chain order, fetched in batches."""
    cols = ", ".join(f'"{c}"' for c in COLUMN_NAMES)
    cur = con.execute(f"SELECT {cols} FROM events WHERE seq > ? ORDER BY seq", [after_seq])
    while rows := cur.fetchmany(batch):
        for row in rows:
            yield Event.from_row(row)


@dataclass
class Verification:
    """The outcome of walking the chain from its genesis.

    ``ok``: nothing was changed, removed or reordered and every signature holds; ``problem`` names the
    first bad event otherwise. ``unsigned_tail``: events after the last head a checkpoint signed (a crash
    left them; a running gateway signs them when asked). ``heads``: every signed checkpoint, to compare
    with the copies kept outside the store (the gateway's "warden checkpoint ..." log lines).
    ``signed_late``: ranges a gateway found unsigned at start-up (its ``startup`` event names them) and
    signed only then: a crash, a repair, or an edit of the stopped store's files; not signed in the normal
    course. ``external_heads``: the outcome of comparing ``heads`` with copies kept outside (``match_heads``)."""

    ok: bool
    events: int = 0
    head_seq: int = -1
    head_hash: str = GENESIS
    checkpoints: int = 0
    signed_seq: int = -1
    unsigned_tail: int = 0
    heads: list[dict[str, Any]] = field(default_factory=list)
    signed_late: list[dict[str, Any]] = field(default_factory=list)
    external_heads: dict[str, Any] | None = None
    problem: str | None = None
    bad_seq: int | None = None
    bad_flow_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``broken``, ``no_signed_checkpoint`` (events, none signed), ``unsigned_tail`` or ``ok``: what
        ``warden verify`` exits with (1, 3, 3, 0)."""
        if not self.ok:
            return "broken"
        if self.events and not self.checkpoints:
            return "no_signed_checkpoint"
        return "unsigned_tail" if self.unsigned_tail else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, **asdict(self)}


def verify_events(events: Iterator[Event], public_key: Ed25519PublicKey | None) -> Verification:
    """Walk the chain from its genesis: contiguous sequence numbers from 0, linked and recomputed hashes in
    the form each event names (never back from form 2 to 1), and checkpoints that sign the event before
    them with ``public_key``."""
    result = Verification(ok=True)
    prev_hash, expected_seq, form = GENESIS, 0, 1
    found: list[dict[str, Any]] = []  # ranges startup events name, until a checkpoint signs them
    wanted_key = key_id(public_key) if public_key is not None else None

    def fail(event: Event, why: str) -> Verification:
        result.ok = False
        result.problem = f"event seq={event.seq} kind={event.kind} flow={event.flow_id}: {why}"
        result.bad_seq, result.bad_flow_id = event.seq, event.flow_id
        return result

    for event in events:
        if event.seq != expected_seq:
            if expected_seq == 0:
                return fail(event, "the chain does not begin at its genesis (seq=0): earlier events were removed")
            what = "missing" if event.seq > expected_seq else "out of order"
            return fail(event, f"expected seq={expected_seq}: event(s) {what}")
        if event.prev_hash != prev_hash:
            if expected_seq == 0:
                return fail(event, "the first event does not follow the genesis hash")
            return fail(event, "prev_hash does not match the previous event's hash (an event was removed or reordered)")
        event_form = event.chain_format or 1
        if event_form not in CHAIN_FORMATS or event_form < form:
            return fail(event, f"chain format {event_form} is not allowed after format {form}")
        form = event_form
        try:
            good = chain_hash(prev_hash, event) == event.hash
        except ValueError:
            good = False
        if not good:
            return fail(event, "hash does not match the event's content (the event was changed)")
        if event.kind == "checkpoint":
            why = _check_checkpoint(event, prev_hash, public_key, wanted_key)
            if why:
                return fail(event, why)
            detail = event.detail or {}
            result.heads.append({"seq": event.seq, "head_seq": detail["head_seq"], "head_hash": detail["head_hash"],
                                 "key_id": detail.get("key_id")})
            result.checkpoints += 1
            result.signed_seq, result.unsigned_tail = detail["head_seq"], 0
            result.signed_late += found
            found = []
        else:
            tail = (event.detail or {}).get("unsigned_tail") if event.kind == "startup" else None
            if tail is not None:
                why = _check_startup(event, tail, result.heads[-1]["seq"] if result.heads else -1)
                if why:
                    return fail(event, why)
                found.append({**tail, "startup_seq": event.seq})
            result.unsigned_tail += 1
        prev_hash, expected_seq = event.hash, event.seq + 1
        result.events += 1
        result.head_seq, result.head_hash = event.seq, event.hash
    if public_key is None:
        result.notes.append("no public key given: checkpoint signatures were not checked")
    return result


def _check_checkpoint(event: Event, prev_hash: str, public_key, wanted_key) -> str | None:
    """A checkpoint signs the head just before it."""
    detail = event.detail or {}
    head_seq, head_hash = detail.get("head_seq"), detail.get("head_hash")
    if head_seq != event.seq - 1 or head_hash != prev_hash:
        return f"checkpoint vouches for seq={head_seq} hash={head_hash}, not for the event before it"
    if public_key is None:
        return None
    if detail.get("key_id") != wanted_key:
        return f"checkpoint signed by key {detail.get('key_id')}, not by the given key {wanted_key}"
    if not verify_signature(public_key, checkpoint_message(head_seq, head_hash), detail.get("signature", "")):
        return "checkpoint signature is not valid"
    return None


def _check_startup(event: Event, tail: dict[str, Any], last_checkpoint_seq: int) -> str | None:
    """A startup event names (in ``tail``, its ``unsigned_tail``) exactly the events between the last checkpoint
    and itself."""
    want = {"first_seq": last_checkpoint_seq + 1, "last_seq": event.seq - 1,
            "count": event.seq - 1 - last_checkpoint_seq}
    if {k: tail.get(k) for k in want} != want:
        return (f"the startup event names unsigned events seq {tail.get('first_seq')}..{tail.get('last_seq')}, "
                f"but the chain has seq {want['first_seq']}..{want['last_seq']} there")
    return None


# The gateway's external anchor, one per checkpoint (addons/store/database.py): any prefix (time, level, logger)
# is allowed.
HEAD_LINE = re.compile(
    r"warden checkpoint seq=(\d+) head_seq=(\d+) head_hash=([0-9a-f]{64}) key_id=(\S+) signature=(\S+)"
)


def parse_heads(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The checkpoint heads in a gateway log (its "warden checkpoint seq=... head_seq=... head_hash=...
    key_id=... signature=..." lines), with their line numbers; every other line is ignored."""
    heads = []
    for number, line in enumerate(lines, 1):
        m = HEAD_LINE.search(line)
        if m:
            heads.append({"seq": int(m[1]), "head_seq": int(m[2]), "head_hash": m[3], "key_id": m[4],
                          "signature": m[5], "line": number})
    return heads


def match_heads(result: Verification, external: list[dict[str, Any]], source: str) -> Verification:
    """Compare the heads kept outside the store with the chain's signed checkpoints: every external head must
    be a checkpoint of the chain with the same seq, head and key. A history rewritten and re-signed with the
    gateway's own key verifies by itself; the heads logged before the rewrite do not match it."""
    chain = {h["seq"]: h for h in result.heads}
    matched, unmatched = 0, []
    for head in external:
        mine = chain.get(head["seq"])
        if mine is not None and all(mine[k] == head[k] for k in ("head_seq", "head_hash", "key_id")):
            matched += 1
            continue
        if mine is None:
            why = ("no checkpoint with that seq in the chain" if head["seq"] > result.head_seq or not result.ok
                   else f"event seq={head['seq']} of the chain is not a checkpoint")
        else:
            why = (f"the chain's checkpoint seq={head['seq']} signs head_seq={mine['head_seq']} "
                   f"head_hash={mine['head_hash']}")
        unmatched.append({**{k: head[k] for k in ("seq", "head_seq", "head_hash", "key_id", "line")}, "why": why})
    result.external_heads = {"source": source, "given": len(external), "matched": matched, "unmatched": unmatched}
    if unmatched and result.ok:
        first = unmatched[0]
        result.ok = False
        result.bad_seq = first["seq"]
        result.problem = (f"{len(unmatched)} of {len(external)} external heads are not in the chain; the first, "
                          f"{source} line {first['line']}: checkpoint seq={first['seq']} head_seq={first['head_seq']} "
                          f"head_hash={first['head_hash']}: {first['why']} (the store was rewritten after that head "
                          "was logged, or the log belongs to another store)")
    return result


def verify_chain(con: duckdb.DuckDBPyConnection, public_key: Ed25519PublicKey | None) -> Verification:
    return verify_events(iter_events(con), public_key)


def iter_events_until(events: Iterator[Event], last_seq: int) -> Iterator[Event]:
    """``events`` up to and including ``last_seq`` (what a checkpoint asked for at the start of a verify covers)."""
    for event in events:
        if event.seq > last_seq:
            return
        yield event


def headers_of(event: Event) -> list[tuple[str, str]]:
    return [(name, value) for name, value in event.headers or []]


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-23T10:00:00`` (UTC unless it carries an offset) or a duration ago: ``90s``, ``15m``, ``2h``, ``7d``.

    A duration ago needs its unit (``20261123`` is a date). ``ValueError`` otherwise."""
    text = text.strip()
    now = now or datetime.now(UTC).replace(tzinfo=None)
    try:
        return now - parse_duration(text, bare=False)
    except OverflowError:
        raise ValueError(f"{text!r} reaches too far back for a date") from None
    except DurationError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is neither an ISO 8601 time nor a duration like 15m, 2h, 7d or 1w") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment
