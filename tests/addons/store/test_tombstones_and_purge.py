"""Retention below the gateway: purge leaves tombstones the chain verifies through, holds spare flows and users,
and a tombstone or purge changed afterwards is named by verify."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from addons.store.chainwalk import verify_store
from addons.store.database import Store, connect, schema_sql
from addons.store.events import GENESIS, Event, checkpoint_message, seal, utcnow
from addons.store.holds import HoldError, active_holds, place_hold, release_hold
from addons.store.keys import SigningKey
from addons.store.queries import flow_events, iter_events
from addons.store.retention import purge

OLD = utcnow() - timedelta(days=100)
MARKER = b"PURGE-ME-7f3a"
KEPT = b"KEEP-ME-held-19c2"


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return SigningKey.load_or_create(tmp_path / "sign.key")


def _flow(store: Store, flow_id: str, user: str, body: bytes, when=OLD) -> None:
    for kind in ("request", "response"):
        store.submit(Event(kind=kind, flow_id=flow_id, ts=when, user=user, host="api.example", status=200,
                           fate="completed", body=body, original_enc=body + b"-orig",
                           detail={"note": body.decode()})).result(timeout=10)


def _filled(db: Path, key: SigningKey) -> Store:
    store = Store(db, key, checkpoint_every=10_000)
    store.start()
    _flow(store, "f-old", "alice", MARKER)
    _flow(store, "f-held", "alice", KEPT)
    _flow(store, "f-mallory", "mallory", KEPT)
    _flow(store, "f-spans", "bob", MARKER)  # old request...
    ended = Event(kind="error", flow_id="f-spans", user="bob", fate="client_gone")  # ...its end after the cutoff
    store.submit(ended).result(timeout=10)
    _flow(store, "f-new", "carol", b"recent", when=utcnow())
    store.submit(Event(kind="access", ts=OLD, user="auditor", fate="read",
                       detail={"path": "/api/flows", "q": MARKER.decode()})).result(timeout=10)
    store.checkpoint_now()
    return store


def _contents(con, marker: bytes) -> int:
    return con.execute("SELECT count(*) FROM events WHERE contains(CAST(body AS VARCHAR), ?) OR "
                       "contains(CAST(original_enc AS VARCHAR), ?) OR contains(CAST(record AS VARCHAR), ?)",
                       [marker.decode()] * 3).fetchall()[0][0]


def test_purge_leaves_tombstones_the_chain_verifies_through_and_spares_holds(tmp_path: Path, key: SigningKey) -> None:
    db = tmp_path / "w.duckdb"
    store = _filled(db, key)
    place_hold(store, "sec-lead", "incident 42", flow_id="f-held")
    place_hold(store, "sec-lead", "incident 43", user="mallory")
    dry = purge(store, timedelta(days=30), "30d", "cli:ops", dry_run=True)
    assert (dry.purged, dry.spared_held, dry.purge_events) == (3, 4, [])
    report = purge(store, timedelta(days=30), "30d", "cli:ops")
    store.close()

    assert report.purged == 3 and report.spared_held == 4 and len(report.purge_events) == 1
    assert report.held_flows == ["f-held", "f-mallory"] and report.held_users == ["mallory"]
    con = connect(db, read_only=True)
    result = verify_store(con, key.public)
    assert result.status == "ok", result.problem
    assert (result.purges, result.tombstones) == (1, 3)
    assert _contents(con, MARKER) == 2  # f-spans' old request and response: its flow ended after the cutoff
    assert _contents(con, KEPT) == 4  # held: every event of f-held and of mallory's flow
    [gone_request, gone_response] = flow_events(con, "f-old")
    assert gone_request.kind == "request" and gone_request.user is None and gone_request.body is None
    assert gone_request.tombstone == {"digest": gone_request.tombstone["digest"], "purge_seq": report.purge_events[0]}
    [purge_event] = [e for e in iter_events(con) if e.kind == "purge"]
    assert purge_event.user == "cli:ops" and purge_event.detail["count"] == 3
    assert purge_event.detail["first_seq"] == gone_request.seq
    assert [e.kind for e in iter_events(con, purge_event.seq)] == ["checkpoint"]  # signed at once
    con.close()


def test_a_changed_tombstone_or_purge_breaks_verify_naming_it(tmp_path: Path, key: SigningKey) -> None:
    db = tmp_path / "w.duckdb"
    store = _filled(db, key)
    purge(store, timedelta(days=30), "30d", "cli:ops")
    store.close()
    con = duckdb.connect(str(db))
    seq = con.execute("SELECT min(seq) FROM events WHERE (record->'tombstone') IS NOT NULL").fetchall()[0][0]
    record = json.loads(con.execute("SELECT record FROM events WHERE seq = ?", [seq]).fetchall()[0][0])

    def verify_with(change: str, *args) -> object:
        con.execute("BEGIN")
        con.execute(change, [*args])
        result = verify_store(con, key.public)
        con.execute("ROLLBACK")
        return result

    altered = {**record, "tombstone": {**record["tombstone"], "digest": "0" * 64}}
    r = verify_with("UPDATE events SET record = ? WHERE seq = ?", json.dumps(altered), seq)
    assert not r.ok and r.bad_seq == seq and "tombstone's digest does not link" in r.problem
    r = verify_with("UPDATE events SET body = 'smuggled' WHERE seq = ?", seq)
    assert not r.ok and r.bad_seq == seq and "keeps content outside its digest (body)" in r.problem
    r = verify_with("UPDATE events SET flow_id = 'other' WHERE seq = ?", seq)
    assert not r.ok and "time, kind or flow of one of its tombstones" in r.problem
    r = verify_with("UPDATE events SET kind = 'checkpoint' WHERE seq = ?", seq)
    assert not r.ok and r.bad_seq == seq and "never purged" in r.problem
    assert verify_store(con, key.public).ok
    con.close()


def _old_form_1_store(db: Path, key: SigningKey, count: int) -> None:
    """A store as versions before chain form 2 wrote it, its events 100 days old."""
    events, prev = [], GENESIS
    for i in range(count):
        event = Event(kind="request", flow_id=f"old{i}", ts=OLD, body=MARKER)
        seal(event, i, prev, chain_format=1)
        events.append(event)
        prev = event.hash
    checkpoint = Event(kind="checkpoint", ts=OLD, detail={
        "head_seq": count - 1, "head_hash": prev, "key_id": key.key_id,
        "signature": key.sign(checkpoint_message(count - 1, prev))})
    seal(checkpoint, count, prev, chain_format=1)
    con = duckdb.connect(str(db))
    con.execute(schema_sql())
    appender = con.appender("events")
    appender.append_rows([e.row() for e in [*events, checkpoint]])
    appender.flush()
    con.close()


def test_form_1_events_are_kept_and_counted(tmp_path: Path, key: SigningKey) -> None:
    db = tmp_path / "w.duckdb"
    _old_form_1_store(db, key, 3)
    store = Store(db, key)
    store.start()
    report = purge(store, timedelta(days=30), "30d", "cli:ops")
    store.close()
    assert (report.purged, report.kept_form1, report.purge_events) == (0, 3, [])
    con = connect(db, read_only=True)
    assert verify_store(con, key.public).status == "ok"
    assert _contents(con, MARKER) == 3
    con.close()


def test_holds_are_placed_and_released_on_the_chain(tmp_path: Path, key: SigningKey) -> None:
    store = _filled(tmp_path / "w.duckdb", key)
    hold = place_hold(store, "sec-lead", "incident 42", flow_id="f-old")
    with pytest.raises(HoldError, match="no flow nope"):
        place_hold(store, "sec-lead", "x", flow_id="nope")
    with pytest.raises(HoldError, match="not both nor neither"):
        place_hold(store, "sec-lead", "x")
    with pytest.raises(HoldError, match="needs a reason"):
        place_hold(store, "sec-lead", " ", user="bob")
    assert [h["flow_id"] for h in active_holds(store.reader())] == ["f-old"]
    assert purge(store, timedelta(days=30), "30d", "ops").purged == 5  # f-held, f-mallory, the access event
    release_hold(store, "sec-lead", hold["hold_id"], "closed")
    with pytest.raises(HoldError, match="no hold"):
        release_hold(store, "sec-lead", hold["hold_id"], "again")
    assert active_holds(store.reader()) == []
    assert purge(store, timedelta(days=30), "30d", "ops").purged == 2
    store.close()
    con = connect(tmp_path / "w.duckdb", read_only=True)
    result = verify_store(con, key.public)
    assert result.ok and (result.purges, result.tombstones) == (2, 7)
    holds = [e for e in iter_events(con) if e.kind == "hold"]
    assert [(e.fate, e.user, e.reason) for e in holds] == [("placed", "sec-lead", "incident 42"),
                                                           ("released", "sec-lead", "closed")]
    con.close()


def test_a_purge_on_the_stopped_store_leaves_no_removed_bytes_in_the_file(tmp_path: Path, key: SigningKey) -> None:
    """DuckDB keeps replaced blocks in the file; compaction (what `warden purge` runs on a stopped store) drops them."""
    import os

    from addons.store.compaction import compact

    db = tmp_path / "w.duckdb"
    store = Store(db, key)
    store.start()
    for n in range(300):  # random bytes: DuckDB's compression cannot hide the marker
        store.submit(Event(kind="request", flow_id=f"old{n}", ts=OLD, body=MARKER + os.urandom(600))).result(10)
    for n in range(300):
        store.submit(Event(kind="request", flow_id=f"new{n}", body=KEPT + os.urandom(600))).result(10)
    store.close()  # DuckDB writes its blocks to the file
    store = Store(db, key)
    store.start()
    purge(store, timedelta(days=30), "30d", "cli:ops")
    store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert on_disk.count(MARKER) > 0  # the purge alone: the rows are tombstones, the old blocks still hold bodies
    sizes = compact(db)
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert on_disk.count(MARKER) == 0 and on_disk.count(KEPT) == 300
    assert sizes["bytes_after"] < sizes["bytes_before"]
    con = connect(db, read_only=True)
    assert verify_store(con, key.public).status == "ok"
    con.close()


def test_a_purge_stops_at_an_event_that_does_not_match_its_hash(tmp_path: Path, key: SigningKey) -> None:
    """Tampering is evidence: a purge never removes the content of an event whose hash no longer matches it."""
    from addons.store.retention import PurgeRefused

    db = tmp_path / "w.duckdb"
    _filled(db, key).close()
    con = duckdb.connect(str(db))
    con.execute("UPDATE events SET body = 'rewritten' WHERE flow_id = 'f-old' AND kind = 'request'")
    con.close()
    store = Store(db, key)
    store.start()
    with pytest.raises(PurgeRefused, match="does not match its hash"):
        purge(store, timedelta(days=30), "30d", "cli:ops")
    store.close()
    con = connect(db, read_only=True)
    assert _contents(con, b"rewritten") == 1 and _contents(con, MARKER) >= 3  # nothing was removed
    assert con.execute("SELECT count(*) FROM events WHERE kind = 'purge'").fetchall()[0][0] == 0
    con.close()


FORGE = """
import os, sys, tempfile
from pathlib import Path
from addons.store.database import Store
from addons.store.events import Event, event_digest
from addons.store.keys import SigningKey
from addons.store.queries import flow_events
from addons.store.retention import _tombstone_rows
from addons.store.tombstones import digests_sha256, kept_sha256
store = Store(Path(sys.argv[1]), SigningKey.load_or_create(Path(tempfile.mkdtemp()) / "not-the-key"))
def task(writer):
    cursor = writer.reader(); batch = flow_events(cursor, sys.argv[2]); cursor.close()
    digests = [event_digest(e) for e in batch]
    purge = Event(kind="purge", user="warden:retention", fate="purged", reason="retention 1d", detail={
        "period": "1d", "cutoff": "2999-01-01T00:00:00", "first_seq": batch[0].seq, "last_seq": batch[-1].seq,
        "count": len(batch), "digests_sha256": digests_sha256(digests), "kept_sha256": kept_sha256(batch),
        "held_flows": [], "held_users": [], "spared_held": 0, "kept_form1": 0})
    writer.append_with_change(purge, _tombstone_rows(writer.head.seq + 1, [e.seq for e in batch], digests))
store.on_writer(task)
os._exit(0)  # never close: closing would sign the forged purge, and the forger has no key to sign with
"""


def test_a_purge_forged_on_the_stopped_files_without_the_key_breaks_verify(tmp_path: Path, key: SigningKey) -> None:
    """Someone who can write the stopped store's files but holds no signing key appends a purge of a held flow and
    tombstones it: every digest still links, so only the rule that a purge is signed at once catches it."""
    import subprocess
    import sys

    db = tmp_path / "w.duckdb"
    _filled(db, key).close()
    forged = subprocess.run([sys.executable, "-c", FORGE, str(db), "f-held"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[3])
    assert forged.returncode == 0, forged.stderr
    con = connect(db, read_only=True)
    result = verify_store(con, key.public)
    con.close()
    assert result.status == "broken" and "the purge is not signed at once" in (result.problem or "")
