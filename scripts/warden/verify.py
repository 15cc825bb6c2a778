"""``warden verify`` and ``repair-journal``: check the record's hash chain and signatures, mend a damaged journal."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from addons.store.database import JournalDamaged, StoreError
from addons.store.keys import KeyFileError, signing_keyring
from addons.store.recovery import repair_journal
from addons.store.verification import Verification, match_heads, parse_heads
from scripts.warden.backend import Backend, BackendError, open_backend
from scripts.warden.options import State, admin_token, err, fail, out, progress

verify_app = typer.Typer()

EXIT_OK, EXIT_BROKEN, EXIT_UNUSABLE, EXIT_UNSIGNED = 0, 1, 2, 3
SHOWN_HEADS = 5


@verify_app.command()
def verify(
    pubkey: Annotated[Path, typer.Option(envvar="WARDEN_PUBKEY", help=(
        "The gateway's Ed25519 public key; the keys a rotation retired are read from the keyring beside it "
        "(warden-signing.keys/), so checkpoints signed before a rotation verify too."))] = Path(
        "certs/warden-signing.pub"
    ),
    as_json: Annotated[bool, typer.Option(
        "--json", help="The result as JSON (every signed head under 'heads').")] = False,
    heads: Annotated[Path | None, typer.Option(help=(
        "A file holding the checkpoint heads kept outside the store: the gateway's 'warden checkpoint seq=... "
        "head_hash=...' log lines (other lines are ignored). Each must be a checkpoint of the chain."))] = None,
) -> None:
    """Check the record: the hash chain from its genesis (seq 0), every checkpoint signature, and that a signed
    checkpoint covers every event. On a stopped store every event is hashed here (a worker process per core);
    through a running gateway, the gateway signs its current head and verifies the file it holds up to it, and the
    signed heads' keys are checked here against --pubkey's keyring.
    Prints the signed heads (seq, head hash, key id) to compare with the gateway's "warden checkpoint" log lines;
    --heads FILE compares them for you. Events a gateway found unsigned at start-up (a crash, a repair, or an edit
    of the stopped store's files) are named as signed late, apart from those signed in the normal course.

    \b
    Exit status:
      0  intact, and every event is covered by a signed checkpoint
      1  broken: an event was changed, removed, reordered or inserted, the chain does not begin at its
         genesis, a signature is invalid or by another key, the journal is damaged, or a head from
         --heads is not in the chain (the first problem is named)
      2  could not check (no store, unreadable key or heads file, gateway unreachable)
      3  intact, but an unsigned tail: events after the last signed checkpoint (a crash left them), or
         0 signed checkpoints at all. Before starting the gateway (which records them as found unsigned
         and signs them), check the store with --heads against the log lines kept outside it

    Example: warden verify --json
    """
    try:
        public_key = signing_keyring(pubkey)
    except KeyFileError as e:
        raise fail(f"--pubkey: {e}") from None
    external = _external_heads(heads) if heads is not None else None
    checkpoint, where = None, str(State.db)
    try:
        backend = open_backend(State.db, State.admin, admin_token)
    except JournalDamaged as e:
        result = Verification(ok=False, problem=str(e))
    except BackendError as e:
        raise fail(str(e)) from None
    else:
        where = backend.where
        try:
            checkpoint = backend.sign_checkpoint()
            result = _walk(backend, public_key, None if checkpoint is None else checkpoint["seq"])
        except BackendError as e:
            raise fail(str(e)) from None
        finally:
            backend.close()
    if external is not None:
        match_heads(result, external, str(heads))
    _report(result, checkpoint, where, as_json)
    raise typer.Exit({"broken": EXIT_BROKEN, "ok": EXIT_OK}.get(result.status, EXIT_UNSIGNED))


def _external_heads(path: Path) -> list[dict]:
    try:
        with path.open(errors="replace") as f:
            found = parse_heads(f)
    except OSError as e:
        raise fail(f"--heads: {e}") from None
    if not found:
        raise fail(f"--heads: {path}: no 'warden checkpoint seq=... head_seq=... head_hash=... key_id=... "
                    "signature=...' line in it")
    return found


def _walk(backend: Backend, public_key, until_seq: int | None) -> Verification:
    with progress() as bar:
        task = bar.add_task("verifying chain", total=None)
        return backend.verify(public_key, until_seq, lambda n: bar.advance(task, n))


def _report(result: Verification, checkpoint: dict | None, where: str, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({**result.as_dict(), "signed_now": checkpoint, "where": where}) + "\n")
        return
    if result.status == "broken":
        err.print(f"[bold red]chain BROKEN[/]: {result.problem}", highlight=False)
        if result.external_heads is not None:
            ext = result.external_heads
            err.print(f"  external heads: {ext['matched']} of {ext['given']} matched ({ext['source']})",
                      highlight=False)
        return
    if result.status == "no_signed_checkpoint":
        out.print(f"[yellow]0 SIGNED CHECKPOINTS[/]: the chain is intact ({result.events} events from the genesis, "
                  f"head seq={result.head_seq}), but no checkpoint signs any of it: nothing shows the gateway wrote "
                  f"this record (exit 3, as for an unsigned tail) ({where})", highlight=False)
    elif result.status == "ok":
        out.print(f"[green]chain OK[/]: {result.events} events from the genesis, {result.checkpoints} signed "
                  f"checkpoints, head seq={result.head_seq} hash={result.head_hash} ({where})", highlight=False)
    else:
        out.print(f"[yellow]UNSIGNED TAIL[/]: the chain is intact ({result.events} events from the genesis, head "
                  f"seq={result.head_seq}), but {result.unsigned_tail} events after the last signed head "
                  f"(seq={result.signed_seq}) are covered by no checkpoint: an unclean stop left them, or someone "
                  "edited the stopped store. Check it with --heads against the 'warden checkpoint' log lines kept "
                  "outside the store; a gateway started on it records the range as found unsigned, then signs it "
                  f"({where})", highlight=False)
    if result.tombstones:
        out.print(f"  {result.tombstones} events purged by {result.purges} retention purges: their tombstones keep the "
                  "digest of what was removed, and the chain links through them", highlight=False)
    if checkpoint is not None:
        out.print(f"  signed now by the gateway: checkpoint seq={checkpoint['seq']} head_seq={checkpoint['head_seq']}",
                  highlight=False)
    if result.heads:
        shown = result.heads[-SHOWN_HEADS:]
        out.print(f"  signed heads (the last {len(shown)} of {len(result.heads)}; all with --json), to compare with "
                  "the gateway's 'warden checkpoint' log lines:", highlight=False)
        for head in shown:
            out.print(f"    seq={head['seq']} head_seq={head['head_seq']} head_hash={head['head_hash']} "
                      f"key_id={head['key_id']}", highlight=False)
    for late in result.signed_late:
        out.print(f"  [yellow]signed late (found unsigned at start-up, seq {late['first_seq']}..{late['last_seq']})"
                  f"[/]: {late['count']} events no checkpoint had signed when a gateway started (a crash, a repair, "
                  f"or an edit of the stopped store); recorded by startup event seq={late['startup_seq']}. Compare the "
                  "heads before it with the log lines kept outside (--heads)", highlight=False)
    if result.external_heads is not None:
        ext = result.external_heads
        out.print(f"  external heads: {ext['matched']} of {ext['given']} matched ({ext['source']})", highlight=False)
    for note in result.notes:
        out.print(f"  note: {note}", highlight=False)


@verify_app.command("repair-journal")
def repair_journal_command() -> None:
    """Repair the journal after start-up refused it (the gateway must be stopped). Keeps a copy of the journal
    beside it (NAME.journal.damaged-TIME), loads every event that still continues the chain, sets aside the
    rest and records what it did as a 'journal_repair' event on the chain. Example: warden --db data/warden.duckdb
    repair-journal
    """
    try:
        report = repair_journal(State.db)
    except StoreError as e:
        raise fail(str(e)) from None
    if not report["repaired"]:
        out.print(f"nothing to repair: {report['reason']} ({report['journal']})", highlight=False)
        return
    out.print(f"repaired {report['journal']}: loaded {report['loaded']} of {report['lines']} lines; a copy of the "
              f"journal as it was is kept as {report['copy']}; recorded as event seq={report['repair_event_seq']}",
              highlight=False)
    for problem in report["problems"]:
        out.print(f"  {problem}", highlight=False)
