"""When to load the rules file again: a watch over it and the credential files it names.

``FileWatch.tick()`` is called every poll interval; it says a file changed once the change has settled (the
files looked the same at two ticks in a row), so a file an editor writes in several steps is read whole.
A change is seen in the file's inode, size or modification time; the caller compares contents (a rewrite
with the same bytes is no change of the rules).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

Stat = tuple[int, int, int] | None  # (inode, size, mtime_ns); None: missing or unreadable


def stat_of(path: Path) -> Stat:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class FileWatch:
    """The files of one version of the rules (the rules file first) and how they looked when it was loaded."""

    def __init__(self, paths: Sequence[Path], seen: Sequence[Stat] | None = None) -> None:
        self.paths = tuple(paths)
        self.seen = tuple(seen) if seen is not None else self.stats()  # at the last load attempt
        self._last = self.seen  # at the last tick

    def stats(self) -> tuple[Stat, ...]:
        return tuple(stat_of(p) for p in self.paths)

    def tick(self) -> bool:
        """True when the files differ from how they were at the last load attempt and have not changed since the
        previous tick. Stays true until ``loaded`` records an attempt."""
        now = self.stats()
        settled, self._last = now == self._last, now
        return settled and now != self.seen

    def loaded(self, seen: Sequence[Stat]) -> None:
        """A load was attempted of the files as they were when ``seen`` was taken (before they were read)."""
        self.seen = tuple(seen)

    def only_rules_file_changed(self, seen: Sequence[Stat]) -> bool:
        """Whether ``seen`` differs from the last attempt in the rules file alone (no credential file changed)."""
        return tuple(seen[1:]) == self.seen[1:]
