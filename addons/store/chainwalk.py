"""Verifying a whole store fast: every event's content hashed by DuckDB, the chain's structure in one walk.

``verify_events`` walks events one by one and recomputes each hash, which on a store of millions of events is
the cost of verification: building every event and hashing its canonical form. Here the two halves are apart:

1. Content: every row (but tombstones, whose content is gone) is hashed from its canonical form, which DuckDB
   builds from its columns (``CANONICAL_SQL``) and hashes in its own threads, and compared with the hash it
   carries, in ranges of seq; a row whose hash DuckDB's form does not give is hashed again by ``canonical_row``,
   the reference. The answer is the seqs whose content does not match. No Python runs per row, so a gateway
   verifying the file it holds serves on meanwhile; the CLI on a stopped store, with nothing else to run, has
   Python hash DuckDB's forms instead (``hash_here``: three times faster than DuckDB's sha256 on this machine).
2. Structure: ``verify_events`` walks the chain in order. One query (``_WALK``) finds the rows it must take one
   by one: those it reads whole (checkpoints, startup, purge and keys events, tombstones), any that does not
   follow on from the row before it, the first whose content did not match; every run of rows between them,
   found linked one to the next, it passes at once (``LinkedRun``). So the outcome, and every message, is
   ``verify_events``'s own, and a test holds the two walks to the same answer over every kind of tampering.

Both halves read the same rows: a stopped store does not change, and a running gateway's walk stops at the
checkpoint it signed first (``until_seq``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import duckdb

from addons.store.events import CANONICAL_SQL, CHAIN_FORMATS, COLUMN_NAMES, Event, canonical_row, form_hash
from addons.store.queries import iter_events, iter_events_until
from addons.store.schema import foreign_objects
from addons.store.verification import Keys, LinkedRun, Verification, verify_events

RANGE = 100_000  # events per content query: a progress step
# Kinds whose detail the walk reads (checkpoint signatures, unsigned tails, purges, key rotations): read whole. So
# are tombstones, a chain form written otherwise than 1 or 2, and a record naming its chain form twice (DuckDB
# reads the first, Python the last): the walk reads such rows as Python does, and names what it finds.
READ_WHOLE = ("checkpoint", "startup", "purge", "keys")
_COLUMNS = ", ".join(f'"{c}"' for c in COLUMN_NAMES)
_LIGHT = ("seq", "ts", "kind", "flow_id", "prev_hash", "hash")  # what the walk reads of an event it takes light

Progress = Callable[[int], None]


# A row's hash recomputed by DuckDB from its canonical form, in the chain form it names (``form_hash``): NULL for
# a form no version wrote or a link that is not hex.
_SQL_HASH = f"""
    CASE coalesce(nullif(TRY_CAST(record->>'chain_format' AS INTEGER), 0), 1)
      WHEN 2 THEN sha256(try(unhex(prev_hash)) || unhex(sha256({CANONICAL_SQL})))
      WHEN 1 THEN sha256(encode(prev_hash || chr(10)) || {CANONICAL_SQL})
    END"""


def content_mismatches(con: duckdb.DuckDBPyConnection, first: int, end: int, hash_here: bool = False) -> list[int]:
    """The seqs in ``first``..``end - 1`` whose content does not hash to the hash they carry (tombstones aside).
    DuckDB builds each row's canonical form (``CANONICAL_SQL``) and hashes it in its own threads, so that a
    gateway verifying the file it holds keeps Python free to serve; or, with ``hash_here`` (a process with nothing
    else to do: the CLI on a stopped store), Python hashes DuckDB's forms, three times faster than DuckDB's sha256
    here. The few rows whose form DuckDB writes otherwise (text that is not printable ASCII) are hashed again as
    ``canonical_row`` writes them, the reference."""
    where = "WHERE seq >= ? AND seq < ? AND (record->'tombstone') IS NULL"
    if not hash_here:
        suspects = [seq for (seq,) in con.execute(
            f"SELECT seq FROM events {where} AND hash IS DISTINCT FROM ({_SQL_HASH})", [first, end]).fetchall()]
        return _reference_mismatches(con, suspects) if suspects else []
    cursor = con.execute(f"SELECT seq, {CANONICAL_SQL}, TRY_CAST(record->>'chain_format' AS INTEGER), prev_hash, "
                         f"hash FROM events {where}", [first, end])
    suspects = []
    while rows := cursor.fetchmany(2000):
        for seq, body, chain_format, prev_hash, carried in rows:
            try:
                if body is None or form_hash(prev_hash, chain_format, body) != carried:
                    suspects.append(seq)
            except ValueError:  # a form no version wrote, or a link that is not hex: the reference decides
                suspects.append(seq)
    return _reference_mismatches(con, suspects) if suspects else []


def _reference_mismatches(con: duckdb.DuckDBPyConnection, seqs: list[int]) -> list[int]:
    """Of the rows with these seqs, those whose ``canonical_row`` does not hash to the hash they carry."""
    cursor = con.execute(
        f"SELECT {_COLUMNS}, TRY_CAST(record->>'chain_format' AS INTEGER) FROM events "
        f"WHERE seq IN (SELECT unnest(?::BIGINT[])) AND (record->'tombstone') IS NULL", [seqs])
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


def _content(con: duckdb.DuckDBPyConnection, last_seq: int, progress: Progress, hash_here: bool) -> set[int]:
    bad: set[int] = set()
    for first in range(0, last_seq + 1, RANGE):
        end = min(first + RANGE, last_seq + 1)
        bad.update(content_mismatches(con, first, end, hash_here))
        progress(end - first)
    return bad


# The walk of a whole chain in one query. Each row's record is read once (``facts``): its chain form as written,
# whether it is a tombstone (and the purge it names), whether it names its chain form twice. Per row up to a seq
# (in seq order, hash breaking ties): whether the walk takes it alone: a row it reads whole (see ``READ_WHOLE``),
# one that does not follow on from the row before it (a seq missing or doubled, a link or a chain form broken),
# the first whose content did not match (the second parameter), one tombstones name as their purge, and in doubt
# any row. Every other row lies in a run of rows linked one to the next, of which only the first and the last are
# read out. Heavy columns come only for the rows read whole.
_WALK = f"""
    WITH facts AS MATERIALIZED (
      SELECT seq, ts, kind, flow_id, prev_hash, hash, record->>'chain_format' AS written_form,
             (record->'tombstone') IS NOT NULL AS stone,
             TRY_CAST(record->'tombstone'->>'purge_seq' AS BIGINT) AS purge_seq,
             CAST(record AS VARCHAR) LIKE '%"chain_format"%"chain_format"%' AS form_twice
      FROM events WHERE seq <= $last
    ), chain AS (
      SELECT seq, ts, kind, flow_id, prev_hash, hash,
             (kind IN {READ_WHOLE!r} OR stone OR coalesce(written_form NOT IN ('1', '2'), false) OR form_twice)
               AS whole,
             coalesce(nullif(TRY_CAST(written_form AS INTEGER), 0), 1) AS form,
             lag(seq) OVER w AS before_seq, lag(hash) OVER w AS before_hash,
             lag(coalesce(nullif(TRY_CAST(written_form AS INTEGER), 0), 1)) OVER w AS before_form,
             row_number() OVER w AS position
      FROM facts WINDOW w AS (ORDER BY seq, hash)
    ), marked AS (
      SELECT *, coalesce(whole OR before_seq IS NULL OR seq <> before_seq + 1 OR prev_hash <> before_hash
                         OR form NOT IN {tuple(CHAIN_FORMATS)!r} OR form < before_form OR seq = $first_bad
                         OR seq IN (SELECT purge_seq FROM facts WHERE stone), true) AS alone
      FROM chain
    ), edged AS (
      SELECT *, coalesce(lag(alone) OVER p, true) AS run_starts, coalesce(lead(alone) OVER p, true) AS run_ends
      FROM marked WINDOW p AS (ORDER BY position)
    ), kept AS (
      SELECT * FROM edged WHERE alone OR run_starts OR run_ends
    ), heavy AS (
      SELECT seq AS whole_seq, hash AS whole_hash, {", ".join(f'"{c}"' for c in COLUMN_NAMES if c not in _LIGHT)}
      FROM events WHERE seq IN (SELECT seq FROM kept WHERE whole)
    )
    SELECT k.alone, k.run_starts, k.run_ends, k.whole, k.form,
           {", ".join(f'{"k" if c in _LIGHT else "h"}."{c}"' for c in COLUMN_NAMES)}
    FROM kept k LEFT JOIN heavy h ON k.whole AND h.whole_seq = k.seq AND h.whole_hash = k.hash
    ORDER BY k.position"""


def _walked(con: duckdb.DuckDBPyConnection, last_seq: int, first_bad: int, progress: Progress
            ) -> Iterator[Event | LinkedRun]:
    """The chain up to ``last_seq`` in order, for ``verify_events``: the rows it must take one by one (whole where
    it reads their detail, light otherwise), and between them ``LinkedRun``s of rows the query found linked one to
    the next (``_WALK``). ``first_bad``: the first seq whose content did not match (-1: none). One query on
    ``con`` (a second cursor would be another connection, blind to ``con``'s own transaction)."""
    cursor = con.execute(_WALK, {"last": last_seq, "first_bad": first_bad})
    start: tuple[int, str, int] | None = None  # the first row of the run being read: seq, prev_hash, form
    while rows := cursor.fetchmany(1000):
        for alone, starts, ends, whole, form, *row in rows:
            if alone:
                yield Event.from_row(row) if whole else Event(
                    kind=row[2], seq=row[0], ts=row[1], flow_id=row[3], prev_hash=row[-2], hash=row[-1],
                    chain_format=form)
                progress(1)
                continue
            if starts:
                start = (row[0], row[-2], form)
            if ends:
                assert start is not None
                yield LinkedRun(start[0], row[0], start[1], row[-1], start[2], form)
                progress(row[0] - start[0] + 1)
                start = None


def last_seq_of(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute("SELECT coalesce(max(seq), -1) FROM events").fetchall()[0][0]


def verify_store(con: duckdb.DuckDBPyConnection, keys: Keys, until_seq: int | None = None,
                 progress: Progress = lambda n: None, hash_here: bool = False) -> Verification:
    """The chain of the store ``con`` reads, from its genesis to ``until_seq`` (default: its last event), verified
    as ``verify_events`` does. ``progress(n)``: n more events hashed, then n more walked (twice the count in
    all). ``hash_here``: hash in this process's Python (see ``content_mismatches``)."""
    last = last_seq_of(con) if until_seq is None else until_seq
    foreign = foreign_objects(con)
    if foreign:  # DuckDB's hashing and the walk's query could be made to lie: every event walked in Python
        result = verify_events(iter_events_until(iter_events(con), last), keys)
        progress(2 * result.events)
        result.notes.append(f"verified event by event: the store holds what Warden never writes ({'; '.join(foreign)})")
        return result
    bad = _content(con, last, progress, hash_here)
    # The whole events (read whole, e.g. tombstones) are checked by verify_events itself; a light one by the
    # content pass. A seq missing from the rows (removed) or doubled is the walk's to find, as ever.
    return verify_events(_walked(con, last, min(bad, default=-1), progress), keys,
                         content_checked=lambda event: None if event.stored_record is not None
                         else event.seq not in bad)
