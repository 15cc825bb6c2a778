"""An evidence pack for a period and filters, built in a folder and signed: the one builder the CLI (on a stopped
store) and the gateway (through the admin API) both call."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from addons.evidence import tables
from addons.evidence.manifest import FINGERPRINT, MANIFEST, PUBLIC_KEY, SIGNATURE, fingerprint, sign_folder
from addons.evidence.report import render
from addons.evidence.request import filter_json
from addons.evidence.summary import gateway_facts, summarise
from addons.store.chainwalk import verify_store
from addons.store.keys import SigningKey
from addons.store.search import FlowFilter
from addons.store.verification import Keys

STEPS = ("flows", "approvals", "refusals", "chain verification", "report", "manifest")
VERIFY_TICK = 10_000  # events between two progress reports while the chain is walked


@dataclass
class Progress:
    """Where a long build reports: ``step(name)`` when a step begins (``STEPS``, in order), ``events(n)`` as the
    chain walk advances."""

    step: Callable[[str], None] = lambda name: None
    events: Callable[[int], None] = lambda n: None


def covering(heads: list[dict[str, Any]], first_seq: int | None, last_seq: int | None) -> list[dict[str, Any]]:
    """The signed heads that cover ``first_seq``..``last_seq``: those inside it, and the first at or after its end."""
    if first_seq is None or last_seq is None:
        return []
    out = []
    for head in heads:
        if head["head_seq"] >= first_seq:
            out.append(head)
            if head["head_seq"] >= last_seq:
                break
    return out


def build_pack(con: duckdb.DuckDBPyConnection, f: FlowFilter, key: SigningKey, folder: Path, *, where: str,
               signed_until: int | None = None, progress: Progress | None = None, keys: Keys = None,
               hash_here: bool = False) -> dict[str, Any]:
    """Write the pack for ``f`` into the empty ``folder`` and sign it with ``key``; returns its counts.

    ``signed_until``: the seq of a checkpoint the caller had signed just before (a running gateway), so the
    verification covers the whole chain up to it; later events are left to the next pack. ``keys``: the signing
    keyring the chain is verified with (checkpoints signed before a rotation; default: ``key`` alone).
    ``hash_here``: the chain's contents hashed by this process's Python (``addons.store.chainwalk``)."""
    progress = progress or Progress()
    f = FlowFilter(**{**vars(f), "limit": None})
    files: list[str] = []
    progress.step(STEPS[0])
    tables.stage(con, f)
    counts = {}
    for index, table in enumerate(tables.TABLES):
        if index:
            progress.step(STEPS[index])
        files += tables.copy_out(con, table, folder)
        counts[table] = tables.count(con, table)
    progress.step(STEPS[3])
    result = verify_store(con, keys if keys is not None else key.public, signed_until, progress=progress.events,
                          hash_here=hash_here)
    facts = gateway_facts(con, f)
    heads = covering(result.heads, facts["first_seq"], facts["last_seq"])
    print_ = fingerprint(key.public)
    verification = {**result.as_dict(), "covering_checkpoints": heads, "period_seq": [facts["first_seq"],
                    facts["last_seq"]], "signed_until": signed_until, "key_fingerprint": print_}
    (folder / "verification.json").write_text(json.dumps(verification, indent=2, default=str) + "\n")
    progress.step(STEPS[4])
    summary = summarise(con, f)
    summary.gateway = facts
    generated = datetime.now(UTC).replace(tzinfo=None)
    names = sorted([*files, "verification.json", "report.html", PUBLIC_KEY, FINGERPRINT, MANIFEST, SIGNATURE])
    (folder / "report.html").write_text(render(
        summary, filters=filter_json(f), verification=verification, covering=heads, fingerprint=print_,
        files=names, generated=generated, where=where))
    for table in tables.TABLES:
        con.execute(f"DROP TABLE IF EXISTS pack_{table}")
    progress.step(STEPS[5])
    sign_folder(folder, key)
    return {**counts, "chain": result.status, "fingerprint": print_, "files": names}
