"""``warden show``: one whole flow (masked bodies, or originals with the key) and the proof that it is on record.

The proof of each event is an inclusion proof (``addons.store.proofs``): the event's own content and the digests
of the events after it lead, link by link, to a chain head that a checkpoint signed. It is checked here, with the
gateway's public key, so a changed event, digest or signature shows as a failed proof.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from addons.store.events import Event
from addons.store.keys import KeyFileError, OriginalsKey, signing_keyring
from addons.store.proofs import Coverage, ProofError, verify_inclusion
from addons.store.queries import headers_of
from scripts.warden.backend import BackendError
from scripts.warden.flowfile import body_of
from scripts.warden.flows import find_flow, text_of
from scripts.warden.options import connect, fail, originals_key, out

show_app = typer.Typer()

EXIT_PROVEN, EXIT_BROKEN, EXIT_UNPROVEN = 0, 1, 3


@dataclass
class Proven:
    """One event's proof and what checking it found: ``verified`` None when it could not be checked."""

    verified: bool | None
    problem: str | None = None
    inclusion: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"verified": self.verified, "problem": self.problem, **self.inclusion}


def prove(event: Event, coverage: Coverage | None, public_key: Mapping[str, Ed25519PublicKey] | str) -> Proven:
    """Check ``event`` against ``coverage`` with ``public_key`` (or the reason no key could be loaded)."""
    if coverage is None:
        return Proven(None, f"no signed checkpoint covers seq={event.seq} yet: a running gateway signs one when "
                            "asked; a store a crash left unsigned is signed when the gateway starts (warden verify)")
    try:
        proof = coverage.proof(event)
    except ProofError as e:
        return Proven(None, str(e))
    if isinstance(public_key, str):
        return Proven(None, public_key, proof.as_dict())
    problem = verify_inclusion(event, proof, public_key)
    return Proven(problem is None, problem, proof.as_dict())


@show_app.command()
def show(
    flow_id: Annotated[str, typer.Argument(help="The flow's id (or a unique prefix of it).")],
    originals: Annotated[bool, typer.Option(
        help="Show original bodies where masking changed them (needs the key).")] = False,
    key: Annotated[Path | None, typer.Option(
        help="The originals key file (default certs/warden-originals.key or $WARDEN_ORIGINALS_KEY).")] = None,
    pubkey: Annotated[Path, typer.Option(envvar="WARDEN_PUBKEY", help=(
        "The gateway's Ed25519 public key, to check the proof (and the keys rotations retired, kept beside it in "
        "warden-signing.keys/)."))] = Path("certs/warden-signing.pub"),
    as_json: Annotated[bool, typer.Option("--json", help=(
        "The flow's events as JSON lines, each with its proof under 'proof'."))] = False,
) -> None:
    """Show one whole flow: every event, headers redacted, bodies masked, and its proof: each event's chain position
    (seq), prev_hash and hash, and the signed checkpoint that covers it, checked on the spot. Through a running
    gateway, the gateway signs its head first when no checkpoint covers the flow yet.

    \b
    Exit status:
      0  shown, and every event is proven up to a signed checkpoint
      1  shown, but a proof fails: the event, the chain after it or the checkpoint was changed
      2  not shown (no such flow, store or gateway unreachable, unreadable key)
      3  shown, but not proven: no checkpoint covers it yet, no public key, or events older than chain form 2

    Example: warden show 0f8c12ab
    """
    backend = connect()
    try:
        events = find_flow(backend, flow_id)
        coverage = backend.coverage(events[0].seq, events[-1].seq)
    except BackendError as e:
        raise fail(str(e)) from None
    finally:
        backend.close()
    orig_key = originals_key(key) if originals else None
    try:
        public_key: Mapping[str, Ed25519PublicKey] | str = signing_keyring(pubkey)  # and the keys rotations retired
    except KeyFileError as e:
        public_key = f"not checked: --pubkey: {e}"
    proofs = [prove(event, coverage, public_key) for event in events]
    if as_json:
        _print_json(events, proofs, orig_key)
    else:
        _print_text(events, proofs, coverage, orig_key)
    if any(p.verified is False for p in proofs):
        raise typer.Exit(EXIT_BROKEN)
    if any(p.verified is None for p in proofs):
        raise typer.Exit(EXIT_UNPROVEN)


def _print_json(events: list[Event], proofs: list[Proven], orig_key: OriginalsKey | None) -> None:
    for event, proven in zip(events, proofs, strict=True):
        data = {k: v for k, v in vars(event).items() if k not in ("body", "original_enc", "stored_record")}
        data["ts"] = event.ts.isoformat()
        data["body"] = text_of(body_of(event, orig_key))
        data["original"] = "encrypted" if event.original_enc is not None else None
        data["proof"] = proven.as_dict()
        sys.stdout.write(json.dumps(data, default=str) + "\n")


def _print_text(events: list[Event], proofs: list[Proven], coverage: Coverage | None,
                orig_key: OriginalsKey | None) -> None:
    for event, proven in zip(events, proofs, strict=True):
        out.rule(f"[bold]{event.kind}[/] seq={event.seq} {event.ts.isoformat()} UTC  fate={event.fate or '-'}")
        if event.kind == "request":
            out.print(f"{event.method} {event.scheme}://{event.host}:{event.port}{event.path}  user={event.user or '-'}"
                      f"  decision={event.decision or '-'} ({event.rule or '-'})", highlight=False)
        elif event.kind == "response":
            out.print(f"HTTP {event.status}  upstream {event.latency_upstream_ms} ms,"
                      f" total {event.latency_total_ms} ms, tokens {event.tokens_in}/{event.tokens_out}",
                      highlight=False)
        else:
            out.print(f"{event.reason}", highlight=False)
        if event.kind != "request" and event.decision:  # what answer rules did to the answer
            out.print(f"answer: {event.decision} ({event.rule or '-'}): {event.reason or ''}", highlight=False)
        for name, value in headers_of(event):
            out.print(f"  [dim]{name}:[/] {value}", highlight=False)
        body = text_of(body_of(event, orig_key))
        if body:
            out.print(body, highlight=False, markup=False)
        if event.original_enc is not None and orig_key is None:
            out.print("[dim](masking changed this body; the original is stored encrypted: --originals)[/]")
        mark = {True: "proven", False: "PROOF FAILS", None: "not proven"}[proven.verified]
        out.print(f"[dim]chain:[/] seq={event.seq} prev_hash={event.prev_hash} hash={event.hash}  {mark}"
                  + (f": {proven.problem}" if proven.problem else ""), highlight=False)
    out.rule("[bold]proof[/]")
    if coverage is not None:
        c = coverage.checkpoint
        out.print(f"checkpoint seq={c['seq']} signs head seq={c['head_seq']} head_hash={c['head_hash']}"
                  f" key_id={c['key_id']}", highlight=False)
        out.print(f"  signature={c['signature']}", highlight=False)
    failed = [(e, p) for e, p in zip(events, proofs, strict=True) if p.verified is False]
    unproven = [(e, p) for e, p in zip(events, proofs, strict=True) if p.verified is None]
    if failed:  # a changed event fails its own proof and those of the events before it, which link through it
        seqs = ", ".join(str(e.seq) for e, _ in failed)
        out.print(f"[bold red]PROOF FAILS[/] for seq={seqs}: {failed[-1][1].problem}", highlight=False)
    elif unproven:
        event, proven = unproven[0]
        out.print(f"[bold yellow]NOT PROVEN[/] from seq={event.seq}: {proven.problem}", highlight=False)
    else:
        out.print(f"[bold green]PROVEN[/]: each of the {len(events)} events of this flow is in the chain under the "
                  f"signed checkpoint (digests of {len(coverage.digests) if coverage else 0} later events, "
                  "checked with the public key)", highlight=False)
