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


def test_a_pack_verifies_pinned_and_says_when_it_is_not(tmp_path: Path) -> None:
    """Anyone can sign a pack with a key of their own: only a pinned key (or fingerprint) makes it the gateway's."""
    from addons.evidence.manifest import fingerprint

    db = tmp_path / "w.duckdb"
    key = SigningKey.load_or_create(tmp_path / "gateway.key")
    store = Store(db, key)
    store.start()
    store.submit(Event(kind="request", flow_id="f1", user="alice")).result(timeout=10)
    store.close()
    runner = CliRunner()
    made = runner.invoke(app, ["--db", str(db), "--admin", "127.0.0.1:1", "evidence", "--from", "1d", "-o",
                               str(tmp_path / "pack.zip"), "--signing-key", str(tmp_path / "gateway.key")])
    assert made.exit_code == 0, made.output
    pack = str(tmp_path / "pack.zip")
    unpinned = runner.invoke(app, ["evidence", "verify", pack])
    assert unpinned.exit_code == 3 and "UNPINNED" in unpinned.output
    pinned = runner.invoke(app, ["evidence", "verify", pack, "--fingerprint", fingerprint(key.public)])
    assert pinned.exit_code == 0 and "pack OK" in pinned.output
    assert runner.invoke(app, ["evidence", "verify", pack, "--pubkey", str(tmp_path / "gateway.pub")]).exit_code == 0
    other = runner.invoke(app, ["evidence", "verify", pack, "--fingerprint", "ab" * 32])
    assert other.exit_code == 1 and "notbythekeyofthegivenfingerprint" in "".join(other.output.split())
