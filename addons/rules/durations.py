"""Option values mitmproxy has no type for. Its options are int, str, bool or lists of str; a duration
in seconds that may be fractional is declared as ``str`` and read with ``seconds``."""

from __future__ import annotations

from mitmproxy import ctx, exceptions


def seconds(name: str) -> float:
    """The option ``name`` as a positive number of seconds; ``OptionsError`` naming it otherwise."""
    raw = getattr(ctx.options, name)
    try:
        value = float(raw)
    except ValueError:
        raise exceptions.OptionsError(f"{name}: expected a number of seconds (e.g. 10 or 2.5), got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise exceptions.OptionsError(f"{name}: must be a positive number of seconds, got {raw!r}")
    return value
