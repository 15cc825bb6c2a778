"""Rebuild mitmproxy flows from recorded events, for ``warden export-flows`` and ``warden show``.

The flows carry what the store holds: redacted headers and the bodies as they left (masked),
or, with an originals key, the originals decrypted in their place. ``mitmweb --rfile FILE``
opens the result.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import UTC
from http import HTTPStatus
from typing import Any

from mitmproxy import connection, http, io
from mitmproxy.flow import Error as FlowError

from addons.store.events import Event
from addons.store.keys import OriginalsKey
from addons.store.queries import headers_of


def group_by_flow(events: Iterable[Event]) -> OrderedDict[str, list[Event]]:
    """Events (in chain order) grouped per flow, flows in order of their first event; checkpoints dropped."""
    flows: OrderedDict[str, list[Event]] = OrderedDict()
    for event in events:
        if event.flow_id is not None:
            flows.setdefault(event.flow_id, []).append(event)
    return flows


def body_of(event: Event, originals: OriginalsKey | None) -> bytes | None:
    """The recorded body, or the decrypted original where masking changed it and a key is given."""
    if originals is not None and event.original_enc is not None and event.flow_id:
        return originals.decrypt(event.original_enc, event.flow_id)
    return event.body


def _fields(event: Event) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in headers_of(event))


def to_flow(events: list[Event], originals: OriginalsKey | None = None) -> http.HTTPFlow | None:
    """One mitmproxy flow from one flow's events; None if its request event is missing."""
    request_event = next((e for e in events if e.kind == "request"), None)
    if request_event is None:
        return None
    req = request_event
    started = req.ts.replace(tzinfo=UTC).timestamp()
    peer_host, _, peer_port = (req.client or "0.0.0.0:0").rpartition(":")
    client = connection.Client(peername=(peer_host, int(peer_port or 0)), sockname=("0.0.0.0", 0),
                               timestamp_start=started)
    server = connection.Server(address=(req.host or "", req.port or 0))
    flow = http.HTTPFlow(client, server)
    flow.id = req.flow_id or flow.id
    authority = f"{req.host}:{req.port}".encode() if req.method == "CONNECT" else b""
    flow.request = http.Request(
        req.host or "", req.port or 0, (req.method or "GET").encode(), (req.scheme or "").encode(), authority,
        (req.path or "").encode(), (req.http_version or "HTTP/1.1").encode(), _fields(req),
        body_of(req, originals), None, started, started,
    )
    fates = []
    for event in events:
        ended = started + (event.latency_total_ms or 0) / 1000
        if event.kind == "response":
            status = event.status or 0
            reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
            flow.response = http.Response(
                (event.http_version or "HTTP/1.1").encode(), status, reason.encode(), _fields(event),
                body_of(event, originals), None, ended, ended,
            )
        elif event.kind == "error":
            flow.error = FlowError(event.reason or "error", ended)
        if event.fate and event.kind in ("response", "error"):
            fates.append(event.fate)
    # as ``warden flows`` says it: how the answer ended, else why the request went no further
    fate = fates[-1] if fates else req.fate if req.fate not in (None, "forwarded") else "incomplete"
    warden = _provenance(req, events, fate)
    flow.metadata["warden"] = warden
    flow.comment = comment(warden)
    flow.live = False
    return flow


def _provenance(req: Event, events: list[Event], fate: str) -> dict[str, Any]:
    """Who sent the flow, what was decided and by which rule, how it ended and what was masked: what an
    investigator reads beside the request in mitmweb (``flow.metadata["warden"]``)."""
    detail = req.detail or {}
    identity = detail.get("identity") or {}
    answered = next((e for e in reversed(events) if e.kind == "response"), None)
    return {
        "user": req.user, "groups": identity.get("groups") or [], "identity": identity or None,
        "claimed_sub": detail.get("claimed_sub"), "upstream": req.upstream, "model": req.model,
        "decision": req.decision, "rule": req.rule, "fate": fate,
        "reason": next((e.reason for e in reversed(events) if e.reason), None),
        "answer": {"decision": answered.decision, "rule": answered.rule} if answered and answered.decision else None,
        "approval": detail.get("approval"),
        "findings": {"request": req.entities or {}, "response": (answered.entities if answered else None) or {}},
        "events": [{"seq": e.seq, "kind": e.kind, "hash": e.hash} for e in events],
        "detail": [e.detail for e in events],
    }


def comment(warden: dict[str, Any]) -> str:
    """One readable line: ``alice (dev) · allow by default · completed · masked EMAIL_ADDRESS×2 | answer PERSON``."""
    who = warden["user"] or (f"unverified {warden['claimed_sub']}" if warden["claimed_sub"] else "no identity")
    if warden["groups"]:
        who += f" ({', '.join(warden['groups'])})"
    parts = [who, f"{warden['decision']} by {warden['rule']}" if warden["decision"] else "no decision",
             warden["fate"]]
    if warden["answer"]:
        parts.append(f"answer {warden['answer']['decision']} by {warden['answer']['rule']}")
    if warden["approval"]:
        parts.append(f"approval {warden['approval'].get('approval') or '-'} {warden['approval'].get('outcome', '')}")

    def counts(found: dict[str, int]) -> str:
        return " ".join(f"{k}×{v}" if v > 1 else k for k, v in sorted(found.items()))

    findings = warden["findings"]
    if findings["request"] or findings["response"]:
        parts.append(("masked " + counts(findings["request"]) if findings["request"] else "masked -")
                     + (f" | answer {counts(findings['response'])}" if findings["response"] else ""))
    return " · ".join(parts)


def to_flows(events: Iterable[Event], originals: OriginalsKey | None = None) -> Iterator[http.HTTPFlow]:
    for flow_events in group_by_flow(events).values():
        flow = to_flow(flow_events, originals)
        if flow is not None:
            yield flow


def write_flows(path: str, flows: Iterable[http.HTTPFlow]) -> int:
    """Write flows to a mitmproxy flow file; returns how many."""
    count = 0
    with open(path, "wb") as f:
        writer = io.FlowWriter(f)
        for flow in flows:
            writer.add(flow)
            count += 1
    return count
