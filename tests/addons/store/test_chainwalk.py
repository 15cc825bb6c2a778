"""The fast whole-store verification (content hashed in parallel, structure walked light) answers exactly as
``verify_events`` walking every event does: intact, purged, and after each kind of tampering with the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from addons.store import chainwalk
from addons.store.chainwalk import verify_store
from addons.store.database import Store, StoreError, connect
from addons.store.events import CANONICAL_SQL, Event, canonical_row, form_hash, utcnow
from addons.store.keys import SigningKey
from addons.store.queries import iter_events
from addons.store.retention import purge
from addons.store.verification import verify_events

OLD = utcnow() - timedelta(days=100)
# Text DuckDB's canonical form writes as canonical_row does (printable ASCII, quotes and backslashes), and text it
# writes otherwise (non-ASCII, control characters), which the reference must hash again.
TEXTS = ('plain "quoted" back\\slash', "ünïcode \u2028", "tab\tnew\nline\x7f", "emoji \U0001f600")


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return SigningKey.load_or_create(tmp_path / "sign.key")


def _store(db: Path, key: SigningKey, flows: int = 60) -> None:
    store = Store(db, key, checkpoint_every=25)
    store.start()
    for n in range(flows):
        when = OLD if n < flows // 2 else utcnow()
        for kind in ("request", "response"):
            store.submit(Event(kind=kind, flow_id=f"f{n}", ts=when, user=f"u{n % 3}", host="api.example", status=200,
                               fate="completed", body=f"body {n} é\n\"quoted\"".encode(), original_enc=b"\x00\xff",
                               detail={"n": n, "text": TEXTS[n % len(TEXTS)]})).result(timeout=10)
    purge(store, timedelta(days=30), "30d", "test")
    store.close()


def _both(db: Path, key: SigningKey) -> tuple[dict, dict]:
    """verify_events over every event; verify_store, hashing in DuckDB and here (which must agree)."""
    con = connect(db, read_only=True)
    try:
        slow, fast = verify_events(iter_events(con), key.public).as_dict(), verify_store(con, key.public).as_dict()
        assert verify_store(con, key.public, hash_here=True).as_dict() == fast
        return slow, fast
    finally:
        con.close()


Tamper = Callable[[duckdb.DuckDBPyConnection], None]
TAMPERING: dict[str, Tamper] = {
    "intact": lambda con: None,
    "a body changed": lambda con: con.execute("UPDATE events SET body = 'other' WHERE seq = 70"),
    "an event removed": lambda con: con.execute("DELETE FROM events WHERE seq = 71"),
    "a checkpoint made a request": lambda con: con.execute(
        "UPDATE events SET kind = 'request' WHERE seq = (SELECT min(seq) FROM events WHERE kind = 'checkpoint')"),
    "a tombstone forged on a live event": lambda con: con.execute(
        "UPDATE events SET record = ?, body = NULL, original_enc = NULL, \"user\" = NULL, host = NULL, status = NULL,"
        " fate = NULL WHERE seq = 90", [json.dumps({"chain_format": 2, "tombstone": {"digest": "0" * 64,
                                                                                    "purge_seq": 200}})]),
    "a tombstone's digest changed": lambda con: con.execute(
        "UPDATE events SET record = replace(CAST(record AS VARCHAR), '\"digest\":\"', '\"digest\":\"00') "
        "WHERE seq = (SELECT min(seq) FROM events WHERE (record->'tombstone') IS NOT NULL)"),
    "the chain form dropped": lambda con: con.execute(
        "UPDATE events SET record = json_object('detail', record->'detail') WHERE seq = 80"),
    "a chain form that is no number": lambda con: con.execute(
        "UPDATE events SET record = json_object('chain_format', 'two') WHERE seq = 81"),
    "a link changed": lambda con: con.execute("UPDATE events SET prev_hash = hash WHERE seq = 75"),
    "a user changed": lambda con: con.execute("UPDATE events SET \"user\" = 'mallory' WHERE seq = 100"),
    # What the fast walk passes at once (runs of linked events) must break where the event walk breaks.
    "an event doubled": lambda con: con.execute("INSERT INTO events SELECT * FROM events WHERE seq = 72"),
    "two events swapped": lambda con: con.execute(
        "UPDATE events SET seq = CASE seq WHEN 72 THEN 73 ELSE 72 END WHERE seq IN (72, 73)"),
    "the first event removed": lambda con: con.execute("DELETE FROM events WHERE seq = 0"),
    "a seq renumbered onto the next": lambda con: con.execute("UPDATE events SET seq = 78 WHERE seq = 77"),
    "a tombstone names a request as its purge": lambda con: con.execute(
        "UPDATE events SET record = json_object('chain_format', 2, 'tombstone', json_object("
        "'digest', record->'tombstone'->>'digest', 'purge_seq', (SELECT max(seq) - 1 FROM events WHERE kind = 'request'"
        "))) WHERE seq = (SELECT min(seq) FROM events WHERE (record->'tombstone') IS NOT NULL)"),
    "a negative seq inserted": lambda con: con.execute(
        "INSERT INTO events SELECT * REPLACE (-1 AS seq) FROM events WHERE seq = 5"),
    # A column retyped or collated otherwise reads differently: the fast walk takes the reference walk instead.
    "the status column retyped as text": lambda con: con.execute(
        'ALTER TABLE events ALTER "status" TYPE VARCHAR'),
    "a hash upper-cased under a case-blind collation": lambda con: (
        con.execute('ALTER TABLE events ALTER "hash" TYPE VARCHAR COLLATE NOCASE'),
        con.execute('UPDATE events SET "hash" = upper("hash") WHERE seq = 22')),
    "the purge's checkpoint made a request": lambda con: con.execute(
        "UPDATE events SET kind = 'request' WHERE seq = (SELECT seq + 1 FROM events WHERE kind = 'purge')"),
}


@pytest.mark.parametrize("tampering", TAMPERING)
def test_the_fast_walk_answers_as_the_event_walk(tmp_path: Path, key: SigningKey, tampering: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chainwalk, "RANGE", 16)  # many ranges
    db = tmp_path / "w.duckdb"
    _store(db, key)
    con = duckdb.connect(str(db))
    TAMPERING[tampering](con)
    con.close()
    slow, fast = _both(db, key)
    fast["notes"] = [n for n in fast["notes"] if not n.startswith("verified event by event")]
    assert fast == slow
    assert (slow["status"] == "ok") == (tampering == "intact"), slow["problem"]
    if tampering == "intact":
        assert slow["tombstones"] > 0 and slow["checkpoints"] > 2


def test_duckdb_writes_the_canonical_form_of_printable_text_and_other_text_goes_to_the_reference(
        tmp_path: Path, key: SigningKey) -> None:
    db = tmp_path / "w.duckdb"
    _store(db, key, flows=8)
    con = connect(db, read_only=True)
    try:
        rows = con.execute(f"SELECT {CANONICAL_SQL}, {chainwalk._COLUMNS} FROM events "
                           "WHERE (record->'tombstone') IS NULL ORDER BY seq").fetchall()
        same = {row[1]: row[0] == canonical_row(tuple(row[1:])) for row in rows}
        # printable ASCII (space to tilde): the text json.dumps writes as it is, but for quotes and backslashes
        printable = {row[1]: all(not isinstance(v, str) or all(" " <= c <= "~" for c in v) for v in row[1:])
                     for row in rows}
        assert same == printable and any(same.values()) and not all(same.values())
        assert chainwalk.content_mismatches(con, 0, 10_000) == []  # the reference clears what DuckDB wrote otherwise
    finally:
        con.close()


def _sealed_after_head(db: Path, record: str) -> None:
    """Append, past the head, a request event whose ``record`` is ``record`` as written, sealed in form 2 (what
    someone without the key could add as an unsigned tail; the journal check would refuse it, so it is left out)."""
    con = duckdb.connect(str(db))
    try:
        last = con.execute(f"SELECT {chainwalk._COLUMNS} FROM events ORDER BY seq DESC LIMIT 1").fetchall()[0]
        row = [last[0] + 1, last[1], "request", "fx", None, None, None, None, None, record, None, None, last[-1], None]
        row[-1] = form_hash(last[-1], 2, canonical_row(tuple(row)))
        con.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
    finally:
        con.close()


@pytest.mark.parametrize("record", ['{"chain_format":2,"detail":{},"chain_format":1}',
                                    '{"chain_format":4294967298}', '{"chain_format":2.0}'])
def test_a_record_duckdb_and_python_read_otherwise_is_walked_as_python_reads_it(
        tmp_path: Path, key: SigningKey, record: str) -> None:
    db = tmp_path / "w.duckdb"
    _store(db, key, flows=10)
    _sealed_after_head(db, record)
    con = duckdb.connect(":memory:")  # the file alone, as connect(read_only=True) reads it but for the journal
    try:
        con.execute(f"ATTACH '{db}' AS store (READ_ONLY)")
        con.execute("CREATE VIEW events AS SELECT * FROM store.events")
        slow, fast = verify_events(iter_events(con), key.public).as_dict(), verify_store(con, key.public).as_dict()
    finally:
        con.close()
    assert fast == slow


def test_a_macro_in_the_store_is_refused_to_write_and_verification_walks_without_it(
        tmp_path: Path, key: SigningKey) -> None:
    """A macro in the file stands in for DuckDB's own sha256 in a writer's catalog: with it, rows changed under
    signed checkpoints would hash to what they carried."""
    db = tmp_path / "w.duckdb"
    _store(db, key, flows=10)
    con = duckdb.connect(str(db))
    con.execute("UPDATE events SET \"user\" = 'mallory' WHERE seq = 20")
    con.execute("CREATE MACRO sha256(x) AS (SELECT hash FROM events WHERE seq = 20)")  # any stand-in will do
    con.close()
    with pytest.raises(StoreError, match=r"never writes \(macro .*sha256.*the file was edited"):
        connect(db)
    con = connect(db, read_only=True)  # the file attached, not the default catalog: its macro is not used
    try:
        assert verify_store(con, key.public).problem.startswith("event seq=20 ")
    finally:
        con.close()
    con = duckdb.connect(str(db))  # a writer's catalog, as the gateway's would be had it not refused the file
    try:
        result = verify_store(con, key.public)
        assert not result.ok and result.bad_seq == 20 and "macro" in result.notes[-1]
    finally:
        con.close()
