"""CSV a spreadsheet opens safely: the one rule for every CSV Warden writes (``warden flows --csv``, the packs).

A spreadsheet reads a cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return as a formula
("CSV injection"), and recorded text is the callers' own: a path, a subject a refused token claimed, a reason.
Such a cell is written with a leading single quote, which spreadsheets show as text. JSON and Parquet outputs
hold every value as recorded.
"""

from __future__ import annotations

import re

FORMULA_START = "^[=+@\\t\\r-]"  # one pattern for Python's re and DuckDB's (RE2) regexp_matches
_FORMULA = re.compile(FORMULA_START)


def as_text(cell: str) -> str:
    """``cell`` as a spreadsheet shows it: quoted as text if it would begin a formula."""
    return "'" + cell if _FORMULA.match(cell) else cell


def sql_as_text(column: str) -> str:
    """The same in DuckDB SQL, for the text column ``column`` (quoted as an identifier)."""
    return f"CASE WHEN regexp_matches({column}, '{FORMULA_START}') THEN '''' || {column} ELSE {column} END"
