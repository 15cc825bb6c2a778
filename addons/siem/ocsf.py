"""The store's events as OCSF events (https://schema.ocsf.io, version ``OCSF_VERSION``), for a SIEM.

One store event gives one OCSF event; ``metadata.uid`` is the event's ``seq``, so a consumer that got an event twice
(a batch re-sent after a crash) drops the copy. What goes out is chosen field by field from the columns and the
record: never a body (``body``, ``original_enc``, a preview kept in an approval's detail), never a header, never the
request's findings beyond their counts. Which class each kind maps to, and why, is the README's "SIEM" section.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import UTC
from importlib import metadata
from typing import Any

from addons.store.events import Event

OCSF_VERSION = "1.3.0"
PRODUCT = {"name": "Warden", "vendor_name": "Warden", "version": metadata.version("warden")}

API_ACTIVITY, AUTHENTICATION, USER_ACCESS, NETWORK_ACTIVITY, APP_LIFECYCLE, BASE_EVENT = 6003, 3002, 3005, 4001, 6002, 0
CATEGORY = {API_ACTIVITY: 6, AUTHENTICATION: 3, USER_ACCESS: 3, NETWORK_ACTIVITY: 4, APP_LIFECYCLE: 6, BASE_EVENT: 0}
CLASS_NAME = {API_ACTIVITY: "API Activity", AUTHENTICATION: "Authentication", USER_ACCESS: "User Access Management",
              NETWORK_ACTIVITY: "Network Activity", APP_LIFECYCLE: "Application Lifecycle", BASE_EVENT: "Base Event"}
OTHER = 99
API_ACTIVITY_BY_METHOD = {"POST": 1, "GET": 2, "HEAD": 2, "PUT": 3, "PATCH": 3, "DELETE": 4}  # Create, Read, Update...
LOGON = 1
ASSIGN_PRIVILEGES, REVOKE_PRIVILEGES = 1, 2
REFUSE, FAIL = 5, 4  # Network Activity
APP_START, APP_UPDATE = 3, 8  # Application Lifecycle
SUCCESS, FAILURE, STATUS_UNKNOWN = 1, 2, 0
INFORMATIONAL, LOW, MEDIUM = 1, 2, 3

# A flow's request event's fates and a response's: what went as asked. Any other fate is the gateway refusing,
# blocking or failing (an error type of addons/flow/errors.py, or an upstream error).
FLOW_SUCCESS = ("forwarded", "answered_locally", "completed", "open", "relayed", "closed")
UNAUTHENTICATED = "unauthenticated"
GRANTING = ("approved", "grant_created")
REVOKING = ("denied", "grant_revoked", "access_revoked")
# Kinds whose whole detail goes out: the chain's own facts, no flow content (the store keeps no secret, by design).
CHAIN_KINDS = ("checkpoint", "journal_repair", "purge", "hold", "keys")
APPROVAL_FIELDS = ("approval", "grant", "until", "window", "expires_at", "via")
CHECKPOINT_FIELDS = ("head_seq", "head_hash", "signature", "key_id")


class FlowContext:
    """Each recent flow's request (method, host, path...), so its response and error, which do not repeat them,
    map with them. Bounded: a response far behind its request maps without them."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.requests: OrderedDict[str, Event] = OrderedDict()
        self.requesters: OrderedDict[str, str] = OrderedDict()  # approval id -> who asked (a vote names only its id)

    def note(self, event: Event) -> None:
        detail = event.detail or {}
        if event.kind == "request" and event.flow_id:
            self._keep(self.requests, event.flow_id, event)
        elif event.kind == "approval" and event.fate == "requested" and event.user and "approval" in detail:
            self._keep(self.requesters, detail["approval"], event.user)

    def _keep(self, table: OrderedDict, key: str, value: Any) -> None:
        table[key] = value
        while len(table) > self.size:
            table.popitem(last=False)

    def request_of(self, event: Event) -> Event | None:
        return self.requests.get(event.flow_id) if event.flow_id and event.kind != "request" else None


def to_ocsf(event: Event, context: FlowContext | None = None) -> dict[str, Any]:
    """``event`` as one OCSF event (a dict, JSON-ready)."""
    tombstone = _tombstone(event)
    if tombstone is not None:  # its place in the chain and the digest of what was removed, nothing of it
        out = _base(event, BASE_EVENT, OTHER, f"{event.kind} (purged)", INFORMATIONAL, STATUS_UNKNOWN)
        out.pop("status_detail", None)
        out["unmapped"]["warden"] = {"seq": event.seq, "kind": event.kind, "hash": event.hash,
                                     "prev_hash": event.prev_hash, "tombstone": tombstone}
        return out
    request = context.request_of(event) if context is not None else None
    if context is not None:
        context.note(event)
    if _is_authentication_refusal(event):
        return _authentication(event, request)
    if event.kind in ("request", "response", "error", "websocket", "access"):
        return _api_activity(event, request)
    if event.kind == "approval":
        asked_by = context.requesters.get((event.detail or {}).get("approval", "")) if context else None
        return _user_access(event, asked_by)
    if event.kind == "connection":
        return _network_refusal(event)
    if event.kind in ("startup", "config"):
        return _lifecycle(event)
    fields = CHECKPOINT_FIELDS if event.kind == "checkpoint" else None
    detail = {k: v for k, v in (event.detail or {}).items() if fields is None or k in fields}
    return _base(event, BASE_EVENT, OTHER, event.fate or event.kind, INFORMATIONAL, STATUS_UNKNOWN,
                 unmapped={"detail": detail} if detail else None)


def _tombstone(event: Event) -> dict | None:
    """The tombstone a purged event's record holds (content removed by retention, digest kept), if it is one."""
    if not event.stored_record:
        return None
    record = json.loads(event.stored_record)
    tombstone = record.get("tombstone") if isinstance(record, dict) else None
    return tombstone if isinstance(tombstone, dict) else None


def _is_authentication_refusal(event: Event) -> bool:
    if event.fate == UNAUTHENTICATED:
        return True
    detail = event.detail or {}
    if event.kind == "access":
        return event.fate == "refused" and detail.get("status") == 401
    return event.kind == "approval" and event.fate == "refused" and detail.get("type") == UNAUTHENTICATED


def _base(event: Event, class_uid: int, activity_id: int, activity_name: str, severity_id: int, status_id: int, *,
          unmapped: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every class carries: the class, the activity, the time, ``metadata`` (seq, product, the flow as
    correlation), status and severity; ``unmapped.warden``: the event's chain position and the gateway's verdict."""
    millis = int(event.ts.replace(tzinfo=UTC).timestamp() * 1000)
    warden = {k: v for k, v in {
        "seq": event.seq, "kind": event.kind, "hash": event.hash, "prev_hash": event.prev_hash,
        "flow_id": event.flow_id, "fate": event.fate, "decision": event.decision, "rule": event.rule,
        "reason": event.reason, "upstream": event.upstream, "model": event.model, "entities": event.entities,
        "tokens_in": event.tokens_in, "tokens_out": event.tokens_out, **(unmapped or {}),
    }.items() if v is not None}
    out: dict[str, Any] = {
        "class_uid": class_uid, "class_name": CLASS_NAME[class_uid],
        "category_uid": CATEGORY[class_uid], "activity_id": activity_id, "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id, "time": millis, "severity_id": severity_id,
        "status_id": status_id,
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT, "uid": str(event.seq), "logged_time": millis,
                     **({"correlation_uid": event.flow_id} if event.flow_id else {})},
        "unmapped": {"warden": warden},
    }
    if event.reason:
        out["status_detail"] = event.reason
    return out


def _user(sub: str | None, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OCSF ``user``: the subject, their groups and e-mail as their token said (``detail['identity']``)."""
    identity = (detail or {}).get("identity") or {}
    user: dict[str, Any] = {"uid": sub or "unknown", "name": sub or "unknown"}
    if identity.get("groups"):
        user["groups"] = [{"name": g} for g in identity["groups"]]
    if identity.get("email"):
        user["email_addr"] = identity["email"]
    if identity.get("kind") == "service":
        user["type_id"], user["type"] = 3, "System"
    elif identity:
        user["type_id"], user["type"] = 1, "User"
    return user


def _endpoint(event: Event) -> dict[str, Any]:
    """Where the event came from: a proxy client's peer (``ip:port``; IPv6 unbracketed, so split at the last colon)
    or the admin API's caller (an address alone, on ``access`` events)."""
    if not event.client:
        return {"name": "unknown"}
    if event.kind == "access":
        return {"ip": event.client}
    host, _, port = event.client.rpartition(":")
    return {"ip": host, "port": int(port)} if host and port.isdigit() else {"ip": event.client}


def _http_request(event: Event, request: Event | None) -> dict[str, Any] | None:
    source = request if request is not None else event
    if event.kind == "access":
        what = event.detail or {}
        method, path = what.get("method"), what.get("path")
        return {"http_method": method, "url": {"path": path}} if method and path else None
    if not source.method or not source.path:
        return None
    url: dict[str, Any] = {"path": source.path.split("?", 1)[0]}
    if source.host:
        url["hostname"] = source.host
    if source.port:
        url["port"] = source.port
    if source.scheme:
        url["scheme"] = source.scheme
    out = {"http_method": source.method, "url": url}
    if source.http_version:
        out["version"] = source.http_version
    return out


def _status(event: Event) -> int:
    if event.kind == "access":
        return FAILURE if event.fate == "refused" else SUCCESS
    if event.status is not None and event.status >= 400:
        return FAILURE
    return SUCCESS if event.fate in FLOW_SUCCESS else FAILURE if event.fate else STATUS_UNKNOWN


def _api_activity(event: Event, request: Event | None) -> dict[str, Any]:
    http = _http_request(event, request)
    method = http["http_method"] if http else None
    activity = API_ACTIVITY_BY_METHOD.get(method or "", OTHER)
    status = _status(event)
    name = {1: "Create", 2: "Read", 3: "Update", 4: "Delete"}.get(activity, "Other")
    out = _base(event, API_ACTIVITY, activity, name, LOW if status == FAILURE else INFORMATIONAL, status,
                unmapped={"admin_api": _access_query(event)} if event.kind == "access" else None)
    identity_of = request if request is not None else event
    actor_user = _user(event.user or identity_of.user, identity_of.detail)
    out["actor"] = {"user": actor_user}
    out["src_endpoint"] = _endpoint(identity_of)
    operation = f"{method} {http['url']['path']}" if http else event.kind
    out["api"] = {"operation": operation, "request": {"uid": event.flow_id or str(event.seq)},
                  "service": {"name": "warden-admin" if event.kind == "access" else (identity_of.host or "unknown")}}
    if http is not None:
        out["http_request"] = http
    code = event.status if event.status is not None else (event.detail or {}).get("status")
    if isinstance(code, int):  # (``http_response`` joined API Activity only in OCSF 1.5)
        out["api"]["response"] = {"code": code}
    if identity_of.host and event.kind != "access":
        out["dst_endpoint"] = {"hostname": identity_of.host, **({"port": identity_of.port} if identity_of.port else {})}
    return out


def _access_query(event: Event) -> dict[str, Any]:
    """What the admin API was asked: the query's arguments (a search, a cursor), never a token."""
    detail = event.detail or {}
    return {k: v for k, v in detail.items() if k in ("query", "why", "status")}


def _authentication(event: Event, request: Event | None) -> dict[str, Any]:
    detail = event.detail or {}
    identity_of = request if request is not None else event
    claimed = (identity_of.detail or {}).get("claimed_sub")  # unverified: the token was refused
    out = _base(event, AUTHENTICATION, LOGON, "Logon", MEDIUM, FAILURE,
                unmapped={"claimed_sub": claimed} if claimed else None)
    out["user"] = _user(event.user or claimed)
    out["src_endpoint"] = _endpoint(identity_of)
    out["service"] = {"name": "warden-admin" if event.kind in ("access", "approval") else "warden-proxy"}
    http = _http_request(event, request)
    if http is None and detail.get("path"):
        http = {"url": {"path": detail["path"]}}
    if http is not None:
        out["http_request"] = http
    return out


def _user_access(event: Event, requester_of_approval: str | None) -> dict[str, Any]:
    """An approval step: who gained or lost the right to send what a rule holds back (``privileges``: the rule, the
    approval or grant), and who decided (``actor``)."""
    detail = event.detail or {}
    step = event.fate or "other"
    activity = ASSIGN_PRIVILEGES if step in GRANTING else REVOKE_PRIVILEGES if step in REVOKING else OTHER
    requester = detail.get("requester")
    subject = (detail.get("subject") or (requester.get("sub") if isinstance(requester, dict) else requester)
               or requester_of_approval)
    ids: dict[str, Any] = {k: detail[k] for k in APPROVAL_FIELDS if k in detail}
    status = FAILURE if step in ("refused", "notify_failed", "expired", "abandoned") else SUCCESS
    if event.user and subject and event.user != subject:  # the class has no actor (OCSF 1.3): the decider goes here
        ids["by"] = {"sub": event.user, "groups": detail.get("groups") or []}
    out = _base(event, USER_ACCESS, activity, step, LOW if status == FAILURE else INFORMATIONAL, status,
                unmapped=ids or None)
    out["user"] = _user(subject or event.user)
    out["privileges"] = [f"rule:{event.rule}" if event.rule else f"approval:{step}"]
    return out


def _network_refusal(event: Event) -> dict[str, Any]:
    out = _base(event, NETWORK_ACTIVITY, FAIL if event.fate == "tls_failed" else REFUSE,
                "Fail" if event.fate == "tls_failed" else "Refuse", LOW, FAILURE)
    out["src_endpoint"] = _endpoint(event)
    out["dst_endpoint"] = {"hostname": event.host, **({"port": event.port} if event.port else {})} if event.host \
        else {"name": "warden"}
    if event.user:
        out["actor"] = {"user": _user(event.user, event.detail)}
    return out


def _lifecycle(event: Event) -> dict[str, Any]:
    """A gateway start (and what it found) or a rules edit applied or refused."""
    start = event.kind == "startup"
    status = FAILURE if event.fate == "refused" else SUCCESS
    out = _base(event, APP_LIFECYCLE, APP_START if start else APP_UPDATE, "Start" if start else "Update",
                MEDIUM if start and event.reason else LOW if status == FAILURE else INFORMATIONAL, status,
                unmapped={"detail": event.detail} if event.detail else None)
    out["app"] = PRODUCT
    return out
