"""Evidence across a signing-key rotation: a pack signed before it still verifies after it (alone and against the key
that signed it); packs built after it verify the whole chain with the keyring, and a one-interaction pack of a flow
an older key covered carries that key, vouched for by the new one."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from addons.evidence.build import build_zip
from addons.evidence.interaction import CHECKPOINT_KEY, check_proofs
from addons.evidence.manifest import Pack, check_pack
from addons.evidence.request import PackRequest
from addons.store.database import Store, connect
from addons.store.events import Event
from addons.store.keys import SigningKey, load_public_key, signing_keyring
from addons.store.rotation import KeyFiles, record_rotation, rotate_files
from addons.store.search import FlowFilter


def _pack(db: Path, key: SigningKey, target: Path, request: PackRequest) -> Pack:
    con = connect(db, read_only=True)
    try:
        build_zip(con, request, key, target, where="test", keys=signing_keyring(key_path(db).with_suffix(".pub")))
    finally:
        con.close()
    return Pack(target)


def key_path(db: Path) -> Path:
    return db.with_name("sign.key")


def test_packs_before_and_after_a_rotation_verify(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    files = KeyFiles(key_path(db), tmp_path / "orig.key", tmp_path / "hash.key")
    old = SigningKey.load_or_create(files.signing)
    store = Store(db, old)
    store.start()
    store.submit(Event(kind="request", flow_id="before", user="alice", host="api.example", fate="forwarded")).result(10)
    store.checkpoint_now()
    store.close()
    _pack(db, old, tmp_path / "before.zip", PackRequest(filter=FlowFilter(limit=None)))
    old_pub = tmp_path / "old.pub"
    old_pub.write_bytes(files.signing.with_suffix(".pub").read_bytes())

    store = Store(db, old)
    store.start()
    record_rotation(store, rotate_files(files, ["signing"]), "ops", "yearly")
    store.submit(Event(kind="request", flow_id="after", user="bob", host="api.example", fate="forwarded")).result(10)
    store.close()
    new = SigningKey.load_or_create(files.signing)
    assert new.key_id != old.key_id

    # The pack signed before the rotation: alone, and pinned to the key that signed it (kept in the keyring).
    assert check_pack(Pack(tmp_path / "before.zip")).ok
    assert check_pack(Pack(tmp_path / "before.zip"), load_public_key(old_pub)).ok

    # A pack after it: signed by the new key, the chain verified with both (checkpoints before the rotation).
    after = _pack(db, new, tmp_path / "after.zip", PackRequest(filter=FlowFilter(limit=None)))
    assert check_pack(after, new.public).ok
    with zipfile.ZipFile(tmp_path / "after.zip") as z:
        verification = json.loads(z.read("verification.json"))
    assert verification["status"] == "ok", verification["problem"]
    assert {h["key_id"] for h in verification["heads"]} == {old.key_id, new.key_id}

    # One interaction an old checkpoint covers: the pack carries that key, and its proofs hold.
    one = _pack(db, new, tmp_path / "one.zip", PackRequest(flow_id="before"))
    assert CHECKPOINT_KEY in one.names()
    checked = check_pack(one, new.public)
    assert checked.ok and check_proofs(one, new.public) == []
