"""The store's events in pages, from a seq or a time: what ``warden siem`` streams, read by the same code on the
stopped file and in the gateway (``GET /api/events``)."""

from __future__ import annotations

from datetime import datetime

import duckdb

from addons.store.events import Event
from addons.store.queries import iter_events

PAGE = 500


def start_after(con: duckdb.DuckDBPyConnection, since: datetime) -> int:
    """The seq to read after so the first event is the first written at or after ``since`` (the head, if none is)."""
    first, head = con.execute("SELECT min(seq) FILTER (WHERE ts >= ?), max(seq) FROM events", [since]).fetchone() \
        or (None, None)
    if first is not None:
        return int(first) - 1
    return -1 if head is None else int(head)


def events_page(con: duckdb.DuckDBPyConnection, after_seq: int, since: datetime | None = None,
                limit: int = PAGE) -> list[Event]:
    """Up to ``limit`` events after ``after_seq`` (or, with ``since``, from the first written since then)."""
    if since is not None:
        after_seq = start_after(con, since)
    page = []
    for event in iter_events(con, after_seq, batch=limit):
        page.append(event)
        if len(page) >= limit:
            break
    return page
