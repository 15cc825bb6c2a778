"""How an addon stops a flow: answer it locally (``refuse``), cut it (``cut``), or note why it stopped
(``mark_stopped``); each writes the flow's ``ERROR`` fact, which the recorder turns into its fate.

``fail_closed`` wraps every hook so that an addon which raises stops the request instead of letting
mitmproxy forward it (mitmproxy logs a raising hook and carries on).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from mitmproxy import http

from addons.flow.errors import InternalError, WardenError
from addons.flow.meta import ERROR, Refusal

log = logging.getLogger("warden")


def mark_stopped(flow: http.HTTPFlow, error: WardenError) -> None:
    """Note that the gateway stopped ``flow`` for ``error`` (its fate and reason in the record)."""
    ERROR.set(flow, Refusal.of(error))


def refuse(flow: http.HTTPFlow, error: WardenError) -> None:
    """Answer the flow locally with ``error``; the request does not go upstream."""
    mark_stopped(flow, error)
    flow.response = error.response()
    flow.request.headers.pop("expect", None)  # refused at its headers: never invite the body (100 Continue)


def cut(flow: http.HTTPFlow, error: WardenError) -> None:
    """Kill the flow for ``error``: once the upstream's headers are decided, no answer of the gateway's can
    replace them, so the connection is cut."""
    mark_stopped(flow, error)
    flow.kill()


def fail_closed(hook: Callable) -> Callable:
    """Wrap an addon hook ``(self, flow)``: any exception answers the flow with an error, never forwards it."""

    def handle(self: Any, flow: http.HTTPFlow, exc: Exception) -> None:
        name = f"{type(self).__name__}.{hook.__name__}"
        if not isinstance(exc, WardenError):
            # The flow's id and host, not its URL: a query string may carry the caller's key.
            log.error("warden: %s failed on flow %s (%s %s): %r", name, flow.id, flow.request.method,
                      flow.request.host, exc, exc_info=exc)
            exc = InternalError(f"{name} failed; the request was stopped (see the gateway log)")
        if hook.__name__ == "error":
            return
        if hook.__name__ == "responseheaders" or flow.response is not None and flow.response.stream:
            # The upstream's headers are decided (and a streamed body may be going out): a new response here
            # would be sent with the upstream's bytes after it. Cutting the connection is the only way to fail closed.
            cut(flow, exc)
            return
        refuse(flow, exc)

    if inspect.iscoroutinefunction(hook):

        @functools.wraps(hook)
        async def async_wrapper(self: Any, flow: http.HTTPFlow) -> None:
            try:
                await hook(self, flow)
            except Exception as exc:
                handle(self, flow, exc)

        return async_wrapper

    @functools.wraps(hook)
    def wrapper(self: Any, flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception as exc:
            handle(self, flow, exc)

    return wrapper
