"""Compaction of a stopped store: the file rewritten with only the rows it holds.

DuckDB frees the blocks a changed row no longer uses but does not overwrite them: after a retention purge, the removed
bodies stay readable in the file's free blocks until DuckDB happens to reuse them. A purge on a stopped store
(``warden purge``) therefore rewrites the file (DuckDB's ``COPY FROM DATABASE`` into a new file, then an atomic
rename), so what a purge removed is gone from the disk too. The rows, and so the chain, are the same before and
after: the head is checked on both sides.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from addons.store.database import StoreError, StoreInUse, held_by_another_process


def _head(con: duckdb.DuckDBPyConnection, table: str) -> tuple:
    return con.execute(f"SELECT count(*), max(seq), arg_max(hash, seq) FROM {table}").fetchall()[0]


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def compact(path: Path) -> dict[str, int]:
    """Rewrite the stopped store ``path`` with only its live rows; returns its size before and after (bytes)."""
    if held_by_another_process(path):
        raise StoreInUse(f"{path}: in use by a running gateway: compaction needs the gateway stopped")
    fresh = path.with_name(path.name + ".compacting")
    fresh.unlink(missing_ok=True)
    stat = path.stat()
    before = stat.st_size
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute(f"ATTACH {_quoted(path)} AS old (READ_ONLY)")
        con.execute(f"ATTACH {_quoted(fresh)} AS fresh")
        con.execute("COPY FROM DATABASE old TO fresh")
        if _head(con, "old.events") != _head(con, "fresh.events"):
            raise StoreError(f"{path}: the compacted copy does not hold the same events; the store is left as it was")
        con.execute("DETACH fresh")
        con.execute("DETACH old")
    except BaseException:
        con.close()
        fresh.unlink(missing_ok=True)
        raise
    con.close()
    with open(fresh, "rb") as f:
        os.fsync(f.fileno())
    # A gateway that started since the copy would write to the file about to be replaced: look again, last thing.
    now = path.stat()
    if held_by_another_process(path) or (now.st_ino, now.st_size, now.st_mtime_ns) != (
            stat.st_ino, stat.st_size, stat.st_mtime_ns):
        fresh.unlink(missing_ok=True)
        raise StoreInUse(f"{path}: a gateway opened it during compaction; the store is left as it was")
    os.replace(fresh, path)  # atomic: a reader sees the old file or the new one, whole
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return {"bytes_before": before, "bytes_after": path.stat().st_size}
