"""Just-in-time approval end to end: a real gateway holds or answers requests under review rules, approvers
decide through the admin API with their own tokens, and every step is on the chain."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Gateway
from tests.e2e.approvals_helpers import approval_events, approver, chat, pending, review_rules, send

pytestmark = pytest.mark.e2e


@pytest.fixture
def gw(gateway_factory, upstream) -> Gateway:
    return gateway_factory(review_rules(upstream.port))


def _chats(upstream, model: str) -> list[dict]:
    return [r for r in upstream.received if r["path"] == "/v1/chat/completions" and model.encode() in r["body"]]


def test_a_held_request_passes_once_approved_and_names_its_approval(gw: Gateway, upstream) -> None:
    sent = send(gw, upstream.port, chat("review-hold", "Write to jan.devries@example.nl about the audit"))
    [waiting] = pending(gw)
    assert waiting["rule"] == "hold-review" and waiting["mode"] == "hold"
    assert waiting["request"]["findings"] == {"EMAIL_ADDRESS": 1}
    assert "jan.devries@example.nl" not in json.dumps(waiting)  # approvers see the masked request only
    assert "<EMAIL_ADDRESS_1>" in waiting["request"]["preview"]
    assert not _chats(upstream, "review-hold")  # nothing left while it is held
    with approver(gw) as bob:
        r = bob.post(f"/api/approvals/{waiting['id']}/approve", json={"reason": "audit is expected"})
    assert r.status_code == 200, r.text
    response = sent.result()
    assert response.status_code == 200, response.text
    assert len(_chats(upstream, "review-hold")) == 1

    [flow] = [f for f in gw.flows() if f["user"] == "alice"]
    assert (flow["decision"], flow["rule"]) == ("allow", "hold-review")
    with gw.admin_client() as admin:
        events = admin.get(f"/api/flows/{flow['flow_id']}").json()["events"]
    [request] = [json.loads(e["record"]) for e in events if e["kind"] == "request"]
    assert request["detail"]["approval"] == {"approval": waiting["id"], "grant": None, "outcome": "passed"}
    steps = [(e["fate"], e["user"]) for e in approval_events(gw)]
    assert steps == [("requested", "alice"), ("approved", "bob"), ("used", "alice")]


def test_deny_answers_the_held_request_with_the_reason(gw: Gateway, upstream) -> None:
    sent = send(gw, upstream.port, chat("review-hold"))
    [waiting] = pending(gw)
    with approver(gw) as bob:
        assert bob.post(f"/api/approvals/{waiting['id']}/deny", json={"reason": "not this quarter"}).status_code == 200
    response = sent.result()
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["type"] == "approval_denied" and "not this quarter" in error["message"] and "bob" in error["message"]
    assert error["approval"] == {"id": waiting["id"], "state": "denied"}
    assert not _chats(upstream, "review-hold")
