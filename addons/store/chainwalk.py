"""Verifying a whole store fast: every event's content hashed in parallel, the chain's structure in one walk.

``verify_events`` walks events one by one and recomputes each hash, which on a store of millions of events is
the cost of verification: building every event and hashing its canonical form. Here the two halves are apart:

1. Content: every row (but tombstones, whose content is gone) is hashed straight from its columns
   (``canonical_row``) and compared with the hash it carries, in ranges of seq. On a stopped store the ranges go
   to worker processes, one per core, each with its own read-only connection (DuckDB lets many processes read a
   file nobody writes); in the gateway, which holds the file, they are hashed in its own thread. The answer is the
   seqs whose content does not match.
2. Structure: ``verify_events`` walks light events (seq, time, kind, flow, links, chain form) in chain order and
   is told which contents matched; events it must read (checkpoints, startup, purge and keys events, tombstones)
   are read whole and checked by it as before. So the outcome, and every message, is ``verify_events``'s own.

Both halves read the same rows: a stopped store does not change, and a running gateway's walk stops at the
checkpoint it signed first (``until_seq``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import duckdb

from addons.store.events import COLUMN_NAMES, Event, canonical_row, form_hash
from addons.store.verification import Keys, Verification, verify_events

RANGE = 100_000  # events per unit of content work: a progress step, and a worker's task
PARALLEL_FROM = 200_000  # events: below this, starting worker processes costs more than it saves
# Kinds whose detail the walk reads (checkpoint signatures, unsigned tails, purges, key rotations): read whole.
READ_WHOLE = ("checkpoint", "startup", "purge", "keys")
_COLUMNS = ", ".join(f'"{c}"' for c in COLUMN_NAMES)
# Read whole too: tombstones, and a chain form that is no whole number (the walk names it as it is written).
_WHOLE = (f"(kind IN {READ_WHOLE!r} OR (record->'tombstone') IS NOT NULL"
          " OR coalesce(json_type(record->'chain_format') NOT IN ('UBIGINT', 'BIGINT'), false))")

Progress = Callable[[int], None]


def content_mismatches(con: duckdb.DuckDBPyConnection, first: int, end: int) -> list[int]:
    """The seqs in ``first``..``end - 1`` whose content does not hash to the hash they carry (tombstones aside)."""
    cursor = con.execute(
        f"SELECT {_COLUMNS}, TRY_CAST(record->>'chain_format' AS INTEGER) FROM events "
        f"WHERE seq >= ? AND seq < ? AND (record->'tombstone') IS NULL", [first, end])
    bad = []
    while rows := cursor.fetchmany(2000):
        for row in rows:
            *columns, chain_format = row
            prev_hash, carried = columns[-2], columns[-1]
            try:
                if form_hash(prev_hash, chain_format, canonical_row(tuple(columns))) != carried:
                    bad.append(columns[0])
            except ValueError:  # a form no version wrote, or a link that is not hex: the walk names it
                bad.append(columns[0])
    return bad


def _mismatches_in_file(path: str, first: int, end: int) -> list[int]:
    """A worker's task: ``content_mismatches`` on its own read-only connection to the stopped store."""
    from addons.store.database import connect  # in the worker: database imports this module's neighbours

    con = connect(path, read_only=True)
    try:
        return content_mismatches(con, first, end)
    finally:
        con.close()


def _ranges(last_seq: int) -> list[tuple[int, int]]:
    return [(first, min(first + RANGE, last_seq + 1)) for first in range(0, last_seq + 1, RANGE)]


def _content(con: duckdb.DuckDBPyConnection, last_seq: int, path: Path | None, progress: Progress) -> set[int]:
    ranges = _ranges(last_seq)
    bad: set[int] = set()
    workers = min(os.cpu_count() or 1, len(ranges))
    if path is None or last_seq + 1 < PARALLEL_FROM or workers < 2:
        for first, end in ranges:
            bad.update(content_mismatches(con, first, end))
            progress(end - first)
        return bad
    # spawn, not fork: a forked child would inherit this process's DuckDB connection and its threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        tasks = {pool.submit(_mismatches_in_file, str(path), first, end): end - first for first, end in ranges}
        for task in as_completed(tasks):
            bad.update(task.result())
            progress(tasks[task])
    return bad


def _walked(con: duckdb.DuckDBPyConnection, last_seq: int, progress: Progress) -> Iterator[Event]:
    """Every event up to ``last_seq`` in chain order: light, or whole where the walk reads its detail. One query on
    ``con`` (a second cursor would be another connection, blind to ``con``'s own transaction)."""
    light = ("seq", "ts", "kind", "flow_id", "prev_hash", "hash")
    columns = ", ".join(f'"{c}"' if c in light else f'CASE WHEN whole THEN "{c}" END' for c in COLUMN_NAMES)
    cursor = con.execute(
        f"SELECT whole, TRY_CAST(record->>'chain_format' AS INTEGER), {columns} "
        f"FROM (SELECT *, {_WHOLE} AS whole FROM events WHERE seq <= ?) ORDER BY seq", [last_seq])
    while rows := cursor.fetchmany(10_000):
        for whole, chain_format, *row in rows:
            if whole:
                yield Event.from_row(row)
            else:
                yield Event(kind=row[2], seq=row[0], ts=row[1], flow_id=row[3], prev_hash=row[-2], hash=row[-1],
                            chain_format=chain_format)
        progress(len(rows))


def last_seq_of(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT coalesce(max(seq), -1) FROM events").fetchall()[0][0]


def verify_store(con: duckdb.DuckDBPyConnection, keys: Keys, until_seq: int | None = None,
                 path: Path | None = None, progress: Progress = lambda n: None) -> Verification:
    """The chain of the store ``con`` reads, from its genesis to ``until_seq`` (default: its last event), verified
    as ``verify_events`` does. ``path``: the stopped store's file, so that worker processes may hash its contents
    (None: hashed in this process). ``progress(n)``: n more events hashed, then n more walked (twice the count in
    all)."""
    last = last_seq_of(con) if until_seq is None else until_seq
    bad = _content(con, last, path, progress)
    # The whole events (read whole, e.g. tombstones) are checked by verify_events itself; a light one by the
    # content pass. A seq missing from the rows (removed) or doubled is the walk's to find, as ever.
    return verify_events(_walked(con, last, progress), keys,
                         content_checked=lambda event: None if event.stored_record is not None
                         else event.seq not in bad)
