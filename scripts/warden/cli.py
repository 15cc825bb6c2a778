"""``warden``: search, show, export and verify what the gateway recorded.

Every command reads the DuckDB file (``--db``) when the gateway is stopped and the gateway's admin
API (``--admin``) while it runs. Examples::

\b
    warden flows --user alice --since 2h            # a table; --json for machines
    warden show 0f8c...                             # one flow, masked bodies
    warden export-flows -o flows.mitm               # then: mitmweb --rfile flows.mitm
    warden verify --heads gateway.log               # exit 0 intact and signed, 1 tampered, 3 unsigned
    warden repair-journal                           # after start-up refused a damaged journal
"""

from __future__ import annotations

import getpass
import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from addons.rules.durations import DurationError, parse_duration
from addons.rules.model import IdentityConfig
from addons.store.database import JournalDamaged, StoreError
from addons.store.keys import KeyFileError, OriginalsKey, load_public_key
from addons.store.queries import (
    FlowFilter,
    Verification,
    headers_of,
    match_heads,
    parse_heads,
    parse_when,
    verify_events,
)
from addons.store.recovery import repair_journal
from scripts.warden.backend import Backend, BackendError, open_backend
from scripts.warden.flowfile import body_of, to_flows, write_flows
from scripts.warden.rules import rules_app

DEFAULT_ORIGINALS_KEY = Path("certs/warden-originals.key")

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
app.add_typer(rules_app, name="rules")
out = Console()
err = Console(stderr=True)


class State:
    db: str = "data/warden.duckdb"
    admin: str = "127.0.0.1:8081"
    token: str | None = None
    issuer_key: Path = Path("certs/warden-issuer.key")
    rules: Path = Path("rules/default.yaml")


def _identity() -> IdentityConfig:
    """The rules file's ``identity`` section (defaults if the file does not exist); credentials are not resolved."""
    if not State.rules.exists():
        return IdentityConfig()
    try:
        raw = yaml.safe_load(State.rules.read_text()) or {}
        return IdentityConfig.model_validate(raw.get("identity") or {} if isinstance(raw, dict) else {})
    except (OSError, yaml.YAMLError, ValidationError) as e:
        raise _fail(f"--rules: {State.rules}: identity: {e}") from None


def _admin_token() -> str | None:
    """--token, else a five-minute token signed with the embedded issuer's key (if this user can read it) for
    the rules file's identity.audience and first of identity.admin_groups."""
    if State.token:
        return State.token
    if not State.issuer_key.exists():
        return None
    from addons.auth.issuer import EmbeddedIssuer

    try:
        issuer = EmbeddedIssuer.load_or_create(State.issuer_key)
    except KeyFileError:
        return None
    identity = _identity()
    groups = [identity.admin_groups[0]]
    *parents, leaf = identity.groups_claim.split(".")
    claim: dict = {leaf: groups}
    for name in reversed(parents):
        claim = {name: claim}
    return issuer.mint(f"cli:{getpass.getuser()}", audience=identity.audience, groups=groups, ttl=300, extra=claim)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _backend() -> Backend:
    try:
        return open_backend(State.db, State.admin, _admin_token)
    except (BackendError, JournalDamaged) as e:
        raise _fail(str(e)) from None


def _originals_key(path: Path | None) -> OriginalsKey:
    """--key, else $WARDEN_ORIGINALS_KEY, else certs/warden-originals.key; never creates one."""
    try:
        if path is not None:
            return OriginalsKey.load(path)
        return OriginalsKey.from_env() or OriginalsKey.load(DEFAULT_ORIGINALS_KEY)
    except KeyFileError as e:
        raise _fail(str(e)) from None


@app.callback()
def main_options(
    db: Annotated[str, typer.Option(envvar="WARDEN_DB", help="The store file (used when the gateway is stopped).")] = State.db,
    admin: Annotated[str, typer.Option(envvar="WARDEN_ADMIN", help="The gateway's admin API (used while it runs).")] = State.admin,
    token: Annotated[str | None, typer.Option(envvar="WARDEN_TOKEN", help=(
        "Token for the admin API (one of identity.admin_groups). Default: signed on the spot with the embedded "
        "issuer's key, for the --rules file's identity.audience and first admin group, when this user can read it."))] = None,
    issuer_key: Annotated[Path, typer.Option(envvar="WARDEN_ISSUER_KEY", help="The embedded issuer's key.")] = State.issuer_key,
    rules: Annotated[Path, typer.Option(envvar="WARDEN_RULES", help=(
        "The gateway's rules file: its identity.audience and identity.admin_groups shape the CLI's own token."))] = State.rules,
) -> None:
    State.db, State.admin, State.token, State.issuer_key, State.rules = db, admin, token, issuer_key, rules


def _when(value: str | None, name: str):
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as e:
        raise _fail(f"--{name}: {e}") from None


@app.command()
def flows(
    user: Annotated[str | None, typer.Option(help="Only this identity (sub).")] = None,
    host: Annotated[str | None, typer.Option(help="Only this upstream host.")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601, UTC) or duration ago (15m, 2h, 7d).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time or duration ago.")] = None,
    decision: Annotated[str | None, typer.Option(help="Only this policy decision (allow, block).")] = None,
    fate: Annotated[str | None, typer.Option(help="Only this fate (completed, host_not_allowed, upstream_error, client_gone, ...).")] = None,
    entity: Annotated[str | None, typer.Option(help="Only flows where this entity was masked (EMAIL_ADDRESS, CREDIT_CARD, ...).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many flows, newest first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """List recorded flows, newest first. Example: warden flows --user alice --since 2h --entity CREDIT_CARD --json"""
    f = FlowFilter(user=user, host=host, since=_when(since, "since"), until=_when(until, "until"),
                   decision=decision, fate=fate, entity=entity, limit=limit)
    backend = _backend()
    try:
        rows = backend.flows(f)
    except BackendError as e:
        raise _fail(str(e)) from None
    finally:
        backend.close()
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row, default=str) + "\n")
        return
    table = Table(title=f"{len(rows)} flows ({backend.where})", title_justify="left", pad_edge=False)
    # (column, min width): short columns keep their width, long ones give way with an ellipsis.
    # What people scan for first comes first, so a narrow terminal crops the least useful columns.
    for column, width in (("time (UTC)", 14), ("flow", 8), ("user", 5), ("status", 6), ("fate", 9), ("method", 7),
                          ("host", 9), ("path", 6), ("ms", 4), ("tokens", 6), ("masked", 6)):
        table.add_column(column, no_wrap=True, overflow="ellipsis", min_width=width)
    for row in rows:
        tokens = "" if row["tokens_in"] is None else f"{row['tokens_in']}/{row['tokens_out']}"
        table.add_row(
            str(row["started"])[5:19], row["flow_id"][:8], row["user"] or "-", str(row["status"] or "-"), row["fate"],
            row["method"], f"{row['host']}:{row['port']}", row["path"] or "",
            "" if row["latency_total_ms"] is None else f"{row['latency_total_ms']:.0f}", tokens,
            _masked(row.get("entities"), row.get("response_entities")),
        )
    out.print(table)


def _masked(request: dict | None, response: dict | None) -> str:
    """``EMAIL_ADDRESS×2 PERSON`` for the request, ``| ...`` for the response."""
    def one(counts: dict | None) -> str:
        return " ".join(f"{k}×{v}" if v > 1 else k for k, v in (counts or {}).items())

    return one(request) + (f" | {one(response)}" if response else "")


def _find_flow(backend: Backend, flow_id: str):
    events = backend.flow_events(flow_id)
    if not events and len(flow_id) < 36:
        matches = [r["flow_id"] for r in backend.flows(FlowFilter(limit=1_000_000)) if r["flow_id"].startswith(flow_id)]
        if len(matches) > 1:
            raise _fail(f"{flow_id!r} matches {len(matches)} flows; give more of the id")
        if matches:
            events = backend.flow_events(matches[0])
    if not events:
        raise _fail(f"no flow {flow_id!r} in {backend.where}", 1)
    return events


def _text(body: bytes | None) -> str:
    if not body:
        return ""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(body)} bytes, not UTF-8>"


@app.command()
def show(
    flow_id: Annotated[str, typer.Argument(help="The flow's id (or a unique prefix of it).")],
    originals: Annotated[bool, typer.Option(help="Show original bodies where masking changed them (needs the key).")] = False,
    key: Annotated[Path | None, typer.Option(help="The originals key file (default certs/warden-originals.key or $WARDEN_ORIGINALS_KEY).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The flow's events as JSON.")] = False,
) -> None:
    """Show one whole flow: every event, headers redacted, bodies masked. Example: warden show 0f8c12ab"""
    backend = _backend()
    try:
        events = _find_flow(backend, flow_id)
    except BackendError as e:
        raise _fail(str(e)) from None
    finally:
        backend.close()
    orig_key = _originals_key(key) if originals else None
    if as_json:
        for event in events:
            data = {k: v for k, v in vars(event).items() if k not in ("body", "original_enc", "stored_record")}
            data["ts"] = event.ts.isoformat()
            data["body"] = _text(body_of(event, orig_key))
            data["original"] = "encrypted" if event.original_enc is not None else None
            sys.stdout.write(json.dumps(data, default=str) + "\n")
        return
    for event in events:
        out.rule(f"[bold]{event.kind}[/] seq={event.seq} {event.ts.isoformat()} UTC  fate={event.fate or '-'}")
        if event.kind == "request":
            out.print(f"{event.method} {event.scheme}://{event.host}:{event.port}{event.path}  user={event.user or '-'}"
                      f"  decision={event.decision or '-'} ({event.rule or '-'})", highlight=False)
        elif event.kind == "response":
            out.print(f"HTTP {event.status}  upstream {event.latency_upstream_ms} ms, total {event.latency_total_ms} ms,"
                      f" tokens {event.tokens_in}/{event.tokens_out}", highlight=False)
        else:
            out.print(f"{event.reason}", highlight=False)
        for name, value in headers_of(event):
            out.print(f"  [dim]{name}:[/] {value}", highlight=False)
        body = _text(body_of(event, orig_key))
        if body:
            out.print(body, highlight=False, markup=False)
        if event.original_enc is not None and orig_key is None:
            out.print("[dim](masking changed this body; the original is stored encrypted: --originals)[/]")


@app.command("export-flows")
def export_flows(
    output: Annotated[Path, typer.Option("-o", "--output", help="The mitmproxy flow file to write.")],
    originals: Annotated[bool, typer.Option(help="Put original bodies in place of masked ones (needs the key).")] = False,
    key: Annotated[Path | None, typer.Option(help="The originals key file.")] = None,
) -> None:
    """Write every recorded flow to a mitmproxy flow file. Example: warden export-flows -o flows.mitm && mitmweb --rfile flows.mitm"""
    orig_key = _originals_key(key) if originals else None
    backend = _backend()
    try:
        with _progress() as progress:
            task = progress.add_task("reading events", total=None)
            events = []
            for event in backend.events():
                events.append(event)
                progress.advance(task)
            count = write_flows(str(output), to_flows(events, orig_key))
    except (BackendError, KeyFileError) as e:
        raise _fail(str(e)) from None
    finally:
        backend.close()
    err.print(f"wrote {count} flows to {output} (open with: mitmweb --rfile {output})", highlight=False)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


EXIT_OK, EXIT_BROKEN, EXIT_UNUSABLE, EXIT_UNSIGNED = 0, 1, 2, 3
SHOWN_HEADS = 5


@app.command()
def verify(
    pubkey: Annotated[Path, typer.Option(envvar="WARDEN_PUBKEY", help="The gateway's Ed25519 public key.")] = Path(
        "certs/warden-signing.pub"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="The result as JSON (every signed head under 'heads').")] = False,
    heads: Annotated[Path | None, typer.Option(help="A file holding the checkpoint heads kept outside the store: the "
                                                   "gateway's 'warden checkpoint seq=... head_hash=...' log lines (other "
                                                   "lines are ignored). Each must be a checkpoint of the chain.")] = None,
) -> None:
    """Check the record: the hash chain from its genesis (seq 0), every checkpoint signature, and that a signed
    checkpoint covers every event. Through a running gateway, it first has the gateway sign its current head.
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
        public_key = load_public_key(pubkey)
    except KeyFileError as e:
        raise _fail(f"--pubkey: {e}") from None
    external = _external_heads(heads) if heads is not None else None
    checkpoint, where = None, str(State.db)
    try:
        backend = open_backend(State.db, State.admin, _admin_token)
    except JournalDamaged as e:
        result = Verification(ok=False, problem=str(e))
    except BackendError as e:
        raise _fail(str(e)) from None
    else:
        where = backend.where
        try:
            checkpoint = backend.sign_checkpoint()
            result = _walk(backend, public_key, None if checkpoint is None else checkpoint["seq"])
        except BackendError as e:
            raise _fail(str(e)) from None
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
        raise _fail(f"--heads: {e}") from None
    if not found:
        raise _fail(f"--heads: {path}: no 'warden checkpoint seq=... head_seq=... head_hash=... key_id=... "
                    "signature=...' line in it")
    return found


def _walk(backend: Backend, public_key, until_seq: int | None) -> Verification:
    with _progress() as progress:
        task = progress.add_task("verifying chain", total=None)

        def counted():
            for event in backend.events(until_seq):
                progress.advance(task)
                yield event

        return verify_events(counted(), public_key)


def _report(result: Verification, checkpoint: dict | None, where: str, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({**result.as_dict(), "signed_now": checkpoint, "where": where}) + "\n")
        return
    if result.status == "broken":
        err.print(f"[bold red]chain BROKEN[/]: {result.problem}", highlight=False)
        if result.external_heads is not None:
            ext = result.external_heads
            err.print(f"  external heads: {ext['matched']} of {ext['given']} matched ({ext['source']})", highlight=False)
        return
    if result.status == "no_signed_checkpoint":
        out.print(f"[yellow]0 SIGNED CHECKPOINTS[/]: the chain is intact ({result.events} events from the genesis, "
                  f"head seq={result.head_seq}), but no checkpoint signs any of it: nothing shows the gateway wrote "
                  f"this record (exit 3, as for an unsigned tail) ({where})", highlight=False)
    elif result.status == "ok":
        out.print(f"[green]chain OK[/]: {result.events} events from the genesis, {result.checkpoints} signed checkpoints, "
                  f"head seq={result.head_seq} hash={result.head_hash} ({where})", highlight=False)
    else:
        out.print(f"[yellow]UNSIGNED TAIL[/]: the chain is intact ({result.events} events from the genesis, head "
                  f"seq={result.head_seq}), but {result.unsigned_tail} events after the last signed head "
                  f"(seq={result.signed_seq}) are covered by no checkpoint: an unclean stop left them, or someone "
                  "edited the stopped store. Check it with --heads against the 'warden checkpoint' log lines kept "
                  "outside the store; a gateway started on it records the range as found unsigned, then signs it "
                  f"({where})", highlight=False)
    if checkpoint is not None:
        out.print(f"  signed now by the gateway: checkpoint seq={checkpoint['seq']} head_seq={checkpoint['head_seq']}",
                  highlight=False)
    if result.heads:
        shown = result.heads[-SHOWN_HEADS:]
        out.print(f"  signed heads (the last {len(shown)} of {len(result.heads)}; all with --json), to compare with the "
                  "gateway's 'warden checkpoint' log lines:", highlight=False)
        for head in shown:
            out.print(f"    seq={head['seq']} head_seq={head['head_seq']} head_hash={head['head_hash']} "
                      f"key_id={head['key_id']}", highlight=False)
    for late in result.signed_late:
        out.print(f"  [yellow]signed late (found unsigned at start-up, seq {late['first_seq']}..{late['last_seq']})[/]: "
                  f"{late['count']} events no checkpoint had signed when a gateway started (a crash, a repair, or an "
                  f"edit of the stopped store); recorded by startup event seq={late['startup_seq']}. Compare the heads "
                  "before it with the log lines kept outside (--heads)", highlight=False)
    if result.external_heads is not None:
        ext = result.external_heads
        out.print(f"  external heads: {ext['matched']} of {ext['given']} matched ({ext['source']})", highlight=False)
    for note in result.notes:
        out.print(f"  note: {note}", highlight=False)


@app.command("repair-journal")
def repair_journal_command() -> None:
    """Repair the journal after start-up refused it (the gateway must be stopped). Keeps a copy of the journal
    beside it (NAME.journal.damaged-TIME), loads every event that still continues the chain, sets aside the
    rest and records what it did as a 'journal_repair' event on the chain. Example: warden --db data/warden.duckdb repair-journal
    """
    try:
        report = repair_journal(State.db)
    except StoreError as e:
        raise _fail(str(e)) from None
    if not report["repaired"]:
        out.print(f"nothing to repair: {report['reason']} ({report['journal']})", highlight=False)
        return
    out.print(f"repaired {report['journal']}: loaded {report['loaded']} of {report['lines']} lines; a copy of the "
              f"journal as it was is kept as {report['copy']}; recorded as event seq={report['repair_event_seq']}",
              highlight=False)
    for problem in report["problems"]:
        out.print(f"  {problem}", highlight=False)


def _seconds(text: str) -> int:
    try:
        return math.ceil(parse_duration(text).total_seconds())
    except DurationError as e:
        raise _fail(f"--ttl: {e}") from None


@app.command()
def token(
    user: Annotated[str, typer.Argument(help="The subject (sub) the token names.")],
    groups: Annotated[str, typer.Option(help="Comma-separated groups, e.g. dev,security.")] = "",
    ttl: Annotated[str, typer.Option(help="Lifetime: seconds or 15m, 1h, 1d, 1w.")] = "1h",
    email: Annotated[str | None, typer.Option(help="The email claim.")] = None,
    audience: Annotated[str | None, typer.Option(help="The aud claim (default: the --rules file's identity.audience).")] = None,
    key: Annotated[Path | None, typer.Option(help="The embedded issuer's key (default: --issuer-key).")] = None,
) -> None:
    """Sign a token with the embedded development issuer. Example: HTTPS_PROXY=http://alice:$(warden token alice --groups dev)@127.0.0.1:8080"""
    from addons.auth.issuer import EmbeddedIssuer

    key = key or State.issuer_key
    if not key.exists():
        raise _fail(f"--key: {key} does not exist; start the gateway once (make run) to create it")
    try:
        issuer = EmbeddedIssuer.load_or_create(key)
    except KeyFileError as e:
        raise _fail(str(e)) from None
    groups_list = [g.strip() for g in groups.split(",") if g.strip()]
    sys.stdout.write(issuer.mint(user, audience=audience or _identity().audience, groups=groups_list, ttl=_seconds(ttl), email=email) + "\n")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
