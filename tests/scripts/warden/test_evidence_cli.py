"""``warden evidence`` on a stopped store never signs with a key it made up: a missing --signing-key is an error
naming it, and no key file appears."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from addons.store.database import Store
from addons.store.events import Event
from addons.store.keys import SigningKey
from scripts.warden.cli import app


def test_a_missing_signing_key_is_refused_and_none_is_made(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    store = Store(db, SigningKey.load_or_create(tmp_path / "gateway.key"))
    store.start()
    store.submit(Event(kind="request", flow_id="f1", user="alice")).result(timeout=10)
    store.close()
    missing = tmp_path / "elsewhere" / "warden-signing.key"
    result = CliRunner().invoke(app, ["--db", str(db), "--admin", "127.0.0.1:1", "evidence", "--from", "1d",
                                      "-o", str(tmp_path / "pack.zip"), "--signing-key", str(missing)])
    assert result.exit_code == 2, result.output
    assert f"--signing-key:{missing}:nosuchkeyfile" in "".join(result.output.split())  # rich wraps long lines
    assert not missing.exists() and not missing.parent.exists() and not (tmp_path / "pack.zip").exists()
