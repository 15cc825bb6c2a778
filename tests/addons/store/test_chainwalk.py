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
from addons.store.database import Store, connect
from addons.store.events import Event, utcnow
from addons.store.keys import SigningKey
from addons.store.queries import iter_events
from addons.store.retention import purge
from addons.store.verification import verify_events

OLD = utcnow() - timedelta(days=100)


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
                               detail={"n": n, "text": "ünïcode \u2028"})).result(timeout=10)
    purge(store, timedelta(days=30), "30d", "test")
    store.close()


def _both(db: Path, key: SigningKey) -> tuple[dict, dict, dict]:
    """verify_events over every event; verify_store in this process; verify_store with worker processes."""
    con = connect(db, read_only=True)
    try:
        slow = verify_events(iter_events(con), key.public).as_dict()
        fast = verify_store(con, key.public).as_dict()
        parallel = verify_store(con, key.public, path=db).as_dict()
    finally:
        con.close()
    return slow, fast, parallel


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
}


@pytest.mark.parametrize("tampering", TAMPERING)
def test_the_fast_walk_answers_as_the_event_walk(tmp_path: Path, key: SigningKey, tampering: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chainwalk, "RANGE", 16)  # many ranges...
    monkeypatch.setattr(chainwalk, "PARALLEL_FROM", 1)  # ...and worker processes, even for a small store
    db = tmp_path / "w.duckdb"
    _store(db, key)
    con = duckdb.connect(str(db))
    TAMPERING[tampering](con)
    con.close()
    slow, fast, parallel = _both(db, key)
    assert fast == slow and parallel == slow
    assert (slow["status"] == "ok") == (tampering == "intact"), slow["problem"]
    if tampering == "intact":
        assert slow["tombstones"] > 0 and slow["checkpoints"] > 2
