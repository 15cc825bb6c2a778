"""One signed file per interaction: a flow's events (the request as it left, masked; the response), who sent it,
its findings, decisions and approvals, and the proof that each event is in the chain under a signed checkpoint.

Files: ``interaction.json`` (the readable account), ``events.jsonl`` (the flow's events as stored, so their
digests can be recomputed), ``proofs.json`` (one inclusion proof per event, ``addons.store.proofs``), and the
key, fingerprint, manifest and signature of every pack. ``check_proofs`` is what ``warden evidence verify``
runs on it, with the pack's key (or the one pinned).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from addons.evidence.manifest import Pack, fingerprint, sign_folder
from addons.evidence.request import EvidenceError, NoSuchFlow
from addons.store.events import COLUMN_NAMES, Event, event_from_json, event_to_json
from addons.store.keys import SigningKey, key_id, public_pem
from addons.store.proofs import InclusionProof, ProofError, prove_inclusion, verify_inclusion
from addons.store.queries import flow_events, iter_events, iter_events_until

INTERACTION, EVENTS, PROOFS = "interaction.json", "events.jsonl", "proofs.json"
CHECKPOINT_KEY = "checkpoint-key.pub"  # the retired key that signed the covering checkpoint, if not the pack's own


def _approval_events(con: duckdb.DuckDBPyConnection, flow: list[Event]) -> list[Event]:
    """The approval events of the approvals this flow waited on or passed under (named in its request event)."""
    ids = {str(a["approval"]) for e in flow if e.kind == "request"
           for a in [(e.detail or {}).get("approval") or {}] if a.get("approval")}
    if not ids:
        return []
    cols = ", ".join(f'"{c}"' for c in COLUMN_NAMES)
    rows = con.execute(f"""SELECT {cols} FROM events WHERE kind = 'approval'
                           AND list_contains(?, record->'detail'->>'approval') ORDER BY seq""",
                       [sorted(ids)]).fetchall()
    return [Event.from_row(row) for row in rows]


def _covering_checkpoint(con: duckdb.DuckDBPyConnection, last_seq: int) -> Event:
    cols = ", ".join(f'"{c}"' for c in COLUMN_NAMES)
    rows = con.execute(f"""SELECT {cols} FROM events WHERE kind = 'checkpoint'
                           AND CAST(record->'detail'->>'head_seq' AS BIGINT) >= ? ORDER BY seq LIMIT 1""",
                       [last_seq]).fetchall()
    if not rows:
        raise EvidenceError(f"no signed checkpoint covers event seq={last_seq} yet: a running gateway signs one when "
                            "asked (the CLI asks it); on a stopped store, start the gateway to sign its unsigned tail")
    return Event.from_row(rows[0])


def _body(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def _account(flow_id: str, flow: list[Event], approvals: list[Event], checkpoint: Event) -> dict[str, Any]:
    """The readable account of the interaction (``interaction.json``)."""
    request = next((e for e in flow if e.kind == "request"), None)
    answer = next((e for e in reversed(flow) if e.kind in ("response", "error")), None)
    detail = (request.detail or {}) if request else {}

    def part(e: Event | None, *names: str) -> dict[str, Any] | None:
        if e is None:
            return None
        return {**{n: getattr(e, n) for n in names}, "ts": e.ts.isoformat(), "seq": e.seq, "headers": e.headers,
                "body": _body(e.body), "body_size": e.body_size, "body_truncated": e.body_truncated,
                "original": (e.detail or {}).get("original")}

    return {
        "flow_id": flow_id,
        "identity": detail.get("identity") or ({"claimed_sub": detail["claimed_sub"], "validated": False}
                                               if "claimed_sub" in detail else None),
        "request": part(request, "method", "scheme", "host", "port", "path", "http_version", "upstream", "model",
                        "client", "mode"),
        "response": part(answer, "kind", "status", "fate", "reason", "tokens_in", "tokens_out",
                         "latency_upstream_ms", "latency_total_ms"),
        "findings": {"request": detail.get("pii"), "response": ((answer.detail or {}).get("pii") if answer else None),
                     "request_counts": request.entities if request else None,
                     "response_counts": answer.entities if answer else None},
        "decision": {"decision": request.decision if request else None, "rule": request.rule if request else None,
                     "reason": request.reason if request else None, "fate": answer.fate if answer else None,
                     "answer": (answer.detail or {}).get("answer") if answer else None},
        "approvals": [{"seq": e.seq, "ts": e.ts.isoformat(), "step": e.fate, "user": e.user, "rule": e.rule,
                       "reason": e.reason, "approval": (e.detail or {}).get("approval"),
                       "grant": (e.detail or {}).get("grant"), "groups": (e.detail or {}).get("groups")}
                      for e in approvals],
        "checkpoint": {"seq": checkpoint.seq, **{k: (checkpoint.detail or {}).get(k)
                                                 for k in ("head_seq", "head_hash", "key_id", "signature")}},
        "note": "Bodies are as the record keeps them: masked. 'original' says whether masking changed a body and "
                "its original was kept encrypted (readable only with the originals key) or discarded.",
    }


def build_interaction(con: duckdb.DuckDBPyConnection, flow_id: str, key: SigningKey, folder: Path,
                      keys: Mapping[str, Ed25519PublicKey] | None = None) -> dict[str, Any]:
    """Write the one-interaction pack of ``flow_id`` into the empty ``folder`` and sign it with ``key``. ``keys``:
    the signing keyring; when a key a rotation retired signed the covering checkpoint, the pack carries that public
    key too (``CHECKPOINT_KEY``), vouched for by the signature of the key that signs the pack."""
    flow = flow_events(con, flow_id)
    if not flow:
        raise NoSuchFlow(f"no flow {flow_id} in the record (see `warden flows`)")
    events = sorted({e.seq: e for e in [*flow, *_approval_events(con, flow)]}.values(), key=lambda e: e.seq)
    checkpoint = _covering_checkpoint(con, events[-1].seq)
    head_seq = (checkpoint.detail or {})["head_seq"]
    chain = list(iter_events_until(iter_events(con, events[0].seq - 1), head_seq))
    position = {e.seq: i for i, e in enumerate(chain)}
    proofs = []
    try:
        for event in events:
            proofs.append(prove_inclusion(chain[position[event.seq]:], checkpoint).as_dict())
    except ProofError as e:
        raise EvidenceError(f"flow {flow_id}: {e}") from None
    approvals = [e for e in events if e.kind == "approval"]
    (folder / INTERACTION).write_text(json.dumps(_account(flow_id, flow, approvals, checkpoint), indent=2,
                                                 default=str) + "\n")
    (folder / EVENTS).write_text("".join(json.dumps(event_to_json(e)) + "\n" for e in events))
    (folder / PROOFS).write_text(json.dumps(proofs, indent=2) + "\n")
    signer = (checkpoint.detail or {}).get("key_id")
    if isinstance(signer, str) and signer != key.key_id and keys is not None and signer in keys:
        (folder / CHECKPOINT_KEY).write_bytes(public_pem(keys[signer]))
    sign_folder(folder, key)
    return {"flow_id": flow_id, "events": len(events), "checkpoint_seq": checkpoint.seq,
            "fingerprint": fingerprint(key.public)}


def check_proofs(pack: Pack, public: Ed25519PublicKey) -> list[str]:
    """Each event of a one-interaction pack proven under a checkpoint ``public`` signed (or the retired key the pack
    carries as ``CHECKPOINT_KEY``, listed in the manifest ``public`` signed); the problems found."""
    names = pack.names()
    if EVENTS not in names and PROOFS not in names:
        return []  # a pack for a period: its chain verification is verification.json
    keyring = {key_id(public): public}
    if CHECKPOINT_KEY in names:
        try:
            retired = serialization.load_pem_public_key(pack.read(CHECKPOINT_KEY))
        except ValueError:
            return [f"{CHECKPOINT_KEY}: not a readable PEM public key"]
        if not isinstance(retired, Ed25519PublicKey):
            return [f"{CHECKPOINT_KEY}: not an Ed25519 public key"]
        keyring[key_id(retired)] = retired
    try:
        events = [event_from_json(json.loads(line)) for line in pack.read(EVENTS).decode().splitlines() if line]
        proofs = {p["seq"]: InclusionProof(**p) for p in json.loads(pack.read(PROOFS))}
    except (KeyError, TypeError, ValueError) as e:
        return [f"{EVENTS} or {PROOFS}: unreadable ({e})"]
    problems = []
    for event in events:
        proof = proofs.get(event.seq)
        if proof is None:
            problems.append(f"{EVENTS}: event seq={event.seq} has no proof in {PROOFS}")
            continue
        why = verify_inclusion(event, proof, keyring)
        if why is not None:
            problems.append(f"{EVENTS}: event seq={event.seq} ({event.kind}) is not proven in the chain: {why}")
    if not events:
        problems.append(f"{EVENTS}: no event")
    return problems
