"""Retention purge (``warden purge``, and the gateway's schedule): events older than the period lose their content
and keep a tombstone (``addons.store.tombstones``); the chain still verifies from its genesis.

What is purged: events older than the cutoff of flows with no event at or after it (a flow goes as a whole), and
old events of no flow (e.g. ``access`` reads), except events of a flow under an incident hold or of a held user
(``addons.store.holds``), events of the kinds that carry the chain's own facts (``NEVER_PURGED``), and events in
chain form 1 (their hash covers the content directly, so removing it would break the chain: they are kept and
counted). Each batch of at most ``BATCH`` events is one DuckDB transaction that turns the rows into tombstones and
appends the ``purge`` event naming them (period, cutoff, first/last seq, count, the SHA-256 over the removed
digests, the holds that spared flows), run on the store's writer thread; then a checkpoint signs it.

The candidates are chosen and hashed on a reader, off the writer thread (old rows only change by a purge, and
purges run one at a time); the writer only re-checks the holds and applies the batch.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb

from addons.store.database import Store, StoreError
from addons.store.events import COLUMN_NAMES, Event, event_digest, link, utcnow
from addons.store.holds import held
from addons.store.tombstones import NEVER_PURGED, digests_sha256, kept_sha256

BATCH = 20_000  # events per purge event: the writer holds other commits back only this long
_ONE_AT_A_TIME = threading.Lock()

_KINDS = ", ".join(f"'{k}'" for k in NEVER_PURGED)
_OLD = f"""
FROM events e
WHERE e.ts < $cutoff AND e.kind NOT IN ({_KINDS}) AND (e.record->'tombstone') IS NULL AND e.seq > $after
  AND (e.flow_id IS NULL OR e.flow_id NOT IN (
       SELECT flow_id FROM events WHERE flow_id IS NOT NULL AND ts >= $cutoff AND kind NOT IN ({_KINDS})))
"""
# NULL flow or user is never held (coalesce: a NULL would drop the row from both sides of a NOT)
_HELD = """coalesce(list_contains($flows::VARCHAR[], e.flow_id) OR list_contains($users::VARCHAR[], e."user")
       OR e.flow_id IN (SELECT flow_id FROM events
                        WHERE flow_id IS NOT NULL AND list_contains($users::VARCHAR[], "user")), false)"""
_FORM2 = "coalesce(CAST(e.record->>'chain_format' AS INTEGER), 1) = 2"


class PurgeRefused(StoreError):
    """An event the purge would remove does not match its hash: it stops rather than remove that evidence."""


@dataclass
class PurgeReport:
    """What a purge did (or, dry, would do)."""

    period: str
    cutoff: str
    dry_run: bool
    purged: int = 0
    spared_held: int = 0  # old events kept because their flow or user is held
    kept_form1: int = 0  # old events in chain form 1, which cannot be tombstoned
    held_flows: list[str] = field(default_factory=list)
    held_users: list[str] = field(default_factory=list)
    purge_events: list[int] = field(default_factory=list)  # the seq of each purge event written
    checkpoint: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _params(cutoff: datetime, flows: list[str], users: list[str], after: int = -1) -> dict[str, Any]:
    return {"cutoff": cutoff, "flows": flows, "users": users, "after": after}


def _count(con: duckdb.DuckDBPyConnection, where: str, params: dict[str, Any]) -> int:
    return con.execute(f"SELECT count(*) {_OLD} AND {where}", params).fetchall()[0][0]


def _candidates(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> list[Event]:
    """The next batch to purge, in seq order, each checked: a row whose hash does not link is never removed (it is
    evidence of tampering: ``warden verify`` names it)."""
    cols = ", ".join(f'e."{c}"' for c in COLUMN_NAMES)
    rows = con.execute(f"SELECT {cols} {_OLD} AND {_FORM2} AND NOT {_HELD} ORDER BY e.seq LIMIT {BATCH}",
                       params).fetchall()
    events = [Event.from_row(row) for row in rows]
    for event in events:
        if link(event.prev_hash, event_digest(event)) != event.hash:
            raise PurgeRefused(f"event seq={event.seq} does not match its hash: the purge stops rather than remove "
                             "the evidence of a change (run warden verify)")
    return events


def _tombstone_rows(purge_seq: int, seqs: list[int], digests: list[str]):
    def change(cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.execute(
            """UPDATE events SET "user" = NULL, host = NULL, status = NULL, fate = NULL, decision = NULL, body = NULL,
                   original_enc = NULL,
                   record = json_object('chain_format', 2, 'tombstone', json_object('digest', d.digest,
                                                                                    'purge_seq', $purge_seq))
               FROM (SELECT unnest($seqs::BIGINT[]) AS seq, unnest($digests::VARCHAR[]) AS digest) d
               WHERE events.seq = d.seq AND (events.record->'tombstone') IS NULL""",
            {"purge_seq": purge_seq, "seqs": seqs, "digests": digests})

    return change


def _apply(writer: Store, batch: list[Event], report: PurgeReport, actor: str) -> None:
    """On the writer: drop what a hold placed since the batch was chosen, then tombstone the rest and append the
    purge event, in one transaction; sign it."""
    cursor = writer.reader()
    try:
        flows, users = held(cursor)
        held_now = {r[0] for r in cursor.execute(
            'SELECT DISTINCT flow_id FROM events WHERE flow_id IS NOT NULL AND list_contains(?::VARCHAR[], "user")',
            [users]).fetchall()} | set(flows)
    finally:
        cursor.close()
    batch = [e for e in batch if e.flow_id not in held_now and e.user not in users]
    if not batch:
        return
    digests = [event_digest(e) for e in batch]
    event = Event(kind="purge", user=actor, fate="purged", reason=f"retention {report.period}", detail={
        "period": report.period, "cutoff": report.cutoff, "first_seq": batch[0].seq, "last_seq": batch[-1].seq,
        "count": len(batch), "digests_sha256": digests_sha256(digests), "kept_sha256": kept_sha256(batch),
        "held_flows": report.held_flows, "held_users": report.held_users, "spared_held": report.spared_held,
        "kept_form1": report.kept_form1,
    })
    writer.append_with_change(event, _tombstone_rows(writer.head.seq + 1, [e.seq for e in batch], digests))
    report.purged += len(batch)
    report.purge_events.append(event.seq)
    report.checkpoint = writer.sign_now()


def purge(store: Store, older_than: timedelta, period: str, actor: str, *, dry_run: bool = False,
          now: datetime | None = None) -> PurgeReport:
    """Purge what is older than ``older_than`` (written ``period``, e.g. ``3y``), as ``actor``; ``dry_run``: count
    only. One purge at a time per process; each batch goes through the store's writer (``Store.on_writer``)."""
    cutoff = (now or utcnow()) - older_than
    report = PurgeReport(period=period, cutoff=cutoff.isoformat(), dry_run=dry_run)
    with _ONE_AT_A_TIME:
        store.sync()  # what is committed but not yet in DuckDB counts too
        con = store.reader()
        try:
            flows, users = held(con)
            report.held_users = users
            params = _params(cutoff, flows, users)
            report.spared_held = _count(con, _HELD, params)
            report.held_flows = sorted({r[0] for r in con.execute(
                f"SELECT DISTINCT e.flow_id {_OLD} AND {_HELD} AND e.flow_id IS NOT NULL", params).fetchall()})
            report.kept_form1 = _count(con, f"NOT {_FORM2} AND NOT {_HELD}", params)
            if dry_run:
                report.purged = _count(con, f"{_FORM2} AND NOT {_HELD}", params)
                return report
            while batch := _candidates(con, params):
                store.on_writer(functools.partial(_apply, batch=batch, report=report, actor=actor))
                params = _params(cutoff, flows, users, batch[-1].seq)
        finally:
            con.close()
    return report
