"""The store's write-ahead journal: committed events that DuckDB has not loaded yet.

A request waits for its event to be *committed*; here that means written and fdatasync'ed to an
append-only file (a quarter of a millisecond, one system call without the GIL), not a DuckDB
transaction (milliseconds, and many GIL hand-offs under load). The writer loads the journal into
DuckDB in large batches and empties it; at start-up, whatever the journal still holds (a crash
between commit and load) is loaded first. One JSON line per event: its canonical form and hash
(``events.seal``). A torn last line is a write that never completed: no caller was told it was
committed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from addons.events import Event, unseal

log = logging.getLogger("warden.journal")


def journal_path(db: str | Path) -> Path:
    db = Path(db)
    return db.with_name(db.name + ".journal")


def read_journal(path: Path) -> list[Event]:
    """The complete events in the journal, in order; a torn or unreadable tail is dropped (and logged)."""
    if not path.exists():
        return []
    events = []
    data = path.read_bytes()
    for n, line in enumerate(data.split(b"\n"), 1):
        if not line:
            continue
        try:
            events.append(unseal(line))
        except (ValueError, KeyError, TypeError) as e:
            log.warning("warden: %s: line %d is incomplete (%s); it and what follows were never committed", path, n, e)
            break
    return events


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

    def reset(self) -> None:
        """Empty the journal: everything in it is now in DuckDB."""
        os.ftruncate(self._fd, 0)
        os.fdatasync(self._fd)
        self._size = 0

    def close(self) -> None:
        os.close(self._fd)
