"""The gateway's own HTTP listeners beside the proxy (the admin API, Slack's callbacks): one way to name and open
them, on mitmproxy's event loop with tornado (which mitmproxy already brings)."""

from __future__ import annotations

import logging
from typing import Any

import tornado.httpserver
import tornado.web

log = logging.getLogger("warden.listeners")


def parse_listen(spec: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8081`` for IPv6) or empty to disable; raises ValueError naming the problem."""
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, e.g. 127.0.0.1:8081, got {spec!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(app: tornado.web.Application, option: str, spec: str, **server: Any) -> tornado.httpserver.HTTPServer | None:
    """Serve ``app`` at ``spec`` (the value of ``option``); None, logged naming the option, if it cannot listen
    there (the gateway serves on without it)."""
    host, port = parse_listen(spec)
    listener = tornado.httpserver.HTTPServer(app, **server)
    try:
        listener.listen(port, host)
    except OSError as e:
        log.error("warden: %s: cannot listen on %s:%d: %s", option, host, port, e.strerror)
        return None
    return listener
