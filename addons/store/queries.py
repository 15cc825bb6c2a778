"""Read-side queries over the store, shared by the admin API (in the gateway) and the CLI (on the file).

Every function takes an open DuckDB connection or cursor and returns plain data, so both paths
answer alike. Flow search is ``addons.store.search``, verification ``addons.store.verification``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import duckdb

from addons.rules.durations import DurationError, parse_duration
from addons.store.events import COLUMN_NAMES, Event


def flow_events(con: duckdb.DuckDBPyConnection, flow_id: str) -> list[Event]:
    cols = ", ".join(f'"{c}"' for c in COLUMN_NAMES)
    rows = con.execute(f"SELECT {cols} FROM events WHERE flow_id = ? ORDER BY seq", [flow_id]).fetchall()
    return [Event.from_row(r) for r in rows]


def events_of_kind(con: duckdb.DuckDBPyConnection, kind: str) -> list[Event]:
    """Every event of ``kind``, in chain order (e.g. ``approval``, to rebuild the approvals from the record)."""
    cols = ", ".join(f'"{c}"' for c in COLUMN_NAMES)
    rows = con.execute(f"SELECT {cols} FROM events WHERE kind = ? ORDER BY seq", [kind]).fetchall()
    return [Event.from_row(r) for r in rows]


def iter_events(con: duckdb.DuckDBPyConnection, after_seq: int | None = None, batch: int = 500) -> Iterator[Event]:
    """Every event with ``seq > after_seq`` (None: every event, a negative seq a tamperer wrote included) in chain
    order, fetched in batches. Rows with one seq (a store tampered with) come in the order of their hashes, as
    ``addons.store.chainwalk`` walks them."""
    cols = ", ".join(f'"{c}"' for c in COLUMN_NAMES)
    cur = con.execute(f"SELECT {cols} FROM events WHERE ? IS NULL OR seq > ? ORDER BY seq, hash",
                      [after_seq, after_seq])
    while rows := cur.fetchmany(batch):
        for row in rows:
            yield Event.from_row(row)


def iter_events_until(events: Iterator[Event], last_seq: int) -> Iterator[Event]:
    """``events`` up to and including ``last_seq`` (what a checkpoint asked for at the start of a verify covers)."""
    for event in events:
        if event.seq > last_seq:
            return
        yield event


def headers_of(event: Event) -> list[tuple[str, str]]:
    return [(name, value) for name, value in event.headers or []]


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-23T10:00:00`` (UTC unless it carries an offset) or a duration ago: ``90s``, ``15m``, ``2h``, ``7d``.

    A duration ago needs its unit (``20261123`` is a date). ``ValueError`` otherwise."""
    text = text.strip()
    now = now or datetime.now(UTC).replace(tzinfo=None)
    try:
        return now - parse_duration(text, bare=False)
    except OverflowError:
        raise ValueError(f"{text!r} reaches too far back for a date") from None
    except DurationError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is neither an ISO 8601 time nor a duration like 15m, 2h, 7d or 1w") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment
