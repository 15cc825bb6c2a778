"""The store below the gateway: group commit, the hash chain, checkpoints, verification."""

from __future__ import annotations

import dataclasses
import re
from concurrent.futures import wait
from pathlib import Path

import duckdb
import pytest

from addons.events import Event, chain_hash
from addons.journal import journal_path, read_journal
from addons.keys import SigningKey
from addons.queries import iter_events, verify_chain, verify_events
from addons.store import Store, StoreError, connect

ROOT = Path(__file__).resolve().parents[2]


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
    result = verify_chain(store.reader(), key.public)
    assert result.ok and result.checkpoints >= 1, result


def test_reopen_continues_the_chain(tmp_path: Path, key: SigningKey) -> None:
    for round_ in range(2):
        s = Store(tmp_path / "w.duckdb", key)
        s.start()
        for i in range(3):
            s.submit(Event(kind="request", flow_id=f"{round_}-{i}")).result(timeout=10)
        s.close()
    con = connect(tmp_path / "w.duckdb", read_only=True)
    result = verify_chain(con, key.public)
    assert result.ok and result.events == 8 and result.checkpoints == 2  # one signed head per shutdown


def test_a_second_process_cannot_open_a_held_store(store: Store) -> None:
    import subprocess
    import sys

    code = f"from addons.store import connect; connect({str(store.path)!r}, read_only=True)"
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
    result = verify_chain(store.reader(), key.public)
    assert result.ok and result.events == 2


def test_a_crash_loses_no_committed_event(tmp_path: Path, key: SigningKey) -> None:
    """A process killed right after its commits: the next open loads them from the journal."""
    import subprocess
    import sys

    code = f"""
import os
from addons.events import Event
from addons.keys import SigningKey
from addons.store import Store
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
    result = verify_chain(con, key.public)
    assert result.ok and result.events == 50
    con.close()
    reopened = Store(tmp_path / "w.duckdb", key)
    assert reopened.head.seq == 49
    reopened.close()


def test_no_update_or_delete_in_the_code() -> None:
    """Append-only: nothing in the gateway or CLI rewrites or removes an event."""
    pattern = re.compile(r"\b(UPDATE|DELETE\s+FROM|INSERT\s+OR\s+REPLACE|TRUNCATE)\b")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in ("addons", "scripts")
        for path in (ROOT / folder).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders


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
