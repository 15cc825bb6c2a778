"""The DuckDB event store: one writer thread, group commit, hash chain, signed checkpoints.

The gateway process owns the file (DuckDB lets one process write and no other read beside it).
``commit()`` queues an event and returns an asyncio future that resolves to ``(seq, hash)`` once
the event is committed; the recorder awaits it where the store's invariants require (a request's
event before the request leaves, a response's before the client has it). The writer settles a
whole batch's futures with one wake-up of the event loop; ``submit()`` is the same for threads.
Everything else runs on the writer thread, which drains the queue in batches: one journal write
and fdatasync per batch (the commit, see ``addons/store/journal.py``), and every ``LOAD_INTERVAL`` or
``LOAD_BATCH`` events one Appender flush into DuckDB. Rows are only ever appended; nothing
updates or deletes them.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import duckdb

from addons.store.events import COLUMNS, GENESIS, Event, checkpoint_message, journal_line, seal
from addons.store.journal import Journal, JournalDamaged, StoreError, journal_path, pending_events
from addons.store.keys import SigningKey
from addons.store.queries import iter_events
from addons.store.schema import foreign_objects, schema_sql

log = logging.getLogger("warden.store")

MAX_BATCH = 1024
LOAD_BATCH = 2000  # events: load the journal into DuckDB at least this often...
LOAD_INTERVAL = 0.25  # seconds: ...and at most this long after a commit
_STOP = object()
_CHECKPOINT = object()
_TASK = object()

__all__ = ["JournalDamaged", "Store", "StoreError", "StoreInUse", "connect"]


Waiter = Future | asyncio.Future


def _resolve(future: Waiter, outcome: object) -> None:
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _settle(outcomes: list[tuple[Waiter, object]]) -> None:
    """Resolve futures with results or exceptions, from the writer thread: thread futures at once, asyncio
    futures with one ``call_soon_threadsafe`` per event loop (not one wake-up per event)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, object]]] = defaultdict(list)
    for future, outcome in outcomes:
        if isinstance(future, asyncio.Future):
            by_loop[future.get_loop()].append((future, outcome))
        else:
            _resolve(future, outcome)
    for loop, pending in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_on_loop, pending)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            pass


def _settle_on_loop(pending: list[tuple[asyncio.Future, object]]) -> None:
    for future, outcome in pending:
        if not future.done():  # done: the waiter gave up (timeout) or was cancelled
            _resolve(future, outcome)


class StoreInUse(StoreError):
    """A running gateway holds the file: ask its admin API instead."""


def held_by_another_process(path: Path) -> bool:
    """Whether another process holds a lock on the file ``path`` (as DuckDB does on the store it has open).

    Asked only after DuckDB refused to open the file: its ``IOException`` is one type for every open failure.
    The probe is a non-blocking lock of our own, released at once; DuckDB refuses a second open of a file this
    process already holds before it locks anything, so the probe never closes away a lock of ours."""
    try:
        fd = os.open(path, os.O_RDWR)
        kind = fcntl.LOCK_EX  # conflicts with a reader's shared lock too
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        kind = fcntl.LOCK_SH
    try:
        fcntl.lockf(fd, kind | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: a conflicting lock is held
        return True
    finally:
        os.close(fd)
    return False


def _open_error(path: Path, e: duckdb.IOException) -> StoreError:
    if held_by_another_process(path):
        return StoreInUse(f"{path}: in use by a running gateway (ask its admin API instead): {e}")
    return StoreError(f"{path}: cannot open: {e}")


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path))
    except duckdb.IOException as e:
        raise _open_error(path, e) from None


def connect(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the store file; a running gateway's lock becomes a ``StoreError``, a damaged journal ``JournalDamaged``.

    To write (the gateway, and any command that writes): the journal is checked as at start-up and its
    committed events are loaded into DuckDB. Read-only (flows, show, verify, export): nothing is written;
    the connection is an in-memory database whose ``events`` view is the file's events followed by the
    journal's, checked the same way."""
    path = Path(path)
    if read_only:
        return _read_only(path)
    return _for_writing(path)[0]


def _for_writing(path: Path) -> tuple[duckdb.DuckDBPyConnection, dict]:
    """The store opened to write, the journal checked and loaded; also what was loaded (for the startup event)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = _open(path)
    try:
        con.execute(schema_sql())
        foreign = foreign_objects(con)
        if foreign:  # they would run inside every query of the gateway's, verification's included
            raise StoreError(f"{path}: the store holds what Warden never writes ({'; '.join(foreign)}): the file was "
                             "edited. Check it stopped (warden verify reads it without them), then remove them")
        before = _head(con)
        loaded = _load_journal(con, journal_path(path))
    except BaseException:
        con.close()
        raise
    return con, {"file": journal_path(path).name, "events_loaded": loaded,
                 "duckdb_head_seq": before.seq, "duckdb_head_hash": before.hash}


def _read_only(path: Path) -> duckdb.DuckDBPyConnection:
    if not path.exists():
        raise StoreError(f"{path}: no such store (has the gateway run with --set warden_db={path}?)")
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")  # a CLI shows its own progress
    try:
        try:  # the shared lock is taken here, before the journal is read: no gateway writes it meanwhile
            con.execute("ATTACH '{}' AS store (READ_ONLY)".format(str(path).replace("'", "''")))
        except duckdb.IOException as e:
            raise _open_error(path, e) from None
        if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'store' "
                           "AND table_name = 'events'").fetchall()[0][0]:
            raise StoreError(f"{path}: not a Warden store (no events table)")
        head = _head(con, "store.events")
        pending = pending_events(journal_path(path), head.seq, head.hash, head.anchored)
        con.execute("CREATE TABLE journal_events AS SELECT * FROM store.events LIMIT 0")
        if pending:
            appender = con.appender("journal_events")
            appender.append_rows([e.row() for e in pending])
            appender.flush()
        con.execute("CREATE VIEW events AS SELECT * FROM store.events UNION ALL SELECT * FROM journal_events")
    except BaseException:
        con.close()
        raise
    return con


def _latest_checkpoint(con: duckdb.DuckDBPyConnection) -> dict | None:
    # fetchall, not fetchone: an unfinished result would block the writer's Appender on this connection
    rows = con.execute(
        "SELECT seq, record->'detail' FROM events WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1").fetchall()
    return {"seq": rows[0][0], **json.loads(rows[0][1])} if rows else None


@dataclass
class Head:
    seq: int
    hash: str
    chain_format: int | None = None

    @property
    def anchored(self) -> bool:
        """Written by a version that always keeps its head in the journal (chain form 2)."""
        return (self.chain_format or 1) >= 2


def _head(con: duckdb.DuckDBPyConnection, table: str = "events") -> Head:
    rows = con.execute(f"SELECT seq, hash, TRY_CAST(record->>'chain_format' AS INTEGER) FROM {table} "
                       "ORDER BY seq DESC LIMIT 1").fetchall()
    return Head(*rows[0]) if rows else Head(-1, GENESIS)


def _anchor(con: duckdb.DuckDBPyConnection) -> bytes:
    """The journal line of the store's last event (the journal's first line from now on)."""
    head = _head(con)
    return b"".join(journal_line(e) for e in iter_events(con, head.seq - 1))


def _load_journal(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Append the journal's committed events that DuckDB does not hold yet (checked first); returns how many."""
    head = _head(con)
    missing = pending_events(path, head.seq, head.hash, head.anchored)
    if not missing:
        return 0
    appender = con.appender("events")
    appender.append_rows([e.row() for e in missing])
    appender.flush()
    log.info("warden: loaded %d committed events from %s after an unclean stop", len(missing), path)
    return len(missing)


class Store:
    """The writing side of the store. One per gateway process and file."""

    def __init__(
        self,
        path: str | Path,
        signing_key: SigningKey,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 60.0,
    ) -> None:
        self.path = Path(path)
        self._key = signing_key
        self._every = checkpoint_every
        self._interval = checkpoint_seconds
        self._con, journal = _for_writing(self.path)  # the journal checked and loaded, or JournalDamaged
        # One DuckDB worker: the loads are batched, and on a small machine extra threads only contend.
        self._con.execute("SET threads = 1")
        self._journal = Journal(journal_path(self.path))
        self._journal.reset(_anchor(self._con))
        self.head = _head(self._con)
        self.last_checkpoint = _latest_checkpoint(self._con)
        self._last_checkpoint = -1 if self.last_checkpoint is None else self.last_checkpoint["seq"]
        self._last_checkpoint_at = time.monotonic()
        self._appender = self._con.appender("events")
        self._pending: list[Event] = []
        self._pending_since = 0.0
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.commits = 0
        self.failures = 0
        self.last_error: str | None = None
        self.on_commit: list = []  # callables(batch_size, seconds), e.g. metrics
        self.found_unsigned: dict | None = None
        self._state_unsigned_tail(journal)

    def _state_unsigned_tail(self, journal: dict) -> None:
        """Before anything new is committed or signed: if events follow the last signed checkpoint (a crash, a
        repair, or someone who edited the stopped store's files), say so on the chain, a ``startup`` event
        naming the range, and sign it at once. The signature then covers "these events were found unsigned",
        and ``warden verify`` reports them as signed late, never as signed in the normal course."""
        first = self._last_checkpoint + 1
        if self.head.seq < first:
            return
        last_signed = None if self.last_checkpoint is None else {
            "seq": self.last_checkpoint["head_seq"], "hash": self.last_checkpoint["head_hash"],
            "checkpoint_seq": self.last_checkpoint["seq"]}
        tail = {"first_seq": first, "last_seq": self.head.seq, "count": self.head.seq - first + 1}
        event = Event(kind="startup", reason="unsigned_tail",
                      detail={"unsigned_tail": tail, "last_signed_head": last_signed, "journal": journal})
        future: Future = Future()
        self._commit([(event, future)])
        future.result(timeout=0)  # StoreError if the journal could not be written: the gateway does not start
        self.found_unsigned = {**tail, "startup_seq": event.seq}
        log.warning(
            "warden: found %d events no checkpoint signed (seq %d..%d) after %s; recorded as startup event seq=%d "
            "and signed now: `warden verify` reports them as signed late. If this was not a crash you know of, "
            "compare the store with the 'warden checkpoint' lines kept outside it (warden verify --heads FILE)",
            tail["count"], first, tail["last_seq"],
            ("no signed checkpoint at all" if last_signed is None
             else f"the last signed head (seq={last_signed['seq']})"),
            event.seq,
        )
        self._checkpoint_if_due(force=True)

    # -- the public side ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="warden-store-writer", daemon=True)
            self._thread.start()

    def submit(self, event: Event) -> Future:
        """Queue ``event``; the future resolves to ``(seq, hash)`` when committed, or raises ``StoreError``."""
        return self._enqueue(event, Future())

    def commit(self, event: Event) -> asyncio.Future:
        """``submit`` for the event loop: an asyncio future, settled by the writer without a thread hop per event."""
        return self._enqueue(event, asyncio.get_running_loop().create_future())

    def _enqueue[W: (Future, asyncio.Future)](self, event: Event, future: W) -> W:
        if self._thread is None or not self._thread.is_alive():
            future.set_exception(StoreError("the store writer is not running"))
        else:
            self._queue.put((event, future))
        return future

    def sync(self, timeout: float = 30) -> None:
        """Wait until every committed event is in DuckDB (call before a query that must see them)."""
        future: Future = Future()
        if self._thread is None or not self._thread.is_alive():
            return
        self._queue.put((None, future))
        future.result(timeout=timeout)

    def checkpoint_now(self, timeout: float = 30) -> dict | None:
        """Sign the current head now (through the writer, after what is queued) and return the checkpoint that
        covers the whole chain: ``seq``, ``head_seq``, ``head_hash``, ``key_id``, ``signature``."""
        future: Future = Future()
        if self._thread is None or not self._thread.is_alive():
            raise StoreError("the store writer is not running")
        self._queue.put((_CHECKPOINT, future))
        return future.result(timeout=timeout)

    def on_writer[T](self, task: Callable[[Store], T], timeout: float = 600) -> T:
        """``task(self)`` on the writer thread, after what was queued before it is committed and loaded into DuckDB,
        with nothing committed meanwhile (a purge, a key rotation); here if the writer is not running (a stopped
        store the CLI opened). ``task`` uses the writer-side methods below."""
        if self._thread is None or not self._thread.is_alive():
            self.load_now()
            return task(self)
        future: Future = Future()
        self._queue.put((_TASK, (future, task)))
        return future.result(timeout=timeout)

    # -- the writer side: for on_writer tasks only ----------------------------------------------------

    def load_now(self) -> None:
        """Load every committed event into DuckDB; StoreError if they stay in the journal."""
        self._load()
        if self._pending:
            raise StoreError(f"committed events could not be loaded into DuckDB: {self.last_error}")

    def append_now(self, event: Event) -> None:
        """Commit ``event`` at once; StoreError if it cannot be."""
        future: Future = Future()
        self._commit([(event, future)])
        future.result(timeout=0)

    def sign_now(self) -> dict | None:
        """Sign the head now (nothing if a checkpoint already covers it): the checkpoint that covers the chain."""
        self._checkpoint_if_due(force=True)
        if self.head.seq >= 0 and self._last_checkpoint != self.head.seq:
            raise StoreError(f"the checkpoint could not be committed: {self.last_error}")
        return None if self.last_checkpoint is None else dict(self.last_checkpoint)

    def use_signing_key(self, key: SigningKey) -> None:
        """Sign every checkpoint from now on with ``key`` (a rotation: see ``addons.store.rotation``)."""
        self._key = key

    def append_with_change(self, event: Event, change: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
        """Append ``event`` straight to DuckDB in one transaction with ``change`` (a purge turning rows into
        tombstones: the one change of stored rows there is), then anchor the journal at it. Everything committed
        must be loaded first. A crash between the transaction and the anchor leaves a journal behind the store:
        start-up refuses it and ``warden repair-journal`` records that; the record is consistent either way."""
        if self._pending:
            raise StoreError("append_with_change needs every committed event loaded first (load_now)")
        line = seal(event, self.head.seq + 1, self.head.hash)
        cursor = self._con.cursor()
        try:
            cursor.begin()
            change(cursor)
            cursor.execute(f"INSERT INTO events VALUES ({', '.join('?' * len(COLUMNS))})", list(event.row()))
            cursor.commit()
        except BaseException:
            cursor.rollback()
            raise
        finally:
            cursor.close()
        self.head = Head(event.seq, event.hash, event.chain_format)
        self._journal.reset(line)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        """Commit what is queued, sign the final head, load everything into DuckDB and release the file."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=30)
        self._thread = None
        self._load()
        self._journal.close()
        self._con.close()

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A separate cursor on the same database, for queries from another thread."""
        return self._con.cursor()

    # -- the writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            wait = max(0.0, self._pending_since + LOAD_INTERVAL - time.monotonic()) if self._pending else self._interval
            try:
                first = self._queue.get(timeout=wait)
            except queue.Empty:
                self._load()
                if time.monotonic() - self._last_checkpoint_at >= self._interval:
                    self._checkpoint_if_due(force=True)  # a quiet minute: sign what came since
                continue
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            items = [item for item in batch if item is not _STOP]
            self._commit([(e, f) for e, f in items if isinstance(e, Event)])
            syncs = [f for e, f in items if e is None]
            asked = [f for e, f in items if e is _CHECKPOINT]
            tasks = [t for e, t in items if e is _TASK]
            self._checkpoint_if_due(force=stop or bool(asked))
            for future in asked:
                if self.head.seq < 0:
                    future.set_result(None)  # nothing to sign yet
                elif self.last_checkpoint is not None and self._last_checkpoint == self.head.seq:
                    future.set_result(dict(self.last_checkpoint))
                else:
                    future.set_exception(StoreError(f"the checkpoint could not be committed: {self.last_error}"))
            if syncs or stop or len(self._pending) >= LOAD_BATCH or (
                self._pending and time.monotonic() - self._pending_since >= LOAD_INTERVAL
            ):
                self._load()
            for future in syncs:
                future.set_result(None)
            for future, task in tasks:
                self._run_task(future, task)
            if stop:
                return

    def _run_task(self, future: Future, task: Callable[[Store], object]) -> None:
        try:
            self.load_now()
            future.set_result(task(self))
        except Exception as e:  # the caller hears of it; the writer carries on
            future.set_exception(e)

    def _chain(self, events: list[Event]) -> tuple[Head, list[bytes]]:
        head, lines = Head(self.head.seq, self.head.hash), []
        for event in events:
            lines.append(seal(event, head.seq + 1, head.hash))
            head = Head(event.seq, event.hash)
        return head, lines

    def _commit(self, items: list[tuple[Event, Waiter]]) -> None:
        if not items:
            return
        events = [event for event, _ in items]
        started = time.perf_counter()
        new_head, lines = self._chain(events)
        try:
            self._journal.append(lines)
        except Exception as e:
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {e}"
            log.error("warden: store commit of %d events failed: %s", len(events), self.last_error)
            failure = StoreError(f"the store could not commit: {self.last_error}")
            _settle([(future, failure) for _, future in items])
            return
        self.head = new_head
        self.commits += 1
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.extend(events)
        elapsed = time.perf_counter() - started
        for callback in self.on_commit:
            callback(len(events), elapsed)
        _settle([(future, (event.seq, event.hash)) for event, future in items])

    def _load(self) -> None:
        """Move committed events from the journal into DuckDB (one transaction), then empty the journal."""
        if not self._pending:
            return
        try:
            self._appender.append_rows([e.row() for e in self._pending])
            self._appender.flush()
        except Exception as e:
            self._appender.clear()
            self.last_error = f"loading into DuckDB failed: {type(e).__name__}: {e}"
            log.error("warden: %s (the events stay in the journal)", self.last_error)
            return
        anchor = journal_line(self._pending[-1])
        self._pending.clear()
        try:
            self._journal.reset(anchor)
        except OSError as e:  # the journal keeps its events, which DuckDB now holds too: start-up accepts that
            self.last_error = f"replacing the journal failed: {type(e).__name__}: {e}"
            log.error("warden: %s", self.last_error)

    def _checkpoint_if_due(self, force: bool) -> None:
        since = self.head.seq - self._last_checkpoint
        if since <= 0 or (not force and since < self._every):
            return
        head = self.head
        signature = self._key.sign(checkpoint_message(head.seq, head.hash))
        detail = {"head_seq": head.seq, "head_hash": head.hash, "signature": signature, "key_id": self._key.key_id}
        event = Event(kind="checkpoint", detail=detail)
        future: Future = Future()
        self._commit([(event, future)])
        if future.exception() is None:
            self._last_checkpoint = event.seq
            self._last_checkpoint_at = time.monotonic()
            self.last_checkpoint = {"seq": event.seq, **detail}
            # The external anchor: whoever keeps this line can prove everything before it.
            log.info(
                "warden checkpoint seq=%d head_seq=%d head_hash=%s key_id=%s signature=%s",
                event.seq, head.seq, head.hash, self._key.key_id, signature,
            )
