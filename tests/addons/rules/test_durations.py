"""One duration parser: the forms options, ``warden token --ttl`` and ``--since``/``--until`` accept, and its errors."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from addons.rules.durations import DurationError, parse_duration, seconds
from addons.store.queries import parse_when


@pytest.mark.parametrize(("text", "expected"), [
    ("90", 90), ("2.5", 2.5), (".5", 0.5), ("5.", 5), ("1e3", 1000), ("+7", 7), (" 10 ", 10),
    ("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("1.5m", 90), ("0.2", 0.2),
    ("3y", 3 * 365 * 86400),
])
def test_every_accepted_form(text: str, expected: float) -> None:
    assert parse_duration(text) == timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["soon", "", "m", "5 m", "5M", "1Y", "5mm", "1_000", "inf", "nan", "- 5", "5m5s"])
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(DurationError) as e:
        parse_duration(text)
    assert e.value.problem == "form" and e.value.text == text
    assert str(e.value) == f"{text!r} is not a duration like 90, 2.5, 15m, 2h, 7d or 1w"


@pytest.mark.parametrize("text", ["0", "0m", "-1", "-2h", "1e-9", "1e300", "99999999999w"])
def test_zero_negative_or_too_long(text: str) -> None:
    with pytest.raises(DurationError) as e:
        parse_duration(text)
    assert e.value.problem == "range" and "is zero, negative or too long for a duration" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_a_unit_can_be_required() -> None:
    assert parse_duration("2h", bare=False) == timedelta(hours=2)
    with pytest.raises(DurationError):
        parse_duration("900", bare=False)


class _Options:
    def load(self, loader) -> None:
        loader.add_option("test_timeout", str, "10", "a duration option")


@pytest.mark.parametrize(("raw", "expected"), [("10", 10.0), ("2.5", 2.5), ("5m", 300.0)])
def test_option_reader(raw: str, expected: float) -> None:
    with taddons.context(_Options()) as tctx:
        tctx.options.test_timeout = raw
        assert seconds("test_timeout") == expected


@pytest.mark.parametrize(("raw", "message"), [
    ("soon", "test_timeout: expected a number of seconds (e.g. 10 or 2.5), got 'soon'"),
    ("-1", "test_timeout: must be a positive number of seconds, got '-1'"),
    ("0", "test_timeout: must be a positive number of seconds, got '0'"),
])
def test_option_reader_names_the_option(raw: str, message: str) -> None:
    with taddons.context(_Options()) as tctx:
        tctx.options.test_timeout = raw
        with pytest.raises(exceptions.OptionsError) as e:
            seconds("test_timeout")
        assert str(e.value) == message


def test_when_is_a_duration_ago_or_a_time() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0)
    assert parse_when("2h", now) == datetime(2026, 11, 23, 10, 0, 0)
    assert parse_when("90s", now) == now - timedelta(seconds=90)
    assert parse_when("1w", now) == datetime(2026, 11, 16, 12, 0, 0)
    assert parse_when("2026-11-23T10:00:00") == datetime(2026, 11, 23, 10, 0, 0)
    assert parse_when("2026-11-23T10:00:00+02:00") == datetime(2026, 11, 23, 8, 0, 0)
    assert parse_when("20261123") == datetime(2026, 11, 23)  # a date in basic form, not seconds ago
    for bad in ("yesterday-ish", "900", "0h"):
        with pytest.raises(ValueError, match="is neither an ISO 8601 time nor a duration like 15m, 2h, 7d"):
            parse_when(bad, now)
