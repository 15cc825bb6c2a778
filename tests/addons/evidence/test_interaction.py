"""One signed file per interaction: the flow's events, its approval, and a proof of each up to a signed checkpoint
that even the holder of the pack's manifest key cannot bend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from addons.evidence.interaction import EVENTS, INTERACTION, build_interaction, check_proofs
from addons.evidence.manifest import MANIFEST, SIGNATURE, Pack, check_pack, sign_folder
from addons.evidence.request import EvidenceError, NoSuchFlow
from addons.store.database import Store, connect
from addons.store.events import Event
from addons.store.keys import SigningKey
from tests.addons.evidence.traffic import write_traffic


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, SigningKey]:
    folder = tmp_path_factory.mktemp("store")
    key = SigningKey.load_or_create(folder / "sign.key")
    write_traffic(folder / "w.duckdb", key)
    return folder / "w.duckdb", key


def make(recorded, tmp_path: Path, flow_id: str) -> Path:
    db, key = recorded
    folder = tmp_path / flow_id
    folder.mkdir(parents=True)
    con = connect(db, read_only=True)
    try:
        build_interaction(con, flow_id, key, folder)
    finally:
        con.close()
    return folder


def test_an_interaction_holds_identity_bodies_decision_approval_and_proofs(recorded, tmp_path: Path) -> None:
    folder = make(recorded, tmp_path, "flow-006")
    account = json.loads((folder / INTERACTION).read_text())
    assert account["identity"]["sub"] == "alice" and account["identity"]["groups"] == ["dev"]
    assert account["request"]["path"] == "/v1/chat/completions" and account["request"]["body"]["text"]
    assert account["response"]["status"] == 200
    assert account["decision"]["decision"] == "allow"
    assert [(a["step"], a["user"]) for a in account["approvals"]] == [
        ("requested", "alice"), ("refused", "alice"), ("approved", "dave"), ("grant_created", "dave"),
        ("used", "alice")]
    events = [json.loads(line) for line in (folder / EVENTS).read_text().splitlines()]
    assert {e["kind"] for e in events} == {"request", "response", "approval"}
    pack = Pack(folder)
    assert check_pack(pack).ok
    assert check_proofs(pack, recorded[1].public) == []


def test_a_refused_token_names_the_subject_it_claimed(recorded, tmp_path: Path) -> None:
    account = json.loads((make(recorded, tmp_path, "flow-004") / INTERACTION).read_text())
    assert account["identity"] == {"claimed_sub": "mallory", "validated": False}
    assert account["response"]["fate"] == "unauthenticated"


def test_an_event_changed_and_the_manifest_resigned_fails_its_proof(recorded, tmp_path: Path) -> None:
    folder = make(recorded, tmp_path, "flow-002")
    lines = (folder / EVENTS).read_text().splitlines()
    first = json.loads(lines[0])
    first["user"] = "mallory"
    (folder / EVENTS).write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    (folder / MANIFEST).unlink()
    (folder / SIGNATURE).unlink()
    sign_folder(folder, recorded[1])  # even with the gateway's own key: the checkpoint's head no longer follows
    pack = Pack(folder)
    assert check_pack(pack).ok
    [problem] = check_proofs(pack, recorded[1].public)
    assert problem.startswith(f"{EVENTS}: event seq={first['seq']}") and "links do not lead" in problem
    other = SigningKey.load_or_create(tmp_path / "other.key")
    assert all("signed by key" in p for p in check_proofs(Pack(make(recorded, tmp_path / "b", "flow-002")),
                                                          other.public))


def test_no_flow_and_an_unsigned_flow_are_refused(recorded, tmp_path: Path) -> None:
    with pytest.raises(NoSuchFlow):
        make(recorded, tmp_path, "flow-999")
    key = SigningKey.load_or_create(tmp_path / "k.key")
    store = Store(tmp_path / "u.duckdb", key, checkpoint_every=1000)
    store.start()
    store.submit(Event(kind="request", flow_id="late")).result(timeout=10)
    store.sync()
    con = store.reader()
    (tmp_path / "late").mkdir()
    try:
        with pytest.raises(EvidenceError, match="no signed checkpoint covers"):
            build_interaction(con, "late", key, tmp_path / "late")
    finally:
        con.close()
        store.close()
