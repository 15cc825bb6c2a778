"""Verification of the hash chain from its genesis, and of its signed heads against copies kept outside the store.

Takes the events in chain order (from a DuckDB connection, a journal or the admin API) and answers with a
``Verification``; the CLI and the admin API both call it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from addons.store.events import CHAIN_FORMATS, GENESIS, Event, chain_hash, checkpoint_message, link
from addons.store.keys import key_id, verify_signature
from addons.store.tombstones import PurgeLedger, tombstone_problem

Keys = Ed25519PublicKey | Mapping[str, Ed25519PublicKey] | None
"""One public key, a keyring (key id -> public key: every signing key the gateway has used), or None (signatures
not checked)."""


@dataclass
class Verification:
    """The outcome of walking the chain from its genesis.

    ``ok``: nothing was changed, removed or reordered and every signature holds; ``problem`` names the
    first bad event otherwise. ``unsigned_tail``: events after the last head a checkpoint signed (a crash
    left them; a running gateway signs them when asked). ``heads``: every signed checkpoint, to compare
    with the copies kept outside the store (the gateway's "warden checkpoint ..." log lines).
    ``signed_late``: ranges a gateway found unsigned at start-up (its ``startup`` event names them) and
    signed only then: a crash, a repair, or an edit of the stopped store's files; not signed in the normal
    course. ``external_heads``: the outcome of comparing ``heads`` with copies kept outside (``match_heads``)."""

    ok: bool
    events: int = 0
    head_seq: int = -1
    head_hash: str = GENESIS
    checkpoints: int = 0
    signed_seq: int = -1
    unsigned_tail: int = 0
    heads: list[dict[str, Any]] = field(default_factory=list)
    signed_late: list[dict[str, Any]] = field(default_factory=list)
    external_heads: dict[str, Any] | None = None
    problem: str | None = None
    bad_seq: int | None = None
    bad_flow_id: str | None = None
    notes: list[str] = field(default_factory=list)
    purges: int = 0  # retention purges on the chain...
    tombstones: int = 0  # ...and the events whose content they removed, each linked by its digest

    @property
    def status(self) -> str:
        """``broken``, ``no_signed_checkpoint`` (events, none signed), ``unsigned_tail`` or ``ok``: what
        ``warden verify`` exits with (1, 3, 3, 0)."""
        if not self.ok:
            return "broken"
        if self.events and not self.checkpoints:
            return "no_signed_checkpoint"
        return "unsigned_tail" if self.unsigned_tail else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, **asdict(self)}


@dataclass(frozen=True)
class LinkedRun:
    """Consecutive events the walk may pass at once, because the store's query found (``addons.store.chainwalk``):
    their seqs contiguous, each ``prev_hash`` the hash of the event before it, each chain form allowed and none
    below the one before, every content matching its hash, and none of them a kind the walk reads (checkpoint,
    startup, purge, keys), a tombstone, or an event a tombstone names as its purge. ``prev_hash``: the first
    event's; ``hash``: the last's."""

    first_seq: int
    last_seq: int
    prev_hash: str
    hash: str
    first_form: int
    last_form: int

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1


def verify_events(events: Iterator[Event | LinkedRun], public_key: Keys,
                  content_checked: Callable[[Event], bool | None] | None = None) -> Verification:
    """Walk the chain from its genesis: contiguous sequence numbers from 0, linked and recomputed hashes in
    the form each event names (never back from form 2 to 1), tombstones linked by the digest they keep and tied
    to the purge that made them, and checkpoints that sign the event before them with a key of ``public_key``
    (after a ``keys`` event that rotated the signing key, with the new key only).

    ``content_checked(event)``: whether the event's content was already hashed against its hash elsewhere and
    matched (True) or not (False), or None to hash it here (``addons.store.chainwalk`` hashes a store's rows
    elsewhere). A ``LinkedRun`` among the events stands for events already checked one against the next; the walk
    checks that it follows on from the event before it and passes it at once."""
    result = Verification(ok=True)
    prev_hash, expected_seq, form = GENESIS, 0, 1
    found: list[dict[str, Any]] = []  # ranges startup events name, until a checkpoint signs them
    keyring = _keyring(public_key)
    signer = _Signer()
    ledger = PurgeLedger()
    unsigned_purge: Event | None = None  # a purge event the next event must sign

    def fail(event: Event, why: str) -> Verification:
        result.ok = False
        result.problem = f"event seq={event.seq} kind={event.kind} flow={event.flow_id}: {why}"
        result.bad_seq, result.bad_flow_id = event.seq, event.flow_id
        return result

    for event in events:
        if isinstance(event, LinkedRun):
            why = _run_problem(event, expected_seq, prev_hash, form, ledger)
            if unsigned_purge is not None:
                return fail(unsigned_purge, UNSIGNED_PURGE)
            if why:
                result.ok = False
                result.problem = f"events seq={event.first_seq}..{event.last_seq}: {why}"
                result.bad_seq = event.first_seq
                return result
            form = event.last_form
            result.unsigned_tail += event.count
            prev_hash, expected_seq = event.hash, event.last_seq + 1
            result.events += event.count
            result.head_seq, result.head_hash = event.last_seq, event.hash
            continue
        if event.seq != expected_seq:
            if expected_seq == 0:
                return fail(event, "the chain does not begin at its genesis (seq=0): earlier events were removed")
            what = "missing" if event.seq > expected_seq else "out of order"
            return fail(event, f"expected seq={expected_seq}: event(s) {what}")
        if event.prev_hash != prev_hash:
            if expected_seq == 0:
                return fail(event, "the first event does not follow the genesis hash")
            return fail(event, "prev_hash does not match the previous event's hash (an event was removed or reordered)")
        event_form = event.chain_format or 1
        if event_form not in CHAIN_FORMATS or event_form < form:
            return fail(event, f"chain format {event_form} is not allowed after format {form}")
        form = event_form
        if event.tombstone is not None:
            why = tombstone_problem(event)
            if why:
                return fail(event, why)
            try:
                good = link(prev_hash, event.tombstone["digest"]) == event.hash
            except ValueError:
                good = False
            if not good:
                return fail(event, "the tombstone's digest does not link to the chain (the tombstone was changed)")
            ledger.tombstone(event)
        else:
            checked = content_checked(event) if content_checked is not None else None
            try:
                good = checked if checked is not None else chain_hash(prev_hash, event) == event.hash
            except ValueError:
                good = False
            if not good:
                return fail(event, "hash does not match the event's content (the event was changed)")
        why = ledger.reached(event) or (signer.rotated(event) if event.kind == "keys" else None)
        if why:
            return fail(event, why)
        if unsigned_purge is not None and event.kind != "checkpoint":
            return fail(unsigned_purge, UNSIGNED_PURGE)
        unsigned_purge = event if event.kind == "purge" else None
        if event.kind == "checkpoint":
            why = _check_checkpoint(event, prev_hash, keyring) or signer.signed(event)
            if why:
                return fail(event, why)
            detail = event.detail or {}
            result.heads.append({"seq": event.seq, "head_seq": detail["head_seq"], "head_hash": detail["head_hash"],
                                 "key_id": detail.get("key_id")})
            result.checkpoints += 1
            result.signed_seq, result.unsigned_tail = detail["head_seq"], 0
            result.signed_late += found
            found = []
        else:
            tail = (event.detail or {}).get("unsigned_tail") if event.kind == "startup" else None
            if tail is not None:
                why = _check_startup(event, tail, result.heads[-1]["seq"] if result.heads else -1)
                if why:
                    return fail(event, why)
                found.append({**tail, "startup_seq": event.seq})
            result.unsigned_tail += 1
        prev_hash, expected_seq = event.hash, event.seq + 1
        result.events += 1
        result.head_seq, result.head_hash = event.seq, event.hash
    if unsigned_purge is not None:
        return fail(unsigned_purge, UNSIGNED_PURGE)
    orphan = ledger.unclaimed()
    if orphan is not None and result.ok:
        assert orphan.tombstone is not None
        return fail(orphan, f"the tombstone names purge seq={orphan.tombstone['purge_seq']}, which is not a purge "
                            "event of the chain")
    result.purges, result.tombstones = ledger.purges, ledger.tombstones
    if keyring is None:
        result.notes.append("no public key given: checkpoint signatures were not checked")
    return result


# A purge removes content under signed heads, so it must be signed in the normal course: the gateway's purge signs
# it at once (``Store.sign_now`` on the writer), and an unsigned or late-signed purge is what a forger without the key
# would leave (a crash between the two as well: then the logs tell which).
UNSIGNED_PURGE = ("the purge is not signed at once by the checkpoint after it: a purge removes signed content, so "
                  "the gateway signs it at once; an unsigned (or signed-late) purge is what someone without the "
                  "signing key would leave behind")


def _run_problem(run: LinkedRun, expected_seq: int, prev_hash: str, form: int, ledger: PurgeLedger) -> str | None:
    """Why ``run`` may not be passed at once where the walk stands, or None. The query that made it leaves any
    event that breaks the chain out of a run, so that the walk names it as ever: this answers only if that query
    was wrong."""
    if run.first_seq != expected_seq or run.prev_hash != prev_hash:
        return f"the run does not follow on from seq={expected_seq - 1}"
    if not (form <= run.first_form <= run.last_form and run.last_form in CHAIN_FORMATS):
        return f"chain forms {run.first_form}..{run.last_form} are not allowed after format {form}"
    named = ledger.named_within(run.first_seq, run.last_seq)
    if named is not None:
        return f"tombstones name seq={named} as their purge, but it is not a purge event"
    return None


def _keyring(public_key: Keys) -> dict[str, Ed25519PublicKey] | None:
    if public_key is None or isinstance(public_key, Mapping):
        return None if public_key is None else dict(public_key)
    return {key_id(public_key): public_key}


def _check_checkpoint(event: Event, prev_hash: str, keyring: dict[str, Ed25519PublicKey] | None) -> str | None:
    """A checkpoint signs the head just before it, with a key of ``keyring``."""
    detail = event.detail or {}
    head_seq, head_hash = detail.get("head_seq"), detail.get("head_hash")
    if head_seq != event.seq - 1 or head_hash != prev_hash:
        return f"checkpoint vouches for seq={head_seq} hash={head_hash}, not for the event before it"
    if keyring is None:
        return None
    public_key = keyring.get(str(detail.get("key_id")))
    if public_key is None:
        given = ("key " if len(keyring) == 1 else "keys ") + ", ".join(sorted(keyring))
        return f"checkpoint signed by key {detail.get('key_id')}, not by the given {given}"
    if not verify_signature(public_key, checkpoint_message(head_seq, head_hash), detail.get("signature", "")):
        return "checkpoint signature is not valid"
    return None


class _Signer:
    """The signing key the chain says is in use: a ``keys`` event that rotated it names the key before (which
    signed the last checkpoint) and the key after (the only one that may sign from then on). So a retired key,
    even one that leaked, cannot sign a checkpoint after its rotation."""

    def __init__(self) -> None:
        self.current: str | None = None  # the key id of the last checkpoint, or the one a rotation named
        self.since: int | None = None  # the seq of the keys event that named it

    def rotated(self, event: Event) -> str | None:
        signing = (event.detail or {}).get("signing")
        if signing is None:
            return None
        if self.current is not None and signing.get("from") != self.current:
            return (f"the keys event rotates the signing key from {signing.get('from')}, but the chain was signed "
                    f"by {self.current}")
        self.current, self.since = signing.get("to"), event.seq
        return None

    def signed(self, event: Event) -> str | None:
        key = (event.detail or {}).get("key_id")
        if self.since is not None and key != self.current:
            return (f"checkpoint signed by key {key} after the keys event seq={self.since} rotated the signing key "
                    f"to {self.current}")
        self.current = key
        return None


def _check_startup(event: Event, tail: dict[str, Any], last_checkpoint_seq: int) -> str | None:
    """A startup event names (in ``tail``, its ``unsigned_tail``) exactly the events between the last checkpoint
    and itself."""
    want = {"first_seq": last_checkpoint_seq + 1, "last_seq": event.seq - 1,
            "count": event.seq - 1 - last_checkpoint_seq}
    if {k: tail.get(k) for k in want} != want:
        return (f"the startup event names unsigned events seq {tail.get('first_seq')}..{tail.get('last_seq')}, "
                f"but the chain has seq {want['first_seq']}..{want['last_seq']} there")
    return None


# The gateway's external anchor, one per checkpoint (addons/store/database.py): any prefix (time, level, logger)
# is allowed.
HEAD_LINE = re.compile(
    r"warden checkpoint seq=(\d+) head_seq=(\d+) head_hash=([0-9a-f]{64}) key_id=(\S+) signature=(\S+)"
)


def parse_heads(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The checkpoint heads in a gateway log (its "warden checkpoint seq=... head_seq=... head_hash=...
    key_id=... signature=..." lines), with their line numbers; every other line is ignored."""
    heads = []
    for number, line in enumerate(lines, 1):
        m = HEAD_LINE.search(line)
        if m:
            heads.append({"seq": int(m[1]), "head_seq": int(m[2]), "head_hash": m[3], "key_id": m[4],
                          "signature": m[5], "line": number})
    return heads


def match_heads(result: Verification, external: list[dict[str, Any]], source: str) -> Verification:
    """Compare the heads kept outside the store with the chain's signed checkpoints: every external head must
    be a checkpoint of the chain with the same seq, head and key. A history rewritten and re-signed with the
    gateway's own key verifies by itself; the heads logged before the rewrite do not match it."""
    chain = {h["seq"]: h for h in result.heads}
    matched, unmatched = 0, []
    for head in external:
        mine = chain.get(head["seq"])
        if mine is not None and all(mine[k] == head[k] for k in ("head_seq", "head_hash", "key_id")):
            matched += 1
            continue
        if mine is None:
            why = ("no checkpoint with that seq in the chain" if head["seq"] > result.head_seq or not result.ok
                   else f"event seq={head['seq']} of the chain is not a checkpoint")
        else:
            why = (f"the chain's checkpoint seq={head['seq']} signs head_seq={mine['head_seq']} "
                   f"head_hash={mine['head_hash']}")
        unmatched.append({**{k: head[k] for k in ("seq", "head_seq", "head_hash", "key_id", "line")}, "why": why})
    result.external_heads = {"source": source, "given": len(external), "matched": matched, "unmatched": unmatched}
    if unmatched and result.ok:
        first = unmatched[0]
        result.ok = False
        result.bad_seq = first["seq"]
        result.problem = (f"{len(unmatched)} of {len(external)} external heads are not in the chain; the first, "
                          f"{source} line {first['line']}: checkpoint seq={first['seq']} head_seq={first['head_seq']} "
                          f"head_hash={first['head_hash']}: {first['why']} (the store was rewritten after that head "
                          "was logged, or the log belongs to another store)")
    return result
