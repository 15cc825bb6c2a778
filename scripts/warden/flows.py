"""``warden flows``, ``show`` and ``export-flows``: search the record, read one flow, hand flows to mitmproxy."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from addons.store.keys import KeyFileError
from addons.store.queries import headers_of, parse_when
from addons.store.search import FlowFilter
from scripts.warden.backend import Backend, BackendError
from scripts.warden.flowfile import body_of, to_flows, write_flows
from scripts.warden.options import connect, err, fail, originals_key, out, progress

flows_app = typer.Typer()


def _when(value: str | None, name: str):
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as e:
        raise fail(f"--{name}: {e}") from None


@flows_app.command()
def flows(
    user: Annotated[str | None, typer.Option(help="Only this identity (sub).")] = None,
    host: Annotated[str | None, typer.Option(help="Only this upstream host.")] = None,
    since: Annotated[str | None, typer.Option(
        help="From this time (ISO 8601, UTC) or duration ago (15m, 2h, 7d).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time or duration ago.")] = None,
    decision: Annotated[str | None, typer.Option(help="Only this policy decision (allow, block).")] = None,
    fate: Annotated[str | None, typer.Option(
        help="Only this fate (completed, host_not_allowed, upstream_error, client_gone, ...).")] = None,
    entity: Annotated[str | None, typer.Option(
        help="Only flows where this entity was masked (EMAIL_ADDRESS, CREDIT_CARD, ...).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many flows, newest first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """List recorded flows, newest first. Example: warden flows --user alice --since 2h --entity CREDIT_CARD --json"""
    f = FlowFilter(user=user, host=host, since=_when(since, "since"), until=_when(until, "until"),
                   decision=decision, fate=fate, entity=entity, limit=limit)
    backend = connect()
    try:
        rows = backend.flows(f)
    except BackendError as e:
        raise fail(str(e)) from None
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
            raise fail(f"{flow_id!r} matches {len(matches)} flows; give more of the id")
        if matches:
            events = backend.flow_events(matches[0])
    if not events:
        raise fail(f"no flow {flow_id!r} in {backend.where}", 1)
    return events


def _text(body: bytes | None) -> str:
    if not body:
        return ""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(body)} bytes, not UTF-8>"


@flows_app.command()
def show(
    flow_id: Annotated[str, typer.Argument(help="The flow's id (or a unique prefix of it).")],
    originals: Annotated[bool, typer.Option(
        help="Show original bodies where masking changed them (needs the key).")] = False,
    key: Annotated[Path | None, typer.Option(
        help="The originals key file (default certs/warden-originals.key or $WARDEN_ORIGINALS_KEY).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The flow's events as JSON.")] = False,
) -> None:
    """Show one whole flow: every event, headers redacted, bodies masked. Example: warden show 0f8c12ab"""
    backend = connect()
    try:
        events = _find_flow(backend, flow_id)
    except BackendError as e:
        raise fail(str(e)) from None
    finally:
        backend.close()
    orig_key = originals_key(key) if originals else None
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
            out.print(f"HTTP {event.status}  upstream {event.latency_upstream_ms} ms,"
                      f" total {event.latency_total_ms} ms, tokens {event.tokens_in}/{event.tokens_out}",
                      highlight=False)
        else:
            out.print(f"{event.reason}", highlight=False)
        if event.kind != "request" and event.decision:  # what answer rules did to the answer
            out.print(f"answer: {event.decision} ({event.rule or '-'}): {event.reason or ''}", highlight=False)
        for name, value in headers_of(event):
            out.print(f"  [dim]{name}:[/] {value}", highlight=False)
        body = _text(body_of(event, orig_key))
        if body:
            out.print(body, highlight=False, markup=False)
        if event.original_enc is not None and orig_key is None:
            out.print("[dim](masking changed this body; the original is stored encrypted: --originals)[/]")


@flows_app.command("export-flows")
def export_flows(
    output: Annotated[Path, typer.Option("-o", "--output", help="The mitmproxy flow file to write.")],
    originals: Annotated[bool, typer.Option(
        help="Put original bodies in place of masked ones (needs the key).")] = False,
    key: Annotated[Path | None, typer.Option(help="The originals key file.")] = None,
) -> None:
    """Write every recorded flow to a mitmproxy flow file. Example: warden export-flows -o flows.mitm &&
    mitmweb --rfile flows.mitm"""
    orig_key = originals_key(key) if originals else None
    backend = connect()
    try:
        with progress() as bar:
            task = bar.add_task("reading events", total=None)
            events = []
            for event in backend.events():
                events.append(event)
                bar.advance(task)
            count = write_flows(str(output), to_flows(events, orig_key))
    except (BackendError, KeyFileError) as e:
        raise fail(str(e)) from None
    finally:
        backend.close()
    err.print(f"wrote {count} flows to {output} (open with: mitmweb --rfile {output})", highlight=False)
