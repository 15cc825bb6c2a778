"""Tombstones: what a retention purge leaves of an event, and how verification accepts one.

In chain form 2 an event's hash is ``sha256(prev ‖ digest)`` with ``digest = sha256(canonical(event))``, so a
purge can remove the content and keep the digest: the chain still links from its genesis. A tombstone row keeps
``seq``, ``ts``, ``kind``, ``flow_id``, ``prev_hash`` and ``hash``; the content columns (``EMPTIED``) become NULL
and ``record`` becomes ``{"chain_format": 2, "tombstone": {"digest": ..., "purge_seq": ...}}``, naming the purge
event that removed it. That ``purge`` event, later in the chain, names the range, the count and the SHA-256 over
the removed digests (raw bytes, concatenated in seq order), and the SHA-256 over what the tombstones keep (which
their digests do not cover), so verification ties every tombstone to the purge that made it, and every purge to
exactly its tombstones.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import datetime
from typing import Any

from addons.store.events import Event

# Events of these kinds hold no personal content and carry the chain's own facts: never purged.
NEVER_PURGED = ("checkpoint", "startup", "config", "journal_repair", "purge", "hold", "keys")
# The columns a purge empties; seq, ts, kind, flow_id, prev_hash and hash stay.
EMPTIED = ("user", "host", "status", "fate", "decision", "body", "original_enc")


def tombstone_record(digest: str, purge_seq: int) -> str:
    """The ``record`` of a tombstone, as the purge writes it (DuckDB's ``json_object`` gives the same text)."""
    return json.dumps({"chain_format": 2, "tombstone": {"digest": digest, "purge_seq": purge_seq}},
                      separators=(",", ":"))


def digests_sha256(digests: list[str]) -> str:
    """What a purge event records of what it removed: sha256 over the raw digests, in seq order."""
    return hashlib.sha256(b"".join(bytes.fromhex(d) for d in digests)).hexdigest()


def kept_sha256(events: list[Event]) -> str:
    """What a purge event records of what its tombstones keep (seq, ts, kind, flow_id), which their digests do not
    cover: sha256 over one JSON line per tombstone, in seq order. So these columns cannot change unnoticed either."""
    lines = (json.dumps([e.seq, e.ts.isoformat(), e.kind, e.flow_id], separators=(",", ":")) + "\n" for e in events)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def tombstone_problem(event: Event) -> str | None:
    """Why ``event`` (a row with a tombstone) is not a tombstone as a purge leaves one, or None."""
    stone = event.tombstone or {}
    record = json.loads(event.stored_record or "{}")
    if set(record) != {"chain_format", "tombstone"} or record["chain_format"] != 2 or set(stone) != {
            "digest", "purge_seq"}:
        return "a tombstone's record holds something besides chain_format 2 and its digest and purge_seq"
    digest, purge_seq = stone["digest"], stone["purge_seq"]
    if not (isinstance(digest, str) and len(digest) == 64) or not isinstance(purge_seq, int):
        return "a tombstone's digest is not a sha256 hex digest, or its purge_seq is not a number"
    if event.kind in NEVER_PURGED:
        return f"a {event.kind} event is never purged, yet this one is a tombstone"
    if purge_seq <= event.seq:
        return f"the tombstone names purge seq={purge_seq}, which does not come after it"
    kept = [name for name in EMPTIED if getattr(event, name) is not None]
    if kept:
        return f"a tombstone keeps content outside its digest ({', '.join(kept)})"
    return None


class PurgeLedger:
    """Ties tombstones to their purge events during a walk of the chain (``verify_events``)."""

    def __init__(self) -> None:
        self._waiting: dict[int, list[Event]] = defaultdict(list)  # purge seq -> the tombstones naming it
        self.purges = 0
        self.tombstones = 0

    def tombstone(self, event: Event) -> None:
        assert event.tombstone is not None
        self._waiting[event.tombstone["purge_seq"]].append(event)
        self.tombstones += 1

    def named_within(self, first_seq: int, last_seq: int) -> int | None:
        """The first seq in ``first_seq``..``last_seq`` that tombstones name as their purge, or None (a run of light
        events the walk passes at once holds no purge, so no tombstone may name one of them)."""
        return min((seq for seq in self._waiting if first_seq <= seq <= last_seq), default=None)

    def reached(self, event: Event) -> str | None:
        """Call for every event in order: at a purge event (or an event tombstones name as one), why its tombstones
        and what it says of them disagree, or None."""
        named = self._waiting.pop(event.seq, [])
        if event.kind != "purge":
            if named:
                return (f"{len(named)} tombstones (the first seq={named[0].seq}) name this event as their purge, "
                        f"but it is a {event.kind} event")
            return None
        self.purges += 1
        detail = event.detail or {}
        seqs = [e.seq for e in named]
        if detail.get("count") != len(named):
            return (f"the purge says it removed {detail.get('count')} events, but {len(named)} tombstones name it "
                    "(a tombstone was added, or removed content was put back)")
        if named and not (detail.get("first_seq", -1) <= seqs[0] and seqs[-1] <= detail.get("last_seq", -1)):
            return (f"the purge names seq {detail.get('first_seq')}..{detail.get('last_seq')}, but its tombstones run "
                    f"{seqs[0]}..{seqs[-1]}")
        if detail.get("digests_sha256") != digests_sha256([e.tombstone["digest"] for e in named if e.tombstone]):
            return "the digests of its tombstones are not the ones the purge recorded (a tombstone was changed)"
        if detail.get("kept_sha256") != kept_sha256(named):
            return "the time, kind or flow of one of its tombstones is not what the purge recorded"
        try:
            cutoff = datetime.fromisoformat(str(detail.get("cutoff")))
        except ValueError:
            return f"the purge's cutoff {detail.get('cutoff')!r} is not a time"
        young = next((e for e in named if e.ts >= cutoff), None)
        if young is not None:
            return f"tombstone seq={young.seq} is of {young.ts.isoformat()}, not older than the purge's cutoff {cutoff}"
        held = set(detail.get("held_flows") or [])
        spared = next((e for e in named if e.flow_id is not None and e.flow_id in held), None)
        if spared is not None:
            return f"tombstone seq={spared.seq} is of flow {spared.flow_id}, which the purge names as held"
        return None

    def unclaimed(self) -> Event | None:
        """After the walk: the first tombstone whose purge event never came, or None."""
        if not self._waiting:
            return None
        return min((events[0] for events in self._waiting.values()), key=lambda e: e.seq)

    def summary(self) -> dict[str, Any]:
        return {"purges": self.purges, "tombstones": self.tombstones}
