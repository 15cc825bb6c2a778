"""Key rotation below the gateway: the keyring keeps old public keys, a retired key cannot sign after its rotation,
old originals keys still decrypt."""

from __future__ import annotations

from pathlib import Path

import pytest

from addons.store.database import Store, connect
from addons.store.events import Event, checkpoint_message, seal
from addons.store.keys import KeyFileError, OriginalsKey, SigningKey, signing_keyring
from addons.store.queries import iter_events
from addons.store.rotation import KeyFiles, record_rotation, rotate_files
from addons.store.verification import verify_events


def _files(tmp_path: Path) -> KeyFiles:
    return KeyFiles(tmp_path / "sign.key", tmp_path / "orig.key", tmp_path / "hash.key")


def test_a_checkpoint_signed_before_a_rotation_verifies_after_it(tmp_path: Path) -> None:
    files = _files(tmp_path)
    old = SigningKey.load_or_create(files.signing)
    store = Store(tmp_path / "w.duckdb", old)
    store.start()
    store.submit(Event(kind="request", flow_id="before")).result(timeout=10)
    done = record_rotation(store, rotate_files(files, ["signing"]), "ops", "yearly")
    store.submit(Event(kind="request", flow_id="after")).result(timeout=10)
    store.close()  # signs the final head with the new key

    new = SigningKey.load_or_create(files.signing)
    assert done["rotated"]["signing"] == {"from": old.key_id, "to": new.key_id}
    keyring = signing_keyring(files.signing.with_suffix(".pub"))
    assert set(keyring) == {old.key_id, new.key_id}
    con = connect(tmp_path / "w.duckdb", read_only=True)
    events = list(iter_events(con))
    con.close()
    result = verify_events(iter(events), keyring)
    assert result.status == "ok", result.problem
    assert [h["key_id"] for h in result.heads][-2:] == [new.key_id, new.key_id]
    assert result.heads[0]["key_id"] == old.key_id
    # The current key alone does not vouch for what the old one signed: the keyring is what verifies it.
    only_new = verify_events(iter(events), new.public)
    assert not only_new.ok and f"signed by key {old.key_id}, not by the given key {new.key_id}" in only_new.problem

    # A retired key, even one that leaked, cannot sign after the rotation: its checkpoint is refused.
    [keys_event] = [e for e in events if e.kind == "keys"]
    last = events[-1]
    forged = Event(kind="checkpoint", detail={"head_seq": last.seq, "head_hash": last.hash, "key_id": old.key_id,
                                              "signature": old.sign(checkpoint_message(last.seq, last.hash))})
    seal(forged, last.seq + 1, last.hash)
    r = verify_events(iter([*events, forged]), keyring)
    assert not r.ok and r.bad_seq == forged.seq
    assert f"after the keys event seq={keys_event.seq} rotated the signing key to {new.key_id}" in r.problem


def test_originals_encrypted_before_a_rotation_still_decrypt(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WARDEN_ORIGINALS_KEY", raising=False)
    files = _files(tmp_path)
    before = OriginalsKey.load_or_create(files.originals)
    blob = before.encrypt(b"jane@example.com", "flow-1")
    rotated = rotate_files(files, ["originals", "hash"])
    after = OriginalsKey.load(files.originals)
    assert rotated.originals is not None and after.key_id != before.key_id == rotated.detail["originals"]["from"]
    assert after.decrypt(blob, "flow-1") == b"jane@example.com"  # the retired key, found by its GCM tag
    with pytest.raises(KeyFileError, match="nor the 1 retired ones"):
        after.decrypt(blob, "flow-2")  # bound to its flow: no key opens it under another id
    assert len(list((tmp_path / "hash.keys").glob("*.key"))) == 1  # the old hash key kept
    assert rotated.hash is not None and len(rotated.hash) == 32


def test_a_key_from_the_environment_is_not_rotated_here(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WARDEN_ORIGINALS_KEY", "A" * 43 + "=")
    files = _files(tmp_path)
    with pytest.raises(KeyFileError, match=r"comes from \$WARDEN_ORIGINALS_KEY"):
        rotate_files(files, ["signing", "originals"])
    assert not files.signing.exists()  # refused before any file changed
