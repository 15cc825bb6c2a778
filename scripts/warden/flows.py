"""``warden flows``: search the record (a table, JSON lines or CSV); finding one flow for ``show`` and ``replay``."""

from __future__ import annotations

import csv
import json
import sys
from typing import Annotated, Any, TextIO

import typer
from rich.table import Table

from addons.evidence.spreadsheet import as_text
from addons.store.events import Event
from addons.store.search import FLOW_COLUMNS, FlowFilter
from scripts.warden import filters
from scripts.warden.backend import Backend, BackendError
from scripts.warden.options import connect, fail, out

flows_app = typer.Typer()


@flows_app.command()
def flows(
    user: filters.User = None, host: filters.Host = None, since: filters.Since = None, until: filters.Until = None,
    decision: filters.Decision = None, fate: filters.Fate = None, entity: filters.Entity = None,
    model: filters.Model = None, rule: filters.Rule = None, status: filters.Status = None,
    approval: filters.Approval = None, approver: filters.Approver = None, text: filters.Text = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many flows, newest first.")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many flows first (the next page).")] = 0,
    before_seq: Annotated[int | None, typer.Option(help=(
        "Only flows recorded before this chain position: the last row's seq, for the next page even while new "
        "flows arrive."))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV (a header, then one row per flow).")] = False,
) -> None:
    """List recorded flows, newest first. Example: warden flows --user alice --since 2h --entity CREDIT_CARD --json"""
    if as_json and as_csv:
        raise fail("--json and --csv: choose one")
    f = filters.flow_filter(user=user, host=host, since=since, until=until, decision=decision, fate=fate, entity=entity,
                    model=model, rule=rule, status=status, approval=approval, approver=approver, text=text,
                    limit=limit, offset=offset, before_seq=before_seq)
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
    if as_csv:
        write_csv(rows, sys.stdout)
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


def write_csv(rows: list[dict[str, Any]], stream: TextIO) -> None:
    """``rows`` (``search_flows``) as CSV: a header of ``FLOW_COLUMNS``; entity counts as JSON text; text that
    would begin a formula in a spreadsheet quoted as text (``addons.evidence.spreadsheet``)."""
    writer = csv.writer(stream)
    writer.writerow(FLOW_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else json.dumps(row[c]) if isinstance(row[c], dict)
                         else as_text(row[c]) if isinstance(row[c], str) else row[c] for c in FLOW_COLUMNS])


def _masked(request: dict | None, response: dict | None) -> str:
    """``EMAIL_ADDRESS×2 PERSON`` for the request, ``| ...`` for the response."""
    def one(counts: dict | None) -> str:
        return " ".join(f"{k}×{v}" if v > 1 else k for k, v in (counts or {}).items())

    return one(request) + (f" | {one(response)}" if response else "")


def find_flow(backend: Backend, flow_id: str) -> list[Event]:
    """The events of the flow ``flow_id`` names (its id or a unique prefix); ends the command if none or many."""
    events = backend.flow_events(flow_id)
    if not events and len(flow_id) < 36:
        matches = [r["flow_id"] for r in backend.flows(FlowFilter(limit=1_000_000)) if r["flow_id"].startswith(flow_id)]
        if len(matches) > 1:
            raise fail(f"{flow_id!r} matches {len(matches)} flows; give more of the id")
        if matches:
            events = backend.flow_events(matches[0])
    if not events:
        raise fail(f"no flow {flow_id!r} in {backend.where}")
    return events


def text_of(body: bytes | None) -> str:
    if not body:
        return ""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(body)} bytes, not UTF-8>"
