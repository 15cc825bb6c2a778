"""The facts rule conditions read about a flow: who asks (``identity``), what they ask (``request``) and when
(``time``), as ``Facts`` for ``addons/rules/conditions.py``. Policy adds what masking found (``pii``) to decide a
request; the answers addon adds what came back (``answer``) to screen its answer."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime

from mitmproxy import http

from addons.bodies.usage import RequestShape
from addons.flow.meta import IDENTITY, UPSTREAM, Identity
from addons.rules.conditions import Facts
from addons.rules.model import Rules

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _zone(rules: Rules, identity: Identity | None) -> zoneinfo.ZoneInfo:
    name = rules.model.time_zone
    if name == "caller":
        name = identity.zoneinfo if identity is not None and identity.zoneinfo else "UTC"
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):  # a caller's claim that names no zone
        return zoneinfo.ZoneInfo("UTC")


def facts_for(rules: Rules, flow: http.HTTPFlow, shape: RequestShape, now: datetime | None = None) -> Facts:
    """The variables rule conditions read for ``flow`` (``pii`` comes later, from masking)."""
    identity = IDENTITY.of(flow)
    zone = _zone(rules, identity)
    local = (now or datetime.now(UTC)).astimezone(zone)
    request = flow.request
    return Facts(
        identity={"sub": identity.sub, "email": identity.email, "groups": identity.groups,
                  "client_id": identity.client_id, "kind": identity.kind, "method": identity.method}
        if identity is not None else {},
        request={"host": request.pretty_host, "method": request.method, "path": request.path.split("?", 1)[0],
                 "scheme": request.scheme, "upstream": UPSTREAM.of(flow), "model": shape.model,
                 "body_size": len(request.raw_content or b""), "messages": shape.messages, "tools": list(shape.tools),
                 "stream": shape.stream, "content_type": request.headers.get("content-type", "")},
        time={"hour": local.hour, "minute": local.minute, "weekday": _WEEKDAYS[local.weekday()],
              "date": local.date().isoformat(), "zone": str(zone)},
    )
