"""Every kind of store event maps to an OCSF event of its class that validates against the OCSF schema, carries its
seq for dedup, and never a body, a header or a secret."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from addons.siem.ocsf import FlowContext, to_ocsf
from addons.store.events import GENESIS, KINDS, Event, seal
from tests.ocsf import ocsf_errors

SECRET = "sk-live-PLANTED-SECRET-4242"
BODY = b'{"messages":[{"content":"my card is 4111 1111 1111 1111"}]}'
IDENTITY = {"sub": "alice", "email": "alice@example.com", "groups": ["eng", "ml"], "kind": "person"}
WHEN = datetime(2026, 3, 1, 12, 0, 0, 250000)


def sealed(event: Event, seq: int) -> Event:
    seal(event, seq, GENESIS)
    return event


def one_of_each() -> dict[str, list[Event]]:
    """Events as the gateway writes them, one list per kind (several where the kind has several shapes)."""
    flow = "f-1"
    request = Event(kind="request", flow_id=flow, ts=WHEN, user="alice", client="10.0.0.7:51234", mode="regular",
                    method="POST", scheme="https", host="api.openai.com", port=443, path="/v1/chat/completions",
                    http_version="HTTP/1.1", fate="forwarded", decision="mask", rule="mask-pii", upstream="openai",
                    model="gpt-4o", headers=[["authorization", SECRET]], body=BODY, body_size=len(BODY),
                    original_enc=SECRET.encode(), entities={"CREDIT_CARD": 1, "PERSON": 2},
                    detail={"identity": IDENTITY, "pii": {"findings": [{"text": "4111"}]}})
    kinds = {
        "request": [request, Event(kind="request", flow_id="f-2", ts=WHEN, client="10.0.0.8:4000", method="GET",
                                   host="api.openai.com", path="/v1/models?key=x", fate="blocked_by_policy",
                                   decision="block", rule="no-models", detail={"identity": IDENTITY})],
        "response": [Event(kind="response", flow_id=flow, ts=WHEN, user="alice", status=200, fate="completed",
                           body=BODY, headers=[["set-cookie", SECRET]], tokens_in=12, tokens_out=30,
                           entities={"PERSON": 1})],
        "error": [Event(kind="error", flow_id=flow, ts=WHEN, user="alice", fate="upstream_error", status=502,
                        reason="connection reset")],
        "checkpoint": [Event(kind="checkpoint", ts=WHEN, detail={
            "head_seq": 41, "head_hash": "ab" * 32, "signature": "c2ln", "key_id": "k1"})],
        "journal_repair": [Event(kind="journal_repair", ts=WHEN, detail={"dropped_lines": 1})],
        "connection": [Event(kind="connection", flow_id="c-1", ts=WHEN, client="10.0.0.9:999", mode="regular",
                             host="example.org", port=443, fate="connection_refused", reason="not HTTP",
                             detail={"classification": "ssh"}),
                       Event(kind="connection", flow_id="c-2", ts=WHEN, client="::1:998", fate="tls_failed",
                             reason="bad hello")],
        "websocket": [Event(kind="websocket", flow_id="w-1", ts=WHEN, user="alice", host="api.openai.com", port=443,
                            fate="relayed", detail={"messages": 3})],
        "startup": [Event(kind="startup", ts=WHEN, reason="unsigned_tail", detail={"first": 10, "last": 12})],
        "approval": [
            Event(kind="approval", ts=WHEN, fate="requested", decision="requested", user="alice", rule="big-export",
                  flow_id="f-3", detail={"approval": "ap-1", "requester": IDENTITY,
                                         "request": {"preview": BODY.decode(), "method": "POST"}}),
            Event(kind="approval", ts=WHEN, fate="approved", decision="approved", user="bob", rule="big-export",
                  detail={"approval": "ap-1", "groups": ["leads"], "window": 600}),
            Event(kind="approval", ts=WHEN, fate="grant_created", user="bob", rule="big-export",
                  detail={"grant": "gr-1", "approval": "ap-1", "requester": "alice", "until": 1.0e9}),
            Event(kind="approval", ts=WHEN, fate="access_revoked", user="carol", detail={"subject": "alice"}),
            Event(kind="approval", ts=WHEN, fate="refused", reason="bad token",
                  detail={"status": 401, "type": "unauthenticated", "path": "/api/approvals/ap-1/approve"}),
        ],
        "config": [Event(kind="config", ts=WHEN, fate="applied", detail={"file": "rules.yaml", "sha256": "00"})],
        "access": [Event(kind="access", ts=WHEN, user="auditor", client="127.0.0.1", fate="read",
                         detail={"method": "GET", "path": "/api/flows", "query": {"user": ["alice"]}}),
                   Event(kind="access", ts=WHEN, client="127.0.0.1", fate="refused",
                         detail={"method": "GET", "path": "/api/events", "query": {}, "status": 403, "why": "no"})],
        "purge": [Event(kind="purge", ts=WHEN, user="ops", detail={"before": "2023-01-01", "events": 10})],
        "hold": [Event(kind="hold", ts=WHEN, user="ops", fate="added", reason="incident 7", detail={"flow": "f-1"})],
        "keys": [Event(kind="keys", ts=WHEN, user="ops", fate="rotated", detail={"key": "signing", "key_id": "k2"})],
    }
    seq = 0
    for events in kinds.values():
        for event in events:
            sealed(event, seq)
            seq += 1
    return kinds


def mapped() -> list[tuple[Event, dict]]:
    context = FlowContext()
    return [(e, to_ocsf(e, context)) for events in one_of_each().values() for e in events]


def test_every_kind_of_the_store_is_covered() -> None:
    assert set(one_of_each()) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_validates_against_the_ocsf_schema(kind: str) -> None:
    for event, out in mapped():
        if event.kind == kind:
            assert ocsf_errors(out) == [], (event, out)
            assert out["metadata"]["uid"] == str(event.seq)
            assert out["metadata"]["product"]["name"] == "Warden"
            assert out["time"] == 1772366400250
            assert out["unmapped"]["warden"]["hash"] == event.hash


def test_never_a_body_a_header_or_a_secret() -> None:
    text = json.dumps([out for _, out in mapped()])
    for planted in (SECRET, "4111", "my card", "authorization", "set-cookie", "preview"):
        assert planted not in text


def test_classes() -> None:
    classes = {(e.kind, e.fate): (o["class_uid"], o["activity_id"], o["status_id"]) for e, o in mapped()}
    assert classes[("request", "forwarded")] == (6003, 1, 1)  # POST: Create
    assert classes[("request", "blocked_by_policy")] == (6003, 2, 2)  # GET: Read, refused
    assert classes[("response", "completed")] == (6003, 1, 1)  # the method from its request
    assert classes[("approval", "approved")] == (3005, 1, 1)
    assert classes[("approval", "grant_created")] == (3005, 1, 1)
    assert classes[("approval", "access_revoked")] == (3005, 2, 1)
    assert classes[("approval", "requested")] == (3005, 99, 1)
    approved = next(o for e, o in mapped() if e.fate == "approved")
    assert approved["user"]["name"] == "alice"  # the vote names its approval; who asked, its request said
    assert approved["unmapped"]["warden"]["by"] == {"sub": "bob", "groups": ["leads"]}
    grant = next(o for e, o in mapped() if e.fate == "grant_created")
    assert grant["user"]["name"] == "alice" and grant["unmapped"]["warden"]["by"] == {"sub": "bob", "groups": []}
    assert classes[("approval", "refused")] == (3002, 1, 2)  # a forged token on an approver's call
    assert classes[("access", "read")] == (6003, 2, 1)
    assert classes[("access", "refused")] == (6003, 2, 2)  # 403: authenticated, not an admin
    assert classes[("connection", "connection_refused")] == (4001, 5, 2)
    assert classes[("startup", None)][0] == 6002
    assert classes[("checkpoint", None)] == (0, 99, 0)


def test_a_flow_maps_with_who_what_and_the_verdict() -> None:
    out = dict((e.kind, o) for e, o in mapped() if e.flow_id == "f-1")
    request, response = out["request"], out["response"]
    assert request["actor"]["user"] == {"uid": "alice", "name": "alice", "email_addr": "alice@example.com",
                                        "groups": [{"name": "eng"}, {"name": "ml"}], "type_id": 1, "type": "User"}
    assert request["src_endpoint"] == {"ip": "10.0.0.7", "port": 51234}
    assert request["http_request"] == {"http_method": "POST", "version": "HTTP/1.1", "url": {
        "path": "/v1/chat/completions", "hostname": "api.openai.com", "port": 443, "scheme": "https"}}
    warden = request["unmapped"]["warden"]
    assert (warden["decision"], warden["rule"], warden["fate"]) == ("mask", "mask-pii", "forwarded")
    assert warden["entities"] == {"CREDIT_CARD": 1, "PERSON": 2}
    assert response["http_request"]["url"]["path"] == "/v1/chat/completions"
    assert response["api"]["response"] == {"code": 200}
    assert response["actor"]["user"]["groups"] == [{"name": "eng"}, {"name": "ml"}]
    assert request["metadata"]["correlation_uid"] == response["metadata"]["correlation_uid"] == "f-1"


def test_the_query_string_stays_out_of_the_path() -> None:
    blocked = next(o for e, o in mapped() if e.flow_id == "f-2")
    assert blocked["http_request"]["url"]["path"] == "/v1/models"


def test_an_unauthenticated_flow_is_an_authentication_failure() -> None:
    request = sealed(Event(kind="request", flow_id="f-9", ts=WHEN, client="10.1.1.1:5000", method="POST",
                           host="api.openai.com", path="/v1/chat/completions", fate="unauthenticated",
                           reason="expired: token expired", detail={"claimed_sub": "mallory"}), 7)
    refused_read = sealed(Event(kind="access", ts=WHEN, client="127.0.0.1", fate="refused",
                                detail={"method": "GET", "path": "/api/flows", "status": 401, "why": "bad sig"}), 8)
    context = FlowContext()
    for event in (request, refused_read):
        out = to_ocsf(event, context)
        assert ocsf_errors(out) == []
        assert (out["class_uid"], out["activity_id"], out["status_id"]) == (3002, 1, 2)
    assert to_ocsf(request)["user"]["name"] == "mallory"
    assert to_ocsf(request)["unmapped"]["warden"]["claimed_sub"] == "mallory"


def test_a_checkpoint_carries_what_it_signed() -> None:
    out = next(o for e, o in mapped() if e.kind == "checkpoint")
    signed = {"head_seq": 41, "head_hash": "ab" * 32, "signature": "c2ln", "key_id": "k1"}
    assert out["unmapped"]["warden"]["detail"] == signed


def test_a_purged_event_maps_to_its_seq_and_hash() -> None:
    event = sealed(Event(kind="request", flow_id="f-1", ts=WHEN, user="alice", reason="alice asked", body=BODY), 3)
    tombstone = {"digest": "cd" * 32, "purged_at": "2029-01-01T00:00:00"}
    event.stored_record = json.dumps({"tombstone": tombstone})
    out = to_ocsf(event)
    assert ocsf_errors(out) == []
    assert out["class_uid"] == 0 and out["metadata"]["uid"] == "3"
    assert out["unmapped"]["warden"]["tombstone"] == tombstone
    assert out["unmapped"]["warden"]["hash"] == event.hash
    assert "alice" not in json.dumps(out)  # what was purged stays purged
