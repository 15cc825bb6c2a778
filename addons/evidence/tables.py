"""The pack's tables, staged once as DuckDB temporary tables and copied straight to JSONL, CSV and Parquet.

No row passes through Python: a pack over a million flows is one query and three ``COPY`` statements per table.

- ``pack_flows``: one row per flow (``addons.store.search.FLOW_COLUMNS``), with the caller's groups and, for a
  refused token, the subject it claimed.
- ``pack_approvals``: one row per approval asked in the period: requester, rule, the request (masked), its final
  state, approvers and deniers, the reasons given, the latency from request to decision, and its grant.
- ``pack_refusals``: what the gateway refused: flows (authentication, policy, approval) and calls on the admin
  API or approval steps refused (``access`` and ``approval`` events with fate ``refused``).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from addons.evidence.spreadsheet import sql_as_text
from addons.flow import errors
from addons.store.search import FLOW_COLUMNS, FlowFilter, flows_sql, period_sql

FORMATS = {"jsonl": "JSON", "csv": "CSV", "parquet": "PARQUET"}
TABLES = ("flows", "approvals", "refusals")

# A refused flow's fate is the type of the error the gateway answered it with; its category says which control
# refused it. Every other fate (completed, upstream_error, client_gone, ...) is not a refusal.
REFUSAL_CATEGORIES: dict[str, tuple[type[errors.WardenError], ...]] = {
    "authentication": (errors.Unauthenticated, errors.IdentityUnavailable),
    "policy": (errors.HostNotAllowed, errors.PolicyBlocked, errors.AnswerBlocked, errors.WebSocketNotAllowed,
               errors.CleartextRefused, errors.MisdirectedRequest, errors.PiiInPath, errors.PiiInHeader),
    "approval": (errors.ApprovalNeeded, errors.ApprovalDenied, errors.ApprovalExpired, errors.ApprovalTimeout,
                 errors.ApprovalAbandoned),
}


def refusal_fates() -> dict[str, str]:
    """Each refused flow's fate, with its category."""
    return {cls.type: category for category, classes in REFUSAL_CATEGORIES.items() for cls in classes}


def _quoted(values: list[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def stage(con: duckdb.DuckDBPyConnection, f: FlowFilter) -> None:
    """Create ``pack_flows``, ``pack_approvals`` and ``pack_refusals`` (temporary, on ``con``) for ``f``."""
    sql, params = flows_sql(FlowFilter(**{**vars(f), "limit": None}))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE pack_flows AS
        SELECT f.*, who.groups, who.claimed_sub
        FROM ({sql}) AS f({", ".join(FLOW_COLUMNS)})
        LEFT JOIN (SELECT flow_id, CAST(record->'detail'->'identity'->'groups' AS VARCHAR[]) AS groups,
                          record->'detail'->>'claimed_sub' AS claimed_sub
                   FROM events WHERE kind = 'request') who USING (flow_id)
        ORDER BY f.started, f.flow_id""", params)
    _stage_approvals(con, f)
    _stage_refusals(con, f)


def _stage_approvals(con: duckdb.DuckDBPyConnection, f: FlowFilter) -> None:
    period, params = period_sql("ts", f)
    where: list[str] = []
    for condition, value in (("requester = ?", f.user), ("list_contains(requester_groups, ?)", f.group),
                             ("host = ?", f.host), ("(findings->>?) IS NOT NULL", f.entity)):
        if value is not None:
            where.append(condition)
            params.append(value)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE pack_approvals AS
        WITH asked AS (
          SELECT record->'detail'->>'approval' AS approval_id, ts AS requested_at, user AS requester,
                 CAST(record->'detail'->'requester'->'groups' AS VARCHAR[]) AS requester_groups,
                 record->>'rule' AS rule, flow_id, record->'detail'->'request'->>'method' AS method,
                 record->'detail'->'request'->>'host' AS host, record->'detail'->'request'->>'path' AS path,
                 record->'detail'->'request'->'findings' AS findings,
                 record->'detail'->'terms'->'approvers' AS approver_groups
          FROM events WHERE kind = 'approval' AND fate = 'requested' {period}
        ), steps AS (
          SELECT record->'detail'->>'approval' AS approval_id, seq, ts, fate, user, record->>'reason' AS reason,
                 flow_id, record->'detail'->>'grant' AS grant_id,
                 CAST(record->'detail'->>'until' AS DOUBLE) AS until
          FROM events WHERE kind = 'approval' AND fate <> 'requested'
        ), decided AS (
          SELECT approval_id,
                 arg_max(fate, seq) FILTER (WHERE fate IN ('approved', 'denied', 'expired', 'abandoned')) AS decision,
                 max(ts) FILTER (WHERE fate IN ('approved', 'denied', 'expired', 'abandoned')) AS decided_at,
                 list(user ORDER BY seq) FILTER (WHERE fate = 'approved') AS approvers,
                 list(user ORDER BY seq) FILTER (WHERE fate = 'denied') AS deniers,
                 string_agg(user || ': ' || reason, '; ' ORDER BY seq)
                   FILTER (WHERE fate IN ('approved', 'denied') AND reason IS NOT NULL) AS reasons,
                 arg_max(reason, seq) FILTER (WHERE fate IN ('denied', 'expired', 'abandoned')) AS outcome_reason,
                 bool_or(fate = 'used') AS used, arg_max(flow_id, seq) FILTER (WHERE fate = 'used') AS used_by_flow,
                 arg_max(grant_id, seq) FILTER (WHERE fate = 'grant_created') AS grant_id,
                 arg_max(until, seq) FILTER (WHERE fate = 'grant_created') AS grant_until_epoch
          FROM steps WHERE approval_id IS NOT NULL GROUP BY approval_id
        ), revoked AS (
          SELECT grant_id, min(ts) AS grant_revoked_at, arg_min(user, seq) AS grant_revoked_by
          FROM steps WHERE fate = 'grant_revoked' GROUP BY grant_id
        )
        SELECT a.approval_id, a.requested_at, a.requester, a.requester_groups, a.rule, a.flow_id, a.method, a.host,
               a.path, a.findings, a.approver_groups,
               CASE WHEN d.used THEN 'used' ELSE coalesce(d.decision, 'pending') END AS state,
               d.decision, d.decided_at,
               round(epoch(d.decided_at) - epoch(a.requested_at), 3) AS latency_seconds,
               d.approvers, d.deniers, d.reasons, d.outcome_reason, d.used_by_flow, d.grant_id,
               make_timestamp(CAST(d.grant_until_epoch * 1000000 AS BIGINT)) AS grant_until,
               r.grant_revoked_at, r.grant_revoked_by
        FROM asked a LEFT JOIN decided d USING (approval_id) LEFT JOIN revoked r ON r.grant_id = d.grant_id
        {"WHERE " + " AND ".join(where) if where else ""}
        ORDER BY a.requested_at, a.approval_id""", params)


def _stage_refusals(con: duckdb.DuckDBPyConnection, f: FlowFilter) -> None:
    fates = refusal_fates()
    categories = " ".join(f"WHEN '{fate}' THEN '{category}'" for fate, category in fates.items())
    # The admin API and approval steps concern no upstream host, group or entity: a filter on those leaves them out.
    outside = f.host is None and f.group is None and f.entity is None
    period, params = period_sql("ts", f)
    if f.user is not None:
        period += " AND user = ?"
        params.append(f.user)
    others = f"""
        UNION ALL
        SELECT ts, CASE kind WHEN 'access' THEN 'admin_api' ELSE 'approval_step' END, kind, fate,
               coalesce(CAST(record->'detail'->>'status' AS INTEGER), status), user, NULL,
               coalesce(record->'detail'->>'why', record->>'reason'), NULL,
               coalesce(record->'detail'->>'path', record->'detail'->>'approval'), NULL, flow_id, seq
        FROM events WHERE kind IN ('access', 'approval') AND fate = 'refused' {period}""" if outside else ""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE pack_refusals AS
        SELECT * FROM (
          SELECT started AS ts, CASE fate {categories} END AS category, 'flow' AS source, fate, status, user,
                 claimed_sub, reason, host, path, rule, flow_id, NULL::BIGINT AS event_seq
          FROM pack_flows WHERE fate IN ({_quoted(list(fates))})
          {others}
        ) ORDER BY ts, flow_id NULLS LAST, event_seq""", params if outside else [])


def count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM pack_{table}").fetchall()[0][0]


def _csv_columns(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """``pack_<table>``'s columns for the CSV: text that would begin a formula in a spreadsheet quoted as text
    (``addons.evidence.spreadsheet``)."""
    columns = []
    for name, sql_type, *_ in con.execute(f"DESCRIBE pack_{table}").fetchall():
        column = '"' + name.replace('"', '""') + '"'
        columns.append(f"{sql_as_text(column)} AS {column}" if sql_type == "VARCHAR" else column)
    return ", ".join(columns)


def copy_out(con: duckdb.DuckDBPyConnection, table: str, folder: Path) -> list[str]:
    """Write ``pack_<table>`` as ``<table>.jsonl``, ``.csv`` and ``.parquet`` in ``folder``; their names."""
    names = []
    for suffix, fmt in FORMATS.items():
        name = f"{table}.{suffix}"
        target = str(folder / name).replace("'", "''")
        options = "FORMAT JSON" if fmt == "JSON" else f"FORMAT {fmt}" + (", HEADER" if fmt == "CSV" else "")
        columns = _csv_columns(con, table) if fmt == "CSV" else "*"
        con.execute(f"COPY (SELECT {columns} FROM pack_{table}) TO '{target}' ({options})")
        names.append(name)
    return names
