"""Lengths of time, written the one way every part of Warden reads them: ``90``, ``2.5``, ``90s``, ``15m``, ``2h``,
``7d``, ``1w``, ``3y`` (a year is 365 days).

``parse_duration`` is the parser (options, ``warden token --ttl``, ``--since``/``--until`` relative times);
``seconds`` reads an option with it. mitmproxy's options are int, str, bool or lists of str, so a duration
option is declared as ``str``.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Literal

from mitmproxy import ctx, exceptions
from pydantic import BeforeValidator

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 365 * 86400}
EXAMPLES = "90, 2.5, 15m, 2h, 7d or 1w"
_DURATION = re.compile(r"(?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?P<unit>[smhdwy]?)")


class DurationError(ValueError):
    """``text`` is not a length of time Warden accepts.

    ``problem`` is ``"form"`` (not written as one) or ``"range"`` (zero, negative, or too long to count)."""

    def __init__(self, text: str, problem: Literal["form", "range"]) -> None:
        self.text = text
        self.problem = problem
        super().__init__(f"{text!r} is not a duration like {EXAMPLES}" if problem == "form"
                         else f"{text!r} is zero, negative or too long for a duration")


def parse_duration(text: str, *, bare: bool = True) -> timedelta:
    """The positive length of time ``text`` says: a number with a unit (s, m, h, d, w, y) or, if ``bare``, a plain
    number of seconds. ``DurationError`` otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or not (bare or match["unit"]):
        raise DurationError(text, "form")
    amount = float(match["number"]) * UNITS[match["unit"] or "s"]
    if not 0 < amount < math.inf:
        raise DurationError(text, "range")
    try:
        duration = timedelta(seconds=amount)
    except OverflowError:
        raise DurationError(text, "range") from None
    if not duration:  # shorter than a microsecond
        raise DurationError(text, "range")
    return duration


def seconds(name: str) -> float:
    """The option ``name`` as a positive number of seconds; ``OptionsError`` naming it otherwise."""
    raw = getattr(ctx.options, name)
    try:
        return parse_duration(raw).total_seconds()
    except DurationError as e:
        if e.problem == "form":
            raise exceptions.OptionsError(
                f"{name}: expected a number of seconds (e.g. 10 or 2.5), got {raw!r}") from None
        raise exceptions.OptionsError(f"{name}: must be a positive number of seconds, got {raw!r}") from None


def _duration(value: object) -> float:
    """A length of time in the rules file (``90``, ``2m``, ``1h``) as seconds."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration like 90, 2m or 1h, got {value!r}")
    try:
        return parse_duration(str(value)).total_seconds()
    except DurationError as e:
        raise ValueError(str(e)) from None


Duration = Annotated[float, BeforeValidator(_duration)]
"""A length of time in a rules-file model field, read as seconds."""
