"""Review: a time so far back that no date can hold it is a bad value (ValueError: the admin API's 400, the CLI's
message naming the option), not an OverflowError (a 500, a traceback)."""

from __future__ import annotations

from datetime import datetime

import pytest

from addons.store.queries import parse_when


@pytest.mark.parametrize("text", ["99999999d", "2000000w", "100000000000s"])
def test_a_duration_reaching_before_year_one_is_a_bad_value(text: str) -> None:
    with pytest.raises(ValueError, match="too far back"):
        parse_when(text, datetime(2026, 11, 23, 12, 0, 0))
