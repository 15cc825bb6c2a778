"""The store below the gateway: group commit, the hash chain, checkpoints, verification."""

from __future__ import annotations

import dataclasses
import re
from concurrent.futures import wait
from pathlib import Path

import duckdb
import pytest

from addons.store.chainwalk import verify_store
from addons.store.database import Store, StoreError, connect
from addons.store.events import Event, chain_hash
from addons.store.journal import journal_path, read_journal
from addons.store.keys import SigningKey
from addons.store.queries import iter_events
from addons.store.verification import verify_events
from tests.forgery import resign

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return SigningKey.load_or_create(tmp_path / "sign.key")


@pytest.fixture
def store(tmp_path: Path, key: SigningKey):
    s = Store(tmp_path / "w.duckdb", key, checkpoint_every=50)
    s.start()
    yield s
    s.close()


def test_committed_before_the_future_resolves(store: Store) -> None:
    seq, digest = store.submit(Event(kind="request", flow_id="f1", body=b"hello")).result(timeout=10)
    # Committed: durable in the journal the moment the future resolves...
    [journaled] = read_journal(journal_path(store.path))
    assert (journaled.seq, journaled.hash, journaled.body) == (seq, digest, b"hello")
    # ...and in DuckDB once loaded (sync forces the load a query needs).
    store.sync()
    reader = store.reader()
    assert reader.execute("SELECT hash FROM events WHERE seq = ?", [seq]).fetchall() == [(digest,)]
    # Loaded: the journal keeps only its anchor, the event DuckDB now ends at.
    assert [(e.seq, e.hash) for e in read_journal(journal_path(store.path))] == [(seq, digest)]


def test_event_loop_waiters_are_settled_per_batch_and_a_waiter_that_gave_up_is_skipped(
        store: Store, monkeypatch) -> None:
    import asyncio
    import os

    async def scenario() -> None:
        results = await asyncio.gather(*(store.commit(Event(kind="request", flow_id=f"a{i}")) for i in range(50)))
        assert sorted(seq for seq, _ in results) == list(range(results[0][0], results[0][0] + 50))
        [journaled] = [e for e in read_journal(journal_path(store.path)) if e.flow_id == "a7"]
        assert (journaled.seq, journaled.hash) == results[7]  # durable when the future resolves
        abandoned = store.commit(Event(kind="request", flow_id="abandoned"))
        abandoned.cancel()  # the recorder's timeout fired first: the commit still lands, nobody is told
        assert (await store.commit(Event(kind="request", flow_id="next")))[0] > 0

        def disk_full(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fdatasync", disk_full)
        with pytest.raises(StoreError, match="could not commit: OSError"):
            await store.commit(Event(kind="request", flow_id="lost"))

    asyncio.run(scenario())
    assert store.failures == 1


def test_group_commit_keeps_a_contiguous_chain(store: Store, key: SigningKey) -> None:
    futures = [store.submit(Event(kind="request", flow_id=f"f{i}", body=b"x" * i)) for i in range(2000)]
    done, _ = wait(futures, timeout=60)
    assert len({f.result()[0] for f in done}) == 2000
    store.sync()
    seqs = [s for (s,) in store.reader().execute("SELECT seq FROM events ORDER BY seq").fetchall()]
    assert seqs == list(range(len(seqs)))  # requests and interleaved checkpoints, no gap
    assert store.commits < 2000  # batched, not one transaction per event
    result = verify_store(store.reader(), key.public)
    assert result.ok and result.checkpoints >= 1, result


def test_reopen_continues_the_chain(tmp_path: Path, key: SigningKey) -> None:
    for round_ in range(2):
        s = Store(tmp_path / "w.duckdb", key)
        s.start()
        for i in range(3):
            s.submit(Event(kind="request", flow_id=f"{round_}-{i}")).result(timeout=10)
        s.close()
    con = connect(tmp_path / "w.duckdb", read_only=True)
    result = verify_store(con, key.public)
    assert result.ok and result.events == 8 and result.checkpoints == 2  # one signed head per shutdown


def test_a_second_process_cannot_open_a_held_store(store: Store) -> None:
    import subprocess
    import sys

    code = f"from addons.store.database import connect; connect({str(store.path)!r}, read_only=True)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0 and "in use by a running gateway" in result.stderr


def test_failed_commit_fails_every_waiter_and_the_chain_stays_whole(store: Store, key: SigningKey, monkeypatch) -> None:
    import os

    store.submit(Event(kind="request", flow_id="ok")).result(timeout=10)
    real_fdatasync = os.fdatasync

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", disk_full)
    with pytest.raises(StoreError, match="could not commit: OSError"):
        store.submit(Event(kind="request", flow_id="lost", body=b"x" * 100)).result(timeout=10)
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)
    assert store.failures == 1
    store.submit(Event(kind="request", flow_id="after")).result(timeout=10)
    assert [e.flow_id for e in read_journal(journal_path(store.path))][-1] == "after"  # cut back, not torn
    store.sync()
    result = verify_store(store.reader(), key.public)
    assert result.ok and result.events == 2


def test_a_crash_loses_no_committed_event(tmp_path: Path, key: SigningKey) -> None:
    """A process killed right after its commits: the next open loads them from the journal."""
    import subprocess
    import sys

    code = f"""
import os
from tests.forgery import resign
from addons.store.events import Event
from addons.store.keys import SigningKey
from addons.store.database import Store
s = Store({str(tmp_path / 'w.duckdb')!r}, SigningKey.load_or_create({str(tmp_path / 'sign.key')!r}))
s.start()
for i in range(50):
    s.submit(Event(kind="request", flow_id=f"f{{i}}")).result(timeout=10)
os._exit(9)  # like SIGKILL: no close, no load, no final checkpoint
"""
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 9
    with open(journal_path(tmp_path / "w.duckdb"), "ab") as f:
        f.write(b'{"seq": 50, "ts": "2026-')  # a torn write that was never acknowledged
    con = connect(tmp_path / "w.duckdb", read_only=True)  # the CLI's way in: loads the journal first
    result = verify_store(con, key.public)
    assert result.ok and result.events == 50
    con.close()
    reopened = Store(tmp_path / "w.duckdb", key)
    # every committed event kept (seq 0..49), then the startup event naming them, then its checkpoint
    assert reopened.found_unsigned == {"first_seq": 0, "last_seq": 49, "count": 50, "startup_seq": 50}
    assert reopened.head.seq == 51
    reopened.close()


def test_no_update_or_delete_in_the_code() -> None:
    """Append-only: nothing in the gateway or CLI rewrites or removes an event, but the one exception the design
    allows: a retention purge turning old rows into tombstones (their content NULL, their digest kept)."""
    pattern = re.compile(r"\b(UPDATE|DELETE\s+FROM|INSERT\s+OR\s+REPLACE|TRUNCATE)\b")
    offenders = [
        (str(path.relative_to(ROOT)), line.strip())
        for folder in ("addons", "scripts")
        for path in (ROOT / folder).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    tombstoning = ('"""UPDATE events SET "user" = NULL, host = NULL, status = NULL, fate = NULL, decision = NULL, '
                   "body = NULL,")
    assert offenders == [("addons/store/retention.py", tombstoning)]


def chain(n: int, key: SigningKey | None = None) -> list[Event]:
    events, prev = [], "0" * 64
    for i in range(n):
        e = Event(kind="request", flow_id=f"f{i}", body=f"b{i}".encode(), seq=i, prev_hash=prev)
        e.hash = chain_hash(prev, e)
        prev = e.hash
        events.append(e)
    return events


def rehash(events: list[Event]) -> list[Event]:
    prev = events[0].prev_hash
    for e in events:
        e.stored_record = None
        e.prev_hash = prev
        e.hash = chain_hash(prev, e)
        prev = e.hash
    return events


def test_verify_names_changed_removed_and_reordered_events() -> None:
    assert verify_events(iter(chain(5)), None).ok
    changed = chain(5)
    changed[2].body = b"other"
    assert verify_events(iter(changed), None).bad_seq == 2
    removed = chain(5)
    del removed[3]
    r = verify_events(iter(removed), None)
    assert not r.ok and r.bad_seq == 4 and "missing" in r.problem
    swapped = chain(5)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    r = verify_events(iter(swapped), None)
    assert not r.ok and r.bad_seq == 2


def test_a_rewritten_history_fails_on_its_signed_checkpoint(tmp_path: Path, key: SigningKey) -> None:
    """Recomputing every hash after an edit fools the chain, not the signature made with the real key."""
    s = Store(tmp_path / "w.duckdb", key, checkpoint_every=3)
    s.start()
    for i in range(5):
        s.submit(Event(kind="request", flow_id=f"f{i}", body=b"original")).result(timeout=10)
    s.close()
    events = list(iter_events(connect(tmp_path / "w.duckdb", read_only=True)))
    assert verify_events(iter(events), key.public).ok
    forged = [dataclasses.replace(e, stored_record=None) for e in events]
    forged[1].body = b"forged"
    checkpoint = next(e for e in forged if e.kind == "checkpoint")
    detail = dict(checkpoint.detail)
    rehash(forged)
    detail["head_hash"] = forged[detail["head_seq"]].hash  # the forger updates what the checkpoint vouches for
    checkpoint.detail = detail
    rehash(forged)
    result = verify_events(iter(forged), key.public)
    assert not result.ok and "signature is not valid" in result.problem
    other = SigningKey.load_or_create(tmp_path / "other.key")
    assert "not by the given key" in verify_events(iter(events), other.public).problem


def test_store_file_is_plain_duckdb(store: Store) -> None:
    store.submit(Event(kind="request", flow_id="x", host="api.openai.com")).result(timeout=10)
    cols = [r[0] for r in store.reader().execute("DESCRIBE events").fetchall()]
    assert cols[:3] == ["seq", "ts", "kind"] and cols[-2:] == ["prev_hash", "hash"]
    assert isinstance(store.reader(), duckdb.DuckDBPyConnection)


# -- a record that cannot be forged (issue 9, items 13 and 14) -------------------------------------------


def test_a_chain_that_does_not_begin_at_its_genesis_fails() -> None:
    """Early events deleted and the rest re-hashed: whatever the first seq or prev_hash, not from the genesis."""
    kept_seqs = chain(6)[3:]
    kept_seqs[0].prev_hash = "0" * 64
    r = verify_events(iter(rehash(kept_seqs)), None)
    assert not r.ok and r.bad_seq == 3 and "does not begin at its genesis" in r.problem
    other_genesis = chain(3)
    other_genesis[0].prev_hash = "f" * 64
    r = verify_events(iter(rehash(other_genesis)), None)
    assert not r.ok and r.bad_seq == 0 and "genesis" in r.problem


def _crash_with_events(tmp_path: Path, count: int, checkpoint_every: int = 1000) -> Path:
    """A store whose writer was killed right after ``count`` commits (no load, no final checkpoint)."""
    import subprocess
    import sys

    db = tmp_path / "w.duckdb"
    code = f"""
import os
from addons.store import database as store
from tests.forgery import resign
from addons.store.events import Event
from addons.store.keys import SigningKey
store.LOAD_INTERVAL = 3600  # keep the events in the journal, as a crash between loads does
s = store.Store({str(db)!r}, SigningKey.load_or_create({str(tmp_path / 'sign.key')!r}),
                checkpoint_every={checkpoint_every})
s.start()
for i in range({count}):
    s.submit(Event(kind="request", flow_id=f"f{{i}}")).result(timeout=10)
os._exit(9)
"""
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 9
    return db


def _digest(*paths: Path) -> list[str]:
    import hashlib

    return [hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else "absent" for p in paths]


def test_unsigned_tail_is_its_own_outcome_and_names_the_signed_heads(tmp_path: Path, key: SigningKey) -> None:
    db = _crash_with_events(tmp_path, 12, checkpoint_every=5)
    con = connect(db, read_only=True)
    result = verify_store(con, key.public)
    con.close()
    assert result.ok and result.status == "unsigned_tail"
    # a checkpoint after every five events: heads seq 4 and 10 signed, the last two requests not
    assert [(h["head_seq"], h["key_id"]) for h in result.heads] == [(4, key.key_id), (10, key.key_id)]
    assert result.signed_seq == 10 and result.unsigned_tail == 2
    reopened = Store(db, key)
    reopened.start()
    checkpoint = reopened.checkpoint_now()
    assert checkpoint["head_seq"] == reopened.head.seq - 1 and checkpoint["key_id"] == key.key_id
    assert reopened.checkpoint_now() == checkpoint  # nothing new: the same checkpoint covers the chain
    reopened.sync()
    result = verify_store(reopened.reader(), key.public)
    assert result.status == "ok" and result.heads[-1]["head_hash"] == checkpoint["head_hash"]
    reopened.close()


def test_a_damaged_early_journal_line_stops_start_up_and_the_repair_keeps_a_copy(
    tmp_path: Path, key: SigningKey
) -> None:
    """Old code: the damaged line and every later committed one were dropped, and their seqs reused."""
    from addons.store.database import JournalDamaged
    from addons.store.recovery import repair_journal

    db = _crash_with_events(tmp_path, 8)
    journal = journal_path(db)
    lines = journal.read_bytes().split(b"\n")
    assert len(lines) == 9  # eight events and the final newline
    lines[2] = lines[2].replace(b'"f2"', b'"fX"')  # one changed byte in line 3: its hash no longer matches
    damaged = b"\n".join(lines)
    journal.write_bytes(damaged)
    for opener in (lambda: Store(db, key), lambda: connect(db, read_only=True), lambda: connect(db)):
        with pytest.raises(JournalDamaged) as info:
            opener()
        assert info.value.path == journal and info.value.line == 3
        assert f"{journal}: line 3: seq=2: the hash does not match" in str(info.value)
        assert "repair-journal" in str(info.value) and "keeps a copy" in str(info.value)
    assert journal.read_bytes() == damaged  # refused without changing anything
    assert duckdb.connect(str(db), read_only=True).execute("SELECT count(*) FROM events").fetchone() == (0,)

    report = repair_journal(db)
    assert report["repaired"] and report["loaded"] == 2 and report["repair_event_seq"] == 2
    assert Path(report["copy"]).read_bytes() == damaged
    s = Store(db, key)
    assert s.head.seq == 4  # the repair (seq 2), then the startup event naming 0..2 as found unsigned, signed
    assert s.found_unsigned == {"first_seq": 0, "last_seq": 2, "count": 3, "startup_seq": 3}
    s.close()
    con = connect(db, read_only=True)
    [repair] = [e for e in iter_events(con) if e.kind == "journal_repair"]
    assert repair.detail["journal_copy"] == Path(report["copy"]).name and repair.detail["lines"] == 8
    assert any("line 3" in p for p in repair.detail["problems"])
    assert verify_store(con, key.public).ok
    con.close()


def test_a_chain_break_between_journal_lines_stops_start_up(tmp_path: Path, key: SigningKey) -> None:
    from addons.store.database import JournalDamaged

    db = _crash_with_events(tmp_path, 5)
    journal = journal_path(db)
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join(lines[:1] + lines[2:]))  # line 2 (seq 1) removed whole
    with pytest.raises(JournalDamaged, match=r"line 2: seq=2 does not continue line 1"):
        Store(db, key)


def test_a_journal_that_does_not_continue_the_store_stops_start_up(tmp_path: Path, key: SigningKey) -> None:
    from addons.store.database import JournalDamaged

    s = Store(tmp_path / "w.duckdb", key)
    s.start()
    for i in range(3):
        s.submit(Event(kind="request", flow_id=f"f{i}")).result(timeout=10)
    s.close()
    other = _crash_with_events(tmp_path / "other", 6)
    journal_path(tmp_path / "w.duckdb").write_bytes(journal_path(other).read_bytes())
    with pytest.raises(JournalDamaged, match=r"line 4: seq=3 differs from the store's event"):
        Store(tmp_path / "w.duckdb", key)


def test_an_emptied_journal_is_detected(tmp_path: Path, key: SigningKey) -> None:
    """Old code: a journal truncated to nothing lost its events and verify passed."""
    from addons.store.database import JournalDamaged

    db = _crash_with_events(tmp_path, 6)
    db = _crash_with_events(tmp_path, 6)  # loads the first six; six more only in the journal after the anchor
    # the anchor, the second open's startup event and its checkpoint, six more
    assert len(read_journal(journal_path(db))) == 9
    journal_path(db).write_bytes(b"")
    for opener in (lambda: Store(db, key), lambda: connect(db, read_only=True)):
        with pytest.raises(JournalDamaged, match=r"line 1: the journal is empty or missing"):
            opener()


def test_reading_writes_nothing_and_sees_the_journal(tmp_path: Path, key: SigningKey) -> None:
    """Old code: a read-only open loaded the journal into the file and emptied it."""
    db = _crash_with_events(tmp_path, 7)
    journal = journal_path(db)
    before = _digest(db, journal, db.with_name(db.name + ".wal"))
    con = connect(db, read_only=True)
    assert [e.flow_id for e in iter_events(con)] == [f"f{i}" for i in range(7)]
    assert con.execute("SELECT count(*) FROM events WHERE kind = 'request'").fetchone() == (7,)
    assert verify_store(con, key.public).status == "no_signed_checkpoint"
    con.close()
    assert _digest(db, journal, db.with_name(db.name + ".wal")) == before


def _legacy_store(db: Path, key: SigningKey, count: int) -> None:
    """A store as versions before chain form 2 wrote it (the old sealing path): form 1 and an empty journal."""
    from addons.store.database import schema_sql
    from addons.store.events import checkpoint_message, seal

    events, prev = [], "0" * 64
    for i in range(count):
        event = Event(kind="request", flow_id=f"old{i}", body=b"old")
        seal(event, i, prev, chain_format=1)
        events.append(event)
        prev = event.hash
    detail = {"head_seq": count - 1, "head_hash": prev, "key_id": key.key_id,
              "signature": key.sign(checkpoint_message(count - 1, prev))}
    checkpoint = Event(kind="checkpoint", detail=detail)
    seal(checkpoint, count, prev, chain_format=1)
    con = duckdb.connect(str(db))
    con.execute(schema_sql())
    appender = con.appender("events")
    appender.append_rows([e.row() for e in [*events, checkpoint]])
    appender.flush()
    con.close()
    journal_path(db).write_bytes(b"")


def test_a_store_in_the_old_hash_form_still_verifies_and_continues_in_the_new(tmp_path: Path, key: SigningKey) -> None:
    db = tmp_path / "w.duckdb"
    _legacy_store(db, key, 4)
    con = connect(db, read_only=True)
    old = list(iter_events(con))
    assert verify_store(con, key.public).status == "ok" and all(e.chain_format is None for e in old)
    con.close()
    s = Store(db, key)  # an empty journal beside a form-1 head: the old clean stop, accepted
    s.start()
    s.submit(Event(kind="request", flow_id="new")).result(timeout=10)
    s.close()
    con = connect(db, read_only=True)
    events = list(iter_events(con))
    result = verify_store(con, key.public)
    assert result.status == "ok" and result.checkpoints == 2, result
    assert [e.chain_format for e in events[5:]] == [2, 2]
    downgraded = [dataclasses.replace(e, stored_record=None) for e in events[:7]]
    from addons.store.events import seal

    seal(downgraded[6], 6, downgraded[5].hash, chain_format=1)  # back to form 1 after form 2
    r = verify_events(iter(downgraded), key.public)
    assert not r.ok and r.bad_seq == 6 and "chain format 1 is not allowed after format 2" in r.problem


def test_one_event_is_proven_up_to_a_signed_head_with_digests_only(tmp_path: Path, key: SigningKey) -> None:
    from addons.store.proofs import prove_inclusion, verify_inclusion

    s = Store(tmp_path / "w.duckdb", key)
    s.start()
    for i in range(10):
        s.submit(Event(kind="request", flow_id=f"f{i}", body=f"secret body {i}".encode())).result(timeout=10)
    s.close()
    events = list(iter_events(connect(tmp_path / "w.duckdb", read_only=True)))
    checkpoint = events[-1]
    assert checkpoint.kind == "checkpoint" and checkpoint.detail["head_seq"] == 9
    proof = prove_inclusion(events[3:10], checkpoint)
    assert len(proof.digests) == 6 and b"secret body 5" not in repr(proof.as_dict()).encode()
    assert verify_inclusion(events[3], proof, key.public) is None
    changed = dataclasses.replace(events[3], stored_record=None, body=b"other")
    assert "links do not lead" in verify_inclusion(changed, proof, key.public)
    proof.digests[2] = "00" * 32
    assert "links do not lead" in verify_inclusion(events[3], proof, key.public)
    other = SigningKey.load_or_create(tmp_path / "other.key")
    proof = prove_inclusion(events[3:10], checkpoint)
    assert "not by the given key" in verify_inclusion(events[3], proof, other.public)


# -- laundering an edited tail through a restart; heads kept outside the store -----------------------------


def test_an_unsigned_tail_found_at_open_is_recorded_signed_and_reported_as_signed_late(
    tmp_path: Path, key: SigningKey, caplog
) -> None:
    """Old code: the gateway signed events it found unsigned as if they had been signed in the normal course."""
    db = _crash_with_events(tmp_path, 12, checkpoint_every=5)  # heads 4 and 10 signed; seq 12, 13 not
    with caplog.at_level("WARNING", logger="warden.store"):
        s = Store(db, key)
    assert s.found_unsigned == {"first_seq": 12, "last_seq": 13, "count": 2, "startup_seq": 14}
    assert any("found 2 events no checkpoint signed (seq 12..13)" in r.getMessage() for r in caplog.records)
    s.start()
    s.sync()
    startup = [e for e in iter_events(s.reader()) if e.kind == "startup"]
    assert [e.detail["unsigned_tail"] for e in startup] == [{"first_seq": 12, "last_seq": 13, "count": 2}]
    assert startup[0].detail["last_signed_head"]["seq"] == 10
    assert startup[0].detail["journal"]["events_loaded"] == 14
    result = verify_store(s.reader(), key.public)
    assert result.status == "ok" and result.heads[-1]["head_seq"] == 14  # signed at once
    assert result.signed_late == [{"first_seq": 12, "last_seq": 13, "count": 2, "startup_seq": 14}]
    s.close()
    again = Store(db, key)  # a clean stop signed the final head: nothing found unsigned
    assert again.found_unsigned is None
    again.close()


def test_events_without_any_checkpoint_are_their_own_status() -> None:
    """Old code: a chain no checkpoint signed was only an 'unsigned tail'."""
    result = verify_events(iter(chain(4)), None)
    assert result.ok and result.checkpoints == 0 and result.status == "no_signed_checkpoint"
    assert verify_events(iter([]), None).status == "ok"


def test_a_startup_event_that_names_another_range_breaks_the_chain(tmp_path: Path, key: SigningKey) -> None:
    db = _crash_with_events(tmp_path, 3)
    Store(db, key).close()
    events = list(iter_events(connect(db, read_only=True)))
    forged = [dataclasses.replace(e, stored_record=None) for e in events]
    startup = next(e for e in forged if e.kind == "startup")
    startup.detail = {**startup.detail, "unsigned_tail": {"first_seq": 2, "last_seq": 2, "count": 1}}
    result = verify_events(iter(rehash(forged)), None)
    assert not result.ok and "the startup event names unsigned events seq 2..2" in result.problem


def test_checkpoint_log_lines_are_parsed_and_other_lines_ignored() -> None:
    from addons.store.verification import parse_heads

    h = "ab" * 32
    lines = [
        "[10:00:01.123] Loading script warden",
        f"[10:00:02.000] warden checkpoint seq=5 head_seq=4 head_hash={h} key_id=k1 signature=c2lnbmF0dXJl",
        f"2026-11-30 warden.store INFO warden checkpoint seq=11 head_seq=10 head_hash={h} key_id=k1 signature=x_y-z=",
        f"warden checkpoint seq=12 head_seq=11 head_hash={h[:-2]} key_id=k1 signature=s",  # a cut hash
        "warden checkpoint seq=x head_seq=1",
        "",
    ]
    assert parse_heads(lines) == [
        {"seq": 5, "head_seq": 4, "head_hash": h, "key_id": "k1", "signature": "c2lnbmF0dXJl", "line": 2},
        {"seq": 11, "head_seq": 10, "head_hash": h, "key_id": "k1", "signature": "x_y-z=", "line": 3},
    ]
    assert parse_heads(["nothing here"]) == []


def test_a_history_re_signed_with_the_key_verifies_alone_but_not_against_the_logged_heads(
    tmp_path: Path, key: SigningKey, caplog
) -> None:
    from addons.store.verification import match_heads, parse_heads

    with caplog.at_level("INFO", logger="warden.store"):
        s = Store(tmp_path / "w.duckdb", key, checkpoint_every=3)
        s.start()
        for i in range(7):
            s.submit(Event(kind="request", flow_id=f"f{i}", body=b"original")).result(timeout=10)
        s.close()
    logged = parse_heads(r.getMessage() for r in caplog.records)
    assert len(logged) == 3  # after 3 and 6 requests, and the final head at close
    events = list(iter_events(connect(tmp_path / "w.duckdb", read_only=True)))
    ok = match_heads(verify_events(iter(events), key.public), logged, "gateway.log")
    assert ok.status == "ok" and ok.external_heads["matched"] == 3 and not ok.external_heads["unmatched"]

    forged = resign([dataclasses.replace(e, stored_record=None) for e in events], key)
    forged[1].body = b"forged"
    resign(forged, key)
    alone = verify_events(iter(forged), key.public)
    assert alone.status == "ok"  # the chain and every signature hold by themselves
    caught = match_heads(alone, logged, "gateway.log")
    assert caught.status == "broken" and caught.external_heads["matched"] == 0
    assert "3 of 3 external heads are not in the chain" in caught.problem and "gateway.log line 1" in caught.problem

    cut = match_heads(verify_events(iter(events[:5]), key.public), logged, "gateway.log")  # the tail cut off
    assert cut.status == "broken" and cut.external_heads["matched"] == 1
    assert "no checkpoint with that seq in the chain" in cut.problem
