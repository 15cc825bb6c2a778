"""What ``warden show`` proves a flow with: the first checkpoint that covers its events, and the digests after it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from addons.store.database import Store
from addons.store.events import Event
from addons.store.keys import SigningKey
from addons.store.proofs import Coverage, cover, verify_inclusion
from addons.store.queries import flow_events


def test_a_flow_is_proven_by_the_first_checkpoint_after_it_and_only_once_one_is_signed(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path / "sign.key")
    store = Store(tmp_path / "w.duckdb", key, checkpoint_every=10_000, checkpoint_seconds=3600)
    store.start()
    try:
        for i in range(3):
            store.submit(Event(kind="request", flow_id=f"f{i}", body=f"body {i}".encode())).result(timeout=10)
            store.submit(Event(kind="response", flow_id=f"f{i}", status=200)).result(timeout=10)
        store.sync()
        reader = store.reader()
        events = flow_events(reader, "f1")
        assert cover(reader, events[0].seq, events[-1].seq) is None  # nothing signed yet
        first = store.checkpoint_now()
        for i in range(3, 5):
            store.submit(Event(kind="request", flow_id=f"f{i}")).result(timeout=10)
        later = store.checkpoint_now()
        store.sync()
        coverage = cover(reader, events[0].seq, events[-1].seq)
        assert coverage is not None
        assert coverage.checkpoint["seq"] == first["seq"] != later["seq"]  # the first that covers, not the latest
        assert len(coverage.digests) == first["head_seq"] - events[0].seq
        coverage = Coverage.from_dict(coverage.as_dict())  # as the admin API carries it
        for event in events:
            assert verify_inclusion(event, coverage.proof(event), key.public) is None
        changed = dataclasses.replace(events[1], stored_record=None, status=500)
        assert "links do not lead" in verify_inclusion(changed, coverage.proof(changed), key.public)
        tampered = Coverage(coverage.first_seq, ["00" * 32, *coverage.digests[1:]], coverage.checkpoint)
        assert "links do not lead" in verify_inclusion(events[0], tampered.proof(events[0]), key.public)
        assert cover(reader, later["head_seq"] + 1, later["head_seq"] + 1) is None  # past every signed head
        reader.close()
    finally:
        store.close()
