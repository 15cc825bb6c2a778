"""Opening the store file: held by another process (known by its lock, not DuckDB's message) or not a store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from addons.store.database import StoreError, StoreInUse, connect, held_by_another_process

ROOT = Path(__file__).resolve().parents[3]

HOLDER = """
import sys
from addons.store.database import Store
from addons.store.keys import SigningKey
s = Store(sys.argv[1], SigningKey.load_or_create(sys.argv[2]))
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
s.close()
"""


@pytest.mark.parametrize("read_only", [True, False])
def test_a_store_another_process_holds_is_in_use(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "w.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(tmp_path / "sign.key")], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert held_by_another_process(path)
        with pytest.raises(StoreInUse, match="in use by a running gateway"):
            connect(path, read_only=read_only)
    finally:
        holder.communicate(timeout=60)
    assert holder.returncode == 0
    assert not held_by_another_process(path)
    connect(path, read_only=read_only).close()


def test_a_file_that_is_no_store_is_not_in_use(tmp_path: Path) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"not a database" * 1000)
    for read_only in (True, False):
        with pytest.raises(StoreError) as e:
            connect(junk, read_only=read_only)
        assert not isinstance(e.value, StoreInUse) and "cannot open" in str(e.value)
    assert not held_by_another_process(junk) and not held_by_another_process(tmp_path / "missing.duckdb")
