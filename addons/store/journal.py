"""The store's write-ahead journal: committed events that DuckDB has not loaded yet.

A request waits for its event to be *committed*; here that means written and fdatasync'ed to an
append-only file (a quarter of a millisecond, one system call without the GIL), not a DuckDB
transaction (milliseconds, and many GIL hand-offs under load). The writer loads the journal into
DuckDB in large batches and then replaces the journal by one line, the *anchor*: the event DuckDB
now ends at. One JSON line per event: its canonical form and hash (``events.seal``).

Read strictly (``pending_events``): only a torn final line (no newline: the last write never
completed, no caller was told it was committed) is dropped. Any other damage, an unreadable line,
a line whose hash is wrong, a break in the chain between lines, a journal that does not continue
DuckDB's head, or an empty journal beside a store that always keeps its anchor, raises
``JournalDamaged`` naming the file and line; nothing is changed, and ``warden repair-journal``
(which keeps a copy) is the way on.

What this can and cannot notice: the anchor makes a journal emptied or replaced by an older one
visible, and the chain between lines makes a removed or edited line visible. A journal cut back
to exactly its first lines, by someone who can write the files, looks like an earlier crash: the
checkpoints logged outside the store ("warden checkpoint ..." lines) are what show the events that
followed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from addons.store.events import Event, chain_hash, unseal

log = logging.getLogger("warden.journal")

REPAIR = "warden --db {db} repair-journal"


class StoreError(RuntimeError):
    """The store cannot be opened or written."""


class JournalDamaged(StoreError):
    """The journal is damaged where a crash cannot have left it; start-up stops until it is repaired."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        self.path, self.line, self.problem = path, line, problem
        db = path.with_name(path.name.removesuffix(".journal"))
        super().__init__(
            f"{path}: line {line}: {problem}. The journal holds committed events DuckDB may not have; nothing "
            f"was changed. Stop the gateway and run `{REPAIR.format(db=db)}`: it keeps a copy of the journal, "
            "loads every event that still continues the chain and records what it set aside"
        )


def journal_path(db: str | Path) -> Path:
    db = Path(db)
    return db.with_name(db.name + ".journal")


def read_lines(path: Path) -> tuple[list[bytes], bytes]:
    """The journal's complete lines and its torn final line (``b""`` if none)."""
    if not path.exists():
        return [], b""
    *lines, torn = path.read_bytes().split(b"\n")
    return lines, torn


def parse_line(path: Path, number: int, line: bytes) -> Event:
    """One journal line as an event, its hash checked; ``JournalDamaged`` names the line otherwise."""
    try:
        event = unseal(line)
    except (ValueError, KeyError, TypeError) as e:
        raise JournalDamaged(path, number, f"unreadable ({type(e).__name__}: {e})") from None
    try:
        good = chain_hash(event.prev_hash, event) == event.hash
    except ValueError as e:
        raise JournalDamaged(path, number, f"seq={event.seq}: {e}") from None
    if not good:
        raise JournalDamaged(path, number, f"seq={event.seq}: the hash does not match the line's content")
    return event


def read_journal(path: Path) -> list[Event]:
    """Every committed event in the journal, in order; raises ``JournalDamaged`` for anything but a torn tail."""
    lines, torn = read_lines(path)
    if torn:
        log.warning("warden: %s: dropping a torn final line (%d bytes): a write that never completed", path, len(torn))
    events: list[Event] = []
    for number, line in enumerate(lines, 1):
        event = parse_line(path, number, line)
        if events and (event.seq != events[-1].seq + 1 or event.prev_hash != events[-1].hash):
            raise JournalDamaged(path, number, f"seq={event.seq} does not continue line {number - 1} "
                                               f"(seq={events[-1].seq}): the chain breaks between them")
        events.append(event)
    return events


def pending_events(path: Path, head_seq: int, head_hash: str, anchored: bool) -> list[Event]:
    """The journal's events after DuckDB's head (``head_seq``/``head_hash``), checked against that head.

    ``anchored``: the store was written by a version that always leaves its head in the journal (its
    head is in chain form 2), so an empty journal beside a non-empty store means the journal was lost.
    """
    events = read_journal(path)
    if not events:
        if anchored and head_seq >= 0:
            raise JournalDamaged(path, 1, f"the journal is empty or missing, but the store (head seq={head_seq}) "
                                          "always keeps its head there: it was truncated or replaced, and events "
                                          f"committed after seq={head_seq} may be lost (compare the last "
                                          "'warden checkpoint' log line)")
        return []
    first = events[0]
    if first.seq > head_seq + 1 or (first.seq == head_seq + 1 and first.prev_hash != head_hash):
        raise JournalDamaged(path, 1, f"seq={first.seq} does not continue the store's head (seq={head_seq}): "
                                      "events between them are missing, or the journal belongs to another store")
    if first.seq <= head_seq:
        overlap = [n for n, e in enumerate(events, 1) if e.seq == head_seq]
        if not overlap:
            raise JournalDamaged(path, len(events), f"the journal ends at seq={events[-1].seq}, before the store's "
                                                    f"head (seq={head_seq}): it is older than the store")
        if events[overlap[0] - 1].hash != head_hash:
            raise JournalDamaged(path, overlap[0], f"seq={head_seq} differs from the store's event with that seq")
    return [e for e in events if e.seq > head_seq]


class Journal:
    """Append-only, fsynced. Not thread-safe: the store's writer thread is its only user."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._fd).st_size

    def append(self, lines: list[bytes]) -> None:
        """Write sealed events (``events.seal``) and fdatasync; on failure cut back to what was, never torn."""
        data = b"".join(lines)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fdatasync(self._fd)
        except OSError:
            os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)

    def reset(self, anchor: bytes) -> None:
        """Replace the journal by ``anchor`` (the journal line of DuckDB's head; ``b""`` for an empty store),
        atomically: a crash leaves the old journal or the new one, never an empty file."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(anchor)
            while view:
                view = view[os.write(fd, view):]
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(anchor)

    def close(self) -> None:
        os.close(self._fd)
