"""The figures of the HTML report, read from the staged tables (``addons.evidence.tables.stage``) and the chain.

Every figure is an aggregate in DuckDB; only the aggregates (a few hundred rows at most) reach Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb

from addons.store.search import FlowFilter

MAX_BUCKETS = 48  # the charts' resolution: at most this many time buckets over the period
SERIES = 6  # lines per chart; the rest are summed as "other"
STEPS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1), timedelta(hours=6),
         timedelta(days=1), timedelta(days=7))


@dataclass
class Summary:
    """What the report shows; plain values the template reads."""

    period: dict[str, Any]
    totals: dict[str, Any]
    by_fate: list[tuple[str, int]]
    identities: list[dict[str, Any]]
    groups: list[tuple[str, int]]
    upstreams: list[tuple[str, str, int]]
    over_time: dict[str, dict[str, Any]]  # per dimension (user, group, upstream): buckets and series
    entities: list[tuple[str, int, int]]  # type, in requests, in responses
    blocks: list[dict[str, Any]]
    approvals: list[dict[str, Any]]
    grants: list[dict[str, Any]]
    refused_auth: list[dict[str, Any]]
    refusals_by_category: list[tuple[str, int]]
    gateway: dict[str, Any] = field(default_factory=dict)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def bucket_step(start: datetime, end: datetime) -> timedelta:
    """The smallest step of ``STEPS`` that cuts ``start``..``end`` into at most ``MAX_BUCKETS`` buckets."""
    span = max(end - start, timedelta(seconds=1))
    return next((step for step in STEPS if span / step <= MAX_BUCKETS), STEPS[-1])


def summarise(con: duckdb.DuckDBPyConnection, f: FlowFilter) -> Summary:
    """The report's figures for the staged tables; ``f`` gives the period asked for (else the flows' own)."""
    first, last = con.execute("SELECT min(started), max(started) FROM pack_flows").fetchall()[0]
    start, end = f.since or first, f.until or last
    totals = _rows(con, """
        SELECT count(*) AS flows, count(DISTINCT user) AS identities, count(DISTINCT upstream) AS upstreams,
               count(*) FILTER (WHERE entities IS NOT NULL OR response_entities IS NOT NULL) AS masked,
               count(*) FILTER (WHERE decision = 'block') AS blocked,
               (SELECT count(*) FROM pack_approvals) AS approvals,
               (SELECT count(*) FROM pack_refusals) AS refusals
        FROM pack_flows""")[0]
    return Summary(
        period={"from": start, "to": end, "first_flow": first, "last_flow": last},
        totals=totals,
        by_fate=[tuple(r) for r in con.execute(
            "SELECT fate, count(*) FROM pack_flows GROUP BY fate ORDER BY 2 DESC, 1").fetchall()],
        identities=_rows(con, """
            SELECT user, list_sort(list_distinct(flatten(list(coalesce(groups, []))))) AS groups, count(*) AS flows,
                   count(*) FILTER (WHERE entities IS NOT NULL OR response_entities IS NOT NULL) AS masked,
                   count(*) FILTER (WHERE decision = 'block') AS blocked, min(started) AS first, max(started) AS last
            FROM pack_flows WHERE user IS NOT NULL GROUP BY user ORDER BY flows DESC, user"""),
        groups=[tuple(r) for r in con.execute("""
            SELECT g, count(*) FROM (SELECT unnest(groups) AS g FROM pack_flows) GROUP BY g ORDER BY 2 DESC, 1
            """).fetchall()],
        upstreams=[tuple(r) for r in con.execute("""
            SELECT coalesce(upstream, '(none)'), coalesce(host, '(none)'), count(*) FROM pack_flows
            GROUP BY ALL ORDER BY 3 DESC, 1, 2""").fetchall()],
        over_time=_over_time(con, start, end) if first is not None else {},
        entities=[tuple(r) for r in con.execute("""
            SELECT key, sum(n) FILTER (WHERE side = 'request'), sum(n) FILTER (WHERE side = 'response') FROM (
              SELECT j.key, CAST(j.value AS BIGINT) AS n, 'request' AS side FROM pack_flows, json_each(entities) j
              UNION ALL
              SELECT j.key, CAST(j.value AS BIGINT), 'response' FROM pack_flows, json_each(response_entities) j
            ) GROUP BY key ORDER BY coalesce(sum(n), 0) DESC, key""").fetchall()],
        blocks=_rows(con, """
            SELECT coalesce(CASE WHEN fate = 'answer_blocked' THEN answer_rule ELSE rule END, '(no rule)') AS rule,
                   fate, any_value(reason) AS reason, count(*) AS flows, count(DISTINCT user) AS identities
            FROM pack_flows WHERE decision = 'block' OR fate IN ('blocked_by_policy', 'answer_blocked',
                                                                 'host_not_allowed')
            GROUP BY ALL ORDER BY flows DESC, rule"""),
        approvals=_rows(con, "SELECT * FROM pack_approvals ORDER BY requested_at"),
        grants=_rows(con, """SELECT grant_id, approval_id, requester, rule, approvers, decided_at AS granted_at,
                                    grant_until, grant_revoked_at, grant_revoked_by
                             FROM pack_approvals WHERE grant_id IS NOT NULL ORDER BY decided_at"""),
        refused_auth=_rows(con, """
            SELECT coalesce(claimed_sub, user) AS claimed, reason, count(*) AS flows, min(ts) AS first,
                   max(ts) AS last
            FROM pack_refusals WHERE category = 'authentication' GROUP BY ALL ORDER BY flows DESC, claimed"""),
        refusals_by_category=[tuple(r) for r in con.execute(
            "SELECT category, count(*) FROM pack_refusals GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()],
    )


def _over_time(con: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> dict[str, dict[str, Any]]:
    """Requests per user, group and upstream in time buckets: for each, the buckets and the top series."""
    step = bucket_step(start, end)
    seconds = int(step.total_seconds())
    n = int((end - start) / step) + 1
    out = {}
    for name, expr, source in (
        ("user", "coalesce(user, '(unauthenticated)')", "pack_flows"),
        ("group", "g", "(SELECT started, unnest(coalesce(groups, ['(none)'])) AS g FROM pack_flows)"),
        ("upstream", "coalesce(upstream, host, '(none)')", "pack_flows"),
    ):
        rows = con.execute(f"""
            SELECT {expr} AS series, CAST(floor((epoch(started) - epoch(?::TIMESTAMP)) / {seconds}) AS BIGINT) AS b,
                   count(*) FROM {source} WHERE started >= ? GROUP BY ALL""", [start, start]).fetchall()
        totals: dict[str, int] = {}
        for series, _, c in rows:
            totals[series] = totals.get(series, 0) + c
        top = sorted(totals, key=lambda s: (-totals[s], s))[:SERIES]
        series_counts = {s: [0] * n for s in top}
        if len(totals) > len(top):
            series_counts["other"] = [0] * n
        for series, b, c in rows:
            if 0 <= b < n:
                series_counts[series if series in top else "other"][b] += c
        out[name] = {"step": step, "start": start, "buckets": [start + i * step for i in range(n)],
                     "series": series_counts}
    return out


def gateway_facts(con: duckdb.DuckDBPyConnection, f: FlowFilter) -> dict[str, Any]:
    """The gateways that wrote the period: the keys that signed its checkpoints, its start-ups found unsigned
    tails, the rules files it loaded (digests), and the seq range the period spans."""
    where = ""
    params: list[object] = []
    if f.since is not None:
        where += " AND ts >= ?"
        params.append(f.since)
    if f.until is not None:
        where += " AND ts < ?"
        params.append(f.until)
    first, last = con.execute(  # a checkpoint signs the events before it: it needs no cover of its own
        f"SELECT min(seq), max(seq) FROM events WHERE kind <> 'checkpoint' {where}", params).fetchall()[0]
    keys = [r[0] for r in con.execute(f"""SELECT DISTINCT record->'detail'->>'key_id' FROM events
                                          WHERE kind = 'checkpoint' {where} ORDER BY 1""", params).fetchall()]
    startups = _rows(con, f"""SELECT seq, ts, record->>'reason' AS reason, record->'detail' AS detail FROM events
                              WHERE kind = 'startup' {where} ORDER BY seq""", params)
    configs = _rows(con, f"""SELECT seq, ts, fate AS outcome, record->'detail'->>'sha256' AS sha256,
                             record->'detail'->>'trigger' AS trigger, record->>'reason' AS error FROM events
                             WHERE kind = 'config' {where} ORDER BY seq""", params)
    for row in startups:
        row["detail"] = json.loads(row["detail"]) if row["detail"] else None
    return {"first_seq": first, "last_seq": last, "signing_keys": keys, "startups": startups, "configs": configs}
