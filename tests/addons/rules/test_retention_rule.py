"""The rules file's ``retention:`` period: read as a length of time, a bad one named by file and field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from addons.rules.model import RulesError, load_rules

BASE = """
upstreams:
  - {name: demo, host: api.example}
"""


def _load(tmp_path: Path, line: str):
    path = tmp_path / "rules.yaml"
    path.write_text(BASE + line)
    return path, load_rules(path)


def test_a_period_in_years_weeks_or_days(tmp_path: Path) -> None:
    assert _load(tmp_path, "retention: 3y\n")[1].model.retention_period == timedelta(days=3 * 365)
    assert _load(tmp_path, "retention: 90d\n")[1].model.retention == "90d"
    assert _load(tmp_path, "")[1].model.retention_period is None  # no retention: everything kept


@pytest.mark.parametrize(("value", "message"), [
    ("three years", "retention: Value error, 'three years' is not a period like 3y, 18w or 90d"),
    ("94608000", "retention: Value error, expected a period like 3y, 18w or 90d (with its unit), got 94608000"),
    ("'94608000'", "retention: Value error, '94608000' is not a period like 3y"),  # a bare number has no unit
    ("2h", "retention: Value error, '2h' is shorter than a day"),
    ("-1y", "retention: Value error, '-1y' is not a period"),
    ("[3y]", "retention: Value error, expected a period like 3y, 18w or 90d (with its unit), got ['3y']"),
])
def test_a_bad_period_is_named_with_file_and_field(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(BASE + f"retention: {value}\n")
    with pytest.raises(RulesError) as e:
        load_rules(path)
    assert f"{path}: {message}" in str(e.value)


def test_a_purge_by_hand_may_not_go_below_the_rules_retention() -> None:
    from datetime import timedelta

    from addons.rules.model import purge_period

    assert purge_period(None, "3y") == ("3y", timedelta(days=3 * 365))
    assert purge_period("4y", "3y")[0] == "4y"
    with pytest.raises(ValueError, match="shorter than the rules' retention \\(3y\\)"):
        purge_period("1s", "3y")
    with pytest.raises(ValueError, match="no retention period"):
        purge_period(None, None)
    assert purge_period("90d", None)[1] == timedelta(days=90)  # no retention in the rules: the operator's call
