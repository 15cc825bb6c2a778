"""The store's one table, and what a store file must not hold besides it.

A Warden store is the ``events`` table (``schema_sql``) and nothing else Warden reads: no functions, macros or
views. In the catalog a writer opens, a macro stored in the file would stand in for DuckDB's own function of that
name inside every query (verification's ``sha256`` among them), and a column whose type or collation was changed
would read differently: ``foreign_objects`` names such things, so that a writer refuses the file and verification
takes the reference walk.
"""

from __future__ import annotations

import duckdb

from addons.store.events import COLUMNS


def schema_sql() -> str:
    cols = ",\n  ".join(f'"{name}" {kind}' for name, kind in COLUMNS)
    return f"CREATE TABLE IF NOT EXISTS events (\n  {cols}\n)"


def _definition() -> str:
    """The ``events`` table's definition as DuckDB keeps it, for a table made by ``schema_sql``."""
    con = duckdb.connect(":memory:")
    try:
        con.execute(schema_sql())
        return con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'events'").fetchall()[0][0]
    finally:
        con.close()


def foreign_objects(con: duckdb.DuckDBPyConnection) -> list[str]:
    """What the databases ``con`` sees hold that Warden never writes: functions and macros, views (but the
    read-only connection's own ``events`` view), and an ``events`` table defined otherwise than ``schema_sql``.
    Empty for a store as Warden keeps it."""
    found = [f"{kind} {catalog}.{name}" for kind, catalog, name in con.execute(
        "SELECT DISTINCT function_type, database_name, function_name FROM duckdb_functions() WHERE NOT internal "
        "ORDER BY ALL").fetchall()]
    found += [f"view {catalog}.{name}" for catalog, name in con.execute(
        "SELECT database_name, view_name FROM duckdb_views() WHERE NOT internal AND NOT temporary "
        "AND NOT (database_name = 'memory' AND view_name = 'events') ORDER BY ALL").fetchall()]
    definition = _definition()
    found += [f"table {catalog}.events defined as {sql!r}" for catalog, sql in con.execute(
        "SELECT database_name, sql FROM duckdb_tables() WHERE table_name = 'events' AND NOT temporary "
        "ORDER BY ALL").fetchall() if sql != definition]
    return found
