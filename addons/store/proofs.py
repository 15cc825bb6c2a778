"""Inclusion proofs: one event, proven up to a signed chain head with digests only.

In chain form 2 (``addons.store.events``) each hash is ``sha256(prev ‖ sha256(canonical(event)))``. To
show that an event is in the record, it is enough to give the event, the digests of the events
after it up to a head a checkpoint signed, and that checkpoint: whoever holds the gateway's public
key recomputes the links and checks the signature, without seeing the other events. This is what
a one-interaction evidence file carries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from addons.store.events import Event, checkpoint_message, event_digest, link, stored_digest
from addons.store.keys import key_id, verify_signature
from addons.store.queries import iter_events, iter_events_until


class ProofError(ValueError):
    """A proof cannot be made from these events (not contiguous, or not in chain form 2)."""


@dataclass
class InclusionProof:
    """``seq``'s event, linked through ``digests`` (the events seq+1..head_seq) to a signed head."""

    seq: int
    prev_hash: str
    digests: list[str]
    head_seq: int
    head_hash: str
    checkpoint: dict[str, Any] = field(default_factory=dict)  # head_seq, head_hash, key_id, signature

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def prove_inclusion(events: Sequence[Event], checkpoint: Event) -> InclusionProof:
    """A proof for ``events[0]``: ``events`` run contiguously from it to the head ``checkpoint`` signed."""
    detail = checkpoint.detail or {}
    head_seq = detail.get("head_seq")
    if not events or events[-1].seq != head_seq:
        raise ProofError(f"the events must run up to the checkpoint's head seq={head_seq}")
    for before, after in zip(events, events[1:], strict=False):
        if after.seq != before.seq + 1 or after.prev_hash != before.hash:
            raise ProofError(f"the events are not contiguous at seq={after.seq}")
    if any(e.chain_format != 2 for e in events):
        raise ProofError("only events in chain form 2 can be proven from digests (older events need the whole chain)")
    first = events[0]
    return InclusionProof(
        seq=first.seq, prev_hash=first.prev_hash, digests=[stored_digest(e) for e in events[1:]],
        head_seq=head_seq, head_hash=events[-1].hash,
        checkpoint={k: detail.get(k) for k in ("head_seq", "head_hash", "key_id", "signature")},
    )


def verify_inclusion(event: Event, proof: InclusionProof,
                     public_key: Ed25519PublicKey | Mapping[str, Ed25519PublicKey]) -> str | None:
    """None if ``event`` is in the chain under the head ``proof.checkpoint`` signed with ``public_key`` (or with the
    key of that id in a keyring: checkpoints signed before a rotation); else why not."""
    if event.seq != proof.seq or event.prev_hash != proof.prev_hash:
        return "the event is not the one the proof is for (seq or prev_hash differ)"
    if event.chain_format != 2:
        return "the event is not in chain form 2"
    try:
        head = link(proof.prev_hash, event_digest(event))
        for digest in proof.digests:
            head = link(head, digest)
    except ValueError:
        return "the proof holds something that is not a hex digest"
    if proof.seq + len(proof.digests) != proof.head_seq or head != proof.head_hash:
        return "the links do not lead to the proof's head (the event or a digest was changed)"
    signed = proof.checkpoint
    if (signed.get("head_seq"), signed.get("head_hash")) != (proof.head_seq, proof.head_hash):
        return "the checkpoint vouches for another head"
    keyring = public_key if isinstance(public_key, Mapping) else {key_id(public_key): public_key}
    signer = keyring.get(str(signed.get("key_id")))
    if signer is None:
        return f"the checkpoint was signed by key {signed.get('key_id')}, not by the given key"
    message = checkpoint_message(proof.head_seq, proof.head_hash)
    if not verify_signature(signer, message, signed.get("signature") or ""):
        return "the checkpoint signature is not valid"
    return None


@dataclass
class Coverage:
    """What proves a run of events (one flow's) up to a signed head: the first checkpoint whose head is at or after
    the run's last event, and the digests of the events after the run's first one, up to that head."""

    first_seq: int
    digests: list[str]  # events first_seq+1 .. checkpoint["head_seq"]
    checkpoint: dict[str, Any]  # seq (the checkpoint event's own), head_seq, head_hash, key_id, signature

    def proof(self, event: Event) -> InclusionProof:
        """The inclusion proof of one event of the run; ProofError if the run does not hold it."""
        head_seq = self.checkpoint["head_seq"]
        if not self.first_seq <= event.seq <= head_seq:
            raise ProofError(f"seq={event.seq} is not between seq={self.first_seq} and the head seq={head_seq}")
        return InclusionProof(
            seq=event.seq, prev_hash=event.prev_hash, digests=self.digests[event.seq - self.first_seq:],
            head_seq=head_seq, head_hash=self.checkpoint["head_hash"],
            checkpoint={k: self.checkpoint.get(k) for k in ("head_seq", "head_hash", "key_id", "signature")},
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Coverage:
        return cls(int(data["first_seq"]), [str(d) for d in data["digests"]], dict(data["checkpoint"]))


def cover(con: duckdb.DuckDBPyConnection, first_seq: int, last_seq: int) -> Coverage | None:
    """The coverage of the events ``first_seq..last_seq`` by the first checkpoint signed at or after the last one;
    None while no checkpoint covers it (a running gateway signs one on demand: ``Store.checkpoint_now``)."""
    rows = con.execute(
        "SELECT seq, record->'detail' FROM events WHERE kind = 'checkpoint' "
        "AND CAST(record->'detail'->>'head_seq' AS BIGINT) >= ? ORDER BY seq LIMIT 1", [last_seq]).fetchall()
    if not rows:
        return None
    checkpoint = {"seq": rows[0][0], **json.loads(rows[0][1])}
    # stored_digest: a purge may have tombstoned events between (their digest is what the chain links)
    digests = [stored_digest(e) for e in iter_events_until(iter_events(con, first_seq), checkpoint["head_seq"])]
    return Coverage(first_seq, digests, checkpoint)
