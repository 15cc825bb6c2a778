"""Flow search: one row per flow from its events, filtered, for ``warden flows`` and the admin API alike."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from addons.store.queries import parse_when

FLOW_COLUMNS = (
    "flow_id", "started", "user", "client", "mode", "method", "scheme", "host", "port", "path",
    "upstream", "decision", "rule", "model", "status", "fate", "reason", "latency_upstream_ms",
    "latency_total_ms", "tokens_in", "tokens_out", "request_bytes", "response_bytes", "entities",
    "response_entities", "answer_decision", "answer_rule", "seq",
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
    model: str | None = None
    rule: str | None = None  # the rule that decided the request, or an answer rule that acted on its response
    status: int | None = None  # the HTTP status the client got
    approval: str | None = None  # an approval or grant id the request waited on or passed under, or its outcome
    approver: str | None = None  # who approved or denied the approval the request waited on or passed under
    text: str | None = None  # words, each in the request or the response body (masked, UTF-8), any case
    before_seq: int | None = None  # keyset paging: flows whose request came before this chain position
    offset: int = 0
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
  FROM events WHERE kind IN ('response', 'error') {narrow} GROUP BY flow_id
)
SELECT r.flow_id, r.ts, r.user, r.record->>'client', r.record->>'mode', r.record->>'method',
       r.record->>'scheme', r.host, CAST(r.record->>'port' AS INTEGER), r.record->>'path',
       r.record->>'upstream', r.decision, r.record->>'rule', r.record->>'model', last.status,
       coalesce(last.fate, CASE WHEN r.fate IS NOT NULL AND r.fate <> 'forwarded' THEN r.fate ELSE 'incomplete' END),
       coalesce(last.reason, r.record->>'reason'), last.latency_upstream_ms, last.latency_total_ms,
       last.tokens_in, last.tokens_out, CAST(r.record->>'body_size' AS BIGINT), last.response_bytes,
       r.record->'entities', last.response_entities, last.answer_decision, last.answer_rule, r.seq
FROM events r LEFT JOIN last USING (flow_id)
WHERE r.kind = 'request' {where}
ORDER BY r.seq DESC
"""


def period_sql(column: str, f: FlowFilter) -> tuple[str, list[object]]:
    """`` AND column >= ? AND column < ?`` for the filter's period (what it sets of it), and the parameters."""
    where: list[str] = []
    params: list[object] = []
    if f.since is not None:
        where.append(f"{column} >= ?")
        params.append(f.since)
    if f.until is not None:
        where.append(f"{column} < ?")
        params.append(f.until)
    return "".join(f" AND {w}" for w in where), params


def _narrowed(f: FlowFilter) -> tuple[str, list[object]]:
    """How each flow's last answer is looked up only for flows whose request passes the filter's request-side
    conditions (who, where, when): on a large store, working out the last answer of every flow is most of a search.
    The outer query applies the same conditions again, so this only saves work."""
    where, params = [], []
    for column, value in (('"user"', f.user), ("host", f.host)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    period, period_params = period_sql("ts", f)
    if not where and not period:
        return "", []
    sql = " AND ".join(where) if where else "true"
    return (f"AND flow_id IN (SELECT flow_id FROM events WHERE kind = 'request' AND {sql}{period})",
            params + period_params)


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
    _found(f, where, params)
    period, period_params = period_sql("r.ts", f)
    params += period_params  # in the order of the SQL: the period comes last
    narrow, narrow_params = _narrowed(f)
    sql = _FLOWS_SQL.format(narrow=narrow, where="".join(f" AND {w}" for w in where) + period)
    params = narrow_params + params  # the narrowing comes first in the SQL
    if f.limit is not None:
        sql += "LIMIT ?\n"
        params.append(f.limit)
    if f.offset:
        sql += "OFFSET ?\n"
        params.append(f.offset)
    return sql, params


_APPROVAL = "r.record->'detail'->'approval'"
# (JSON arrows bind more loosely than AND and =: each extraction in parentheses.)
# A body as text for --text: bodies that are not UTF-8 (or kept only as an encrypted original) are not searched.
# RE2's case-insensitive match of the escaped word: half the time of contains(lower(...)) (lower copies each body).
_BODY_HAS = ("r.flow_id IN (SELECT flow_id FROM events WHERE kind IN ('request', 'response') "
             "AND regexp_matches(try(decode(body)), ?){since})")


def _found(f: FlowFilter, where: list[str], params: list[object]) -> None:
    """The filters on what the request and its answer carried (model, rule, status, approvals, body text)."""
    if f.model is not None:
        where.append("(r.record->>'model') = ?")
        params.append(f.model)
    if f.rule is not None:
        where.append("((r.record->>'rule') = ? OR last.answer_rule = ?)")
        params += [f.rule, f.rule]
    if f.status is not None:
        where.append("last.status = ?")
        params.append(f.status)
    if f.approval is not None:
        where.append(f"? IN (({_APPROVAL}->>'approval'), ({_APPROVAL}->>'grant'), ({_APPROVAL}->>'outcome'))")
        params.append(f.approval)
    if f.approver is not None:  # a vote on the approval the request names (a grant names its approval too)
        where.append("EXISTS (SELECT 1 FROM events a WHERE a.kind = 'approval' AND a.fate IN ('approved', 'denied') "
                     f"AND a.user = ? AND (a.record->'detail'->>'approval') = ({_APPROVAL}->>'approval'))")
        params.append(f.approver)
    for word in (f.text or "").split():  # a flow's events come after its request: --since narrows the scan
        where.append(_BODY_HAS.format(since="" if f.since is None else " AND ts >= ?"))
        params += ["(?i)" + re.escape(word), *([f.since] if f.since is not None else [])]
    if f.before_seq is not None:
        where.append("r.seq < ?")
        params.append(f.before_seq)


ALL = "all"  # the admin API's ``limit`` for every flow (a FlowFilter's ``limit=None``)


def to_query(f: FlowFilter) -> dict[str, str]:
    """``f`` as the admin API's query arguments: the field names, times in ISO 8601, no limit as ``limit=all``."""
    query = {name: value.isoformat() if isinstance(value, datetime) else str(value)
             for name, value in dataclasses.asdict(f).items() if value is not None}
    return query if f.limit is not None else {**query, "limit": ALL}


def from_query(query: Mapping[str, str]) -> FlowFilter:
    """The FlowFilter ``to_query`` gave (times may also be durations ago: ``2h``); ValueError naming the argument."""
    hints = typing.get_type_hints(FlowFilter)
    values: dict[str, Any] = {}
    for name, text in query.items():
        if name not in hints:
            raise ValueError(f"{name}: no such filter (one of {', '.join(hints)})")
        kind = typing.get_args(hints[name]) or (hints[name],)
        try:
            if name == "limit" and text == ALL:
                values[name] = None
            elif datetime in kind:
                values[name] = parse_when(text)
            elif int in kind:
                try:
                    values[name] = int(text)
                except ValueError:
                    raise ValueError(f"{text!r} is not a whole number") from None
            else:
                values[name] = text
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    return FlowFilter(**values)


def search_flows(con: duckdb.DuckDBPyConnection, f: FlowFilter) -> list[dict[str, Any]]:
    """One row per flow (newest first): who, where, what was decided and how it ended."""
    sql, params = flows_sql(f)
    rows = con.execute(sql, params).fetchall()
    out = [dict(zip(FLOW_COLUMNS, row, strict=True)) for row in rows]
    for row in out:
        for column in ("entities", "response_entities"):
            row[column] = json.loads(row[column]) if row[column] else None
    return out
