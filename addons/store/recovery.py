"""Repairing a journal that start-up refused (``warden repair-journal``), with the gateway stopped.

Nothing is thrown away: the journal as it was is copied beside it, every event in it that still
continues the chain is loaded into DuckDB, and a ``journal_repair`` event on the chain records the
copy's name and SHA-256, how many lines there were, how many were loaded and what was wrong. The
events set aside stay in the copy for investigation; the chain continues after the last good one.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from addons.store.database import Head, _head, _open, schema_sql
from addons.store.events import Event, journal_line, seal
from addons.store.journal import Journal, JournalDamaged, journal_path, parse_line, pending_events, read_lines

log = logging.getLogger("warden.recovery")


def repair_journal(db: str | Path) -> dict:
    """Repair a damaged journal while the gateway is stopped: keep a copy, load every journal event that
    still continues the chain, and record on the chain (a ``journal_repair`` event) what was set aside."""
    db = Path(db)
    path = journal_path(db)
    con = _open(db)
    try:
        con.execute(schema_sql())
        head = _head(con)
        try:
            pending_events(path, head.seq, head.hash, head.anchored)
            return {"repaired": False, "journal": str(path), "reason": "the journal is not damaged"}
        except JournalDamaged as e:
            found = str(e.problem)
        lines, torn = read_lines(path)
        tip: Head | Event = head
        kept: list[Event] = []
        problems = [found]
        for number, line in enumerate(lines, 1):
            try:
                event = parse_line(path, number, line)
            except JournalDamaged as e:
                problems.append(f"line {number}: {e.problem}")
                continue
            if event.seq == tip.seq + 1 and event.prev_hash == tip.hash:
                kept.append(event)
                tip = event
            elif event.seq > tip.seq or _stored_hash(con, event.seq) != event.hash:
                problems.append(f"line {number}: seq={event.seq} does not continue the chain at seq={tip.seq}")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        copy = path.with_name(f"{path.name}.damaged-{stamp}")
        data = path.read_bytes() if path.exists() else b""
        copy.write_bytes(data)
        note = Event(kind="journal_repair", detail={
            "journal_copy": copy.name, "journal_sha256": hashlib.sha256(data).hexdigest(), "lines": len(lines),
            "loaded": len(kept), "torn_bytes": len(torn), "head_seq_before": head.seq, "problems": problems,
        })
        seal(note, tip.seq + 1, tip.hash)
        appender = con.appender("events")
        appender.append_rows([e.row() for e in [*kept, note]])
        appender.flush()
        journal = Journal(path)
        journal.reset(journal_line(note))
        journal.close()
    finally:
        con.close()
    log.warning("warden: repaired %s: loaded %d events; copy kept as %s", path, len(kept), copy)
    return {"repaired": True, "journal": str(path), "copy": str(copy), "loaded": len(kept), "lines": len(lines),
            "problems": problems, "repair_event_seq": note.seq}


def _stored_hash(con: duckdb.DuckDBPyConnection, seq: int) -> str | None:
    rows = con.execute("SELECT hash FROM events WHERE seq = ?", [seq]).fetchall()
    return rows[0][0] if rows else None
