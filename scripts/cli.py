"""``warden``: search, show, export and verify what the gateway recorded.

Every command reads the DuckDB file (``--db``) when the gateway is stopped and the gateway's admin
API (``--admin``) while it runs. Examples::

\b
    warden flows --user alice --since 2h            # a table; --json for machines
    warden show 0f8c...                             # one flow, masked bodies
    warden export-flows -o flows.mitm               # then: mitmweb --rfile flows.mitm
    warden verify                                   # exit 1 and the first bad event if tampered
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from addons.keys import KeyFileError, OriginalsKey, load_public_key
from addons.queries import FlowFilter, headers_of, parse_when, verify_events
from scripts.backend import Backend, BackendError, open_backend
from scripts.flowfile import body_of, to_flows, write_flows
from scripts.rules_cli import rules_app

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


ADMIN_GROUP = "warden-admin"


def _admin_token() -> str | None:
    """--token, else a five-minute admin token signed with the embedded issuer's key, if this user can read it."""
    if State.token:
        return State.token
    if not State.issuer_key.exists():
        return None
    from addons.issuer import EmbeddedIssuer

    try:
        issuer = EmbeddedIssuer.load_or_create(State.issuer_key)
    except KeyFileError:
        return None
    return issuer.mint(f"cli:{getpass.getuser()}", groups=[ADMIN_GROUP], ttl=300)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _backend() -> Backend:
    try:
        return open_backend(State.db, State.admin, _admin_token)
    except BackendError as e:
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
        f"issuer's key, group {ADMIN_GROUP}, when this user can read it."))] = None,
    issuer_key: Annotated[Path, typer.Option(envvar="WARDEN_ISSUER_KEY", help="The embedded issuer's key.")] = State.issuer_key,
) -> None:
    State.db, State.admin, State.token, State.issuer_key = db, admin, token, issuer_key


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


@app.command()
def verify(
    pubkey: Annotated[Path, typer.Option(envvar="WARDEN_PUBKEY", help="The gateway's Ed25519 public key.")] = Path(
        "certs/warden-signing.pub"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="The result as JSON.")] = False,
) -> None:
    """Check the hash chain and checkpoint signatures; exit 1 naming the first bad event. Example: warden verify"""
    try:
        public_key = load_public_key(pubkey)
    except KeyFileError as e:
        raise _fail(f"--pubkey: {e}") from None
    backend = _backend()
    try:
        with _progress() as progress:
            task = progress.add_task("verifying chain", total=None)

            def counted():
                for event in backend.events():
                    progress.advance(task)
                    yield event

            result = verify_events(counted(), public_key)
    except BackendError as e:
        raise _fail(str(e)) from None
    finally:
        backend.close()
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict()) + "\n")
    elif result.ok:
        out.print(f"[green]chain OK[/]: {result.events} events, {result.checkpoints} signed checkpoints, "
                  f"head seq={result.head_seq} hash={result.head_hash} ({backend.where})", highlight=False)
        for note in result.notes:
            out.print(f"  note: {note}", highlight=False)
    else:
        err.print(f"[bold red]chain BROKEN[/]: {result.problem}", highlight=False)
    if not result.ok:
        raise typer.Exit(1)


def _seconds(text: str) -> int:
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return int(text[:-1]) * units[text[-1]]
    if text.isdigit():
        return int(text)
    raise _fail(f"--ttl: {text!r} is not a duration like 900, 15m, 1h or 1d")


@app.command()
def token(
    user: Annotated[str, typer.Argument(help="The subject (sub) the token names.")],
    groups: Annotated[str, typer.Option(help="Comma-separated groups, e.g. dev,security.")] = "",
    ttl: Annotated[str, typer.Option(help="Lifetime: seconds or 15m, 1h, 1d.")] = "1h",
    email: Annotated[str | None, typer.Option(help="The email claim.")] = None,
    audience: Annotated[str, typer.Option(help="The aud claim (the rules file's identity.audience).")] = "warden",
    key: Annotated[Path | None, typer.Option(help="The embedded issuer's key (default: --issuer-key).")] = None,
) -> None:
    """Sign a token with the embedded development issuer. Example: HTTPS_PROXY=http://alice:$(warden token alice --groups dev)@127.0.0.1:8080"""
    from addons.issuer import EmbeddedIssuer

    key = key or State.issuer_key
    if not key.exists():
        raise _fail(f"--key: {key} does not exist; start the gateway once (make run) to create it")
    try:
        issuer = EmbeddedIssuer.load_or_create(key)
    except KeyFileError as e:
        raise _fail(str(e)) from None
    groups_list = [g.strip() for g in groups.split(",") if g.strip()]
    sys.stdout.write(issuer.mint(user, audience=audience, groups=groups_list, ttl=_seconds(ttl), email=email) + "\n")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
