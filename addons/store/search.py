"""Flow search: one row per flow from its events, filtered, for ``warden flows`` and the admin API alike."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

FLOW_COLUMNS = (
    "flow_id", "started", "user", "client", "mode", "method", "scheme", "host", "port", "path",
    "upstream", "decision", "rule", "model", "status", "fate", "reason", "latency_upstream_ms",
    "latency_total_ms", "tokens_in", "tokens_out", "request_bytes", "response_bytes", "entities",
    "response_entities", "answer_decision", "answer_rule",
)


@dataclass
class FlowFilter:
    """What ``warden flows`` can filter on. Times are naive UTC."""

    user: str | None = None
    host: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    decision: str | None = None
    fate: str | None = None
    entity: str | None = None  # masked in the request or the response
    group: str | None = None  # one of the caller's groups, as the request event's identity names them
    limit: int | None = 100  # None: every flow (evidence packs)


_FLOWS_SQL = """
WITH last AS (
  SELECT flow_id,
         arg_max(status, seq) AS status,
         arg_max(fate, seq) AS fate,
         arg_max(record->>'reason', seq) AS reason,
         arg_max(CAST(record->>'latency_upstream_ms' AS DOUBLE), seq) AS latency_upstream_ms,
         arg_max(CAST(record->>'latency_total_ms' AS DOUBLE), seq) AS latency_total_ms,
         arg_max(CAST(record->>'tokens_in' AS BIGINT), seq) AS tokens_in,
         arg_max(CAST(record->>'tokens_out' AS BIGINT), seq) AS tokens_out,
         arg_max(CAST(record->>'body_size' AS BIGINT), seq) AS response_bytes,
         arg_max(record->'entities', seq) AS response_entities,
         arg_max(decision, seq) AS answer_decision,  -- what answer rules did to it (block, mask)
         arg_max(record->>'rule', seq) AS answer_rule
  FROM events WHERE kind IN ('response', 'error') GROUP BY flow_id
)
SELECT r.flow_id, r.ts, r.user, r.record->>'client', r.record->>'mode', r.record->>'method',
       r.record->>'scheme', r.host, CAST(r.record->>'port' AS INTEGER), r.record->>'path',
       r.record->>'upstream', r.decision, r.record->>'rule', r.record->>'model', last.status,
       coalesce(last.fate, CASE WHEN r.fate IS NOT NULL AND r.fate <> 'forwarded' THEN r.fate ELSE 'incomplete' END),
       coalesce(last.reason, r.record->>'reason'), last.latency_upstream_ms, last.latency_total_ms,
       last.tokens_in, last.tokens_out, CAST(r.record->>'body_size' AS BIGINT), last.response_bytes,
       r.record->'entities', last.response_entities, last.answer_decision, last.answer_rule
FROM events r LEFT JOIN last USING (flow_id)
WHERE r.kind = 'request' {where}
ORDER BY r.seq DESC
"""


def flows_sql(f: FlowFilter) -> tuple[str, list[object]]:
    """The SQL (and its parameters) of one row per flow matching ``f``, columns ``FLOW_COLUMNS``, newest first: what
    ``search_flows`` fetches, and what an evidence pack copies straight to its files (DuckDB ``COPY``)."""
    where: list[str] = []
    params: list[object] = []
    for column, value in (("r.user", f.user), ("r.host", f.host), ("r.decision", f.decision)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if f.entity is not None:
        where.append("((r.record->'entities'->>?) IS NOT NULL OR (last.response_entities->>?) IS NOT NULL)")
        params += [f.entity, f.entity]
    if f.group is not None:
        where.append("list_contains(CAST(r.record->'detail'->'identity'->'groups' AS VARCHAR[]), ?)")
        params.append(f.group)
    if f.fate is not None:
        where.append("coalesce(last.fate, r.fate, 'incomplete') = ?")
        params.append(f.fate)
    if f.since is not None:
        where.append("r.ts >= ?")
        params.append(f.since)
    if f.until is not None:
        where.append("r.ts < ?")
        params.append(f.until)
    sql = _FLOWS_SQL.format(where="".join(f" AND {w}" for w in where))
    if f.limit is not None:
        sql += "LIMIT ?\n"
        params.append(f.limit)
    return sql, params


def search_flows(con: duckdb.DuckDBPyConnection, f: FlowFilter) -> list[dict[str, Any]]:
    """One row per flow (newest first): who, where, what was decided and how it ended."""
    sql, params = flows_sql(f)
    rows = con.execute(sql, params).fetchall()
    out = [dict(zip(FLOW_COLUMNS, row, strict=True)) for row in rows]
    for row in out:
        for column in ("entities", "response_entities"):
            row[column] = json.loads(row[column]) if row[column] else None
    return out
