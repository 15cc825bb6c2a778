"""Just-in-time approval end to end: a real gateway holds or answers requests under review rules, approvers
decide through the admin API with their own tokens, and every step is on the chain."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Gateway, rules_for
from tests.e2e.approvals_helpers import approval_events, approver, chat, cli, pending, post, review_rules, send
from tests.e2e.test_bad_input import startup_failure

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


def _steps(gw: Gateway) -> list[str]:
    return [e["fate"] for e in approval_events(gw)]


def _refusals(gw: Gateway) -> list[tuple[str, str | None]]:
    return [(json.loads(e["record"])["detail"]["type"], e["user"])
            for e in approval_events(gw) if e["fate"] == "refused"]


def test_a_hold_times_out_then_the_approval_expires_and_a_late_decision_is_refused(gw: Gateway, upstream) -> None:
    response = send(gw, upstream.port, chat("review-quick")).result()
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["type"] == "approval_timeout" and "warden approvals approve" in error["message"]
    approval_id = error["approval"]["id"]
    with gw.admin_client() as admin:
        deadline = time.monotonic() + 30
        while admin.get(f"/api/approvals/{approval_id}").json()["state"] != "expired":
            assert time.monotonic() < deadline, "the approval did not expire"
            time.sleep(0.2)
    with approver(gw) as bob:
        late = bob.post(f"/api/approvals/{approval_id}/approve", json={})
        unknown = bob.post("/api/approvals/ap-000000000000/approve", json={})
    assert late.status_code == 410 and late.json()["error"]["type"] == "approval_expired"
    assert unknown.status_code == 404 and "no approval 'ap-000000000000'" in unknown.json()["error"]["message"]
    assert _steps(gw) == ["requested", "expired", "refused", "refused"]
    assert _refusals(gw) == [("approval_expired", "bob"), ("unknown_approval", "bob")]
    assert not _chats(upstream, "review-quick")


def test_self_approval_and_an_approver_outside_the_groups_are_refused_and_recorded(gw: Gateway, upstream) -> None:
    r = post(gw, upstream.port, chat("review-retry"), user="alice", groups=["security"])
    approval_id = r.json()["error"]["approval"]["id"]
    with approver(gw, "alice", ("security",)) as alice:
        own = alice.post(f"/api/approvals/{approval_id}/approve", json={"reason": "trust me"})
    assert own.status_code == 403 and own.json()["error"]["type"] == "own_request"
    assert "cannot decide it" in own.json()["error"]["message"]
    with approver(gw, "carol", ("staff", "warden-admin")) as carol:  # an administrator is no approver
        outsider = carol.post(f"/api/approvals/{approval_id}/approve", json={})
    assert outsider.status_code == 403 and "none of the approver groups of rule 'retry-review'" in outsider.text
    with approver(gw) as bob:
        assert bob.post(f"/api/approvals/{approval_id}/approve", json={}).status_code == 200
        again = bob.post(f"/api/approvals/{approval_id}/deny", json={})
    assert again.status_code == 409 and again.json()["error"]["type"] == "already_decided"
    forged = approver(gw, "bob").post(f"/api/approvals/{approval_id}/deny", json={},
                                      headers={"Authorization": "Bearer not.a.token"})
    assert forged.status_code == 401
    assert _refusals(gw) == [("own_request", "alice"), ("not_an_approver", "carol"), ("already_decided", "bob"),
                             ("unauthenticated", None)]
    with approver(gw, "dave", ("staff",)) as dave:  # neither requester nor approver: may not look
        assert dave.get(f"/api/approvals/{approval_id}").status_code == 403
        assert dave.get("/api/approvals").json()["approvals"] == []


def test_retry_mode_answers_with_an_id_and_the_same_request_passes_once_approved(gw: Gateway, upstream) -> None:
    body = chat("review-retry", "Export the churn numbers")
    first = post(gw, upstream.port, body)
    assert first.status_code == 403 and first.headers["x-warden-approval"]
    error = first.json()["error"]
    approval_id = error["approval"]["id"]
    assert error["type"] == "approval_required" and error["approval"]["state"] == "pending"
    assert f"warden approvals approve {approval_id}" in error["message"]
    assert f"/api/approvals/{approval_id}/approve" in error["message"]
    assert "send the same request again" in error["message"]
    assert post(gw, upstream.port, body).json()["error"]["approval"]["id"] == approval_id  # still the one request

    listed = cli(gw, "bob", "security", "approvals", "list").stdout
    assert approval_id in listed and "retry-review" in listed and "alice" in listed
    assert "Export the churn numbers" in cli(gw, "bob", "security", "approvals", "show", approval_id).stdout
    assert "approved" in cli(gw, "bob", "security", "approvals", "approve", approval_id, "--reason", "ok").stdout

    other = post(gw, upstream.port, chat("review-retry", "Export the salary table"))
    assert other.status_code == 403 and other.json()["error"]["approval"]["id"] != approval_id  # another request
    assert post(gw, upstream.port, body).status_code == 200  # the approved one passes...
    again = post(gw, upstream.port, body)
    assert again.status_code == 403 and again.json()["error"]["approval"]["id"] != approval_id  # ...once
    assert post(gw, upstream.port, body, user="mallory").json()["error"]["approval"]["id"] != approval_id
    assert len(_chats(upstream, "review-retry")) == 1
    denied = cli(gw, "alice", "security", "approvals", "approve", other.json()["error"]["approval"]["id"], check=False)
    assert denied.returncode == 1 and "cannot decide it" in denied.stderr
    gw.warden("verify")


def test_two_approvers_and_one_from_each_group(gw: Gateway, upstream) -> None:
    two = post(gw, upstream.port, chat("review-two")).json()["error"]["approval"]["id"]
    with approver(gw, "bob") as bob, approver(gw, "carol") as carol:
        first = bob.post(f"/api/approvals/{two}/approve", json={}).json()
        assert first["state"] == "pending" and first["needs"] == "1 more approval(s)"
        assert bob.post(f"/api/approvals/{two}/approve", json={}).json()["error"]["type"] == "already_voted"
        assert post(gw, upstream.port, chat("review-two")).status_code == 403
        assert carol.post(f"/api/approvals/{two}/approve", json={}).json()["state"] == "approved"
    assert post(gw, upstream.port, chat("review-two")).status_code == 200

    each = post(gw, upstream.port, chat("review-each")).json()["error"]["approval"]["id"]
    with approver(gw, "bob") as bob, approver(gw, "dave") as dave, approver(gw, "erin", ("legal",)) as erin:
        assert bob.post(f"/api/approvals/{each}/approve", json={}).json()["state"] == "pending"
        second = dave.post(f"/api/approvals/{each}/approve", json={}).json()  # security again: legal still missing
        assert second["state"] == "pending" and second["needs"] == "one approver from each of security, legal"
        assert erin.post(f"/api/approvals/{each}/approve", json={}).json()["state"] == "approved"
    assert post(gw, upstream.port, chat("review-each")).status_code == 200


def test_a_grant_window_passes_then_ends_and_a_grant_can_be_revoked(gw: Gateway, upstream) -> None:
    approval_id = post(gw, upstream.port, chat("review-retry", "one")).json()["error"]["approval"]["id"]
    with approver(gw) as bob:
        decided = bob.post(f"/api/approvals/{approval_id}/approve", json={"for": "3s"}).json()
    grant_id = decided["grant"]
    assert grant_id and decided["state"] == "approved"
    assert post(gw, upstream.port, chat("review-retry", "one")).status_code == 200
    passed = post(gw, upstream.port, chat("review-retry", "two: a new request under the window"))
    assert passed.status_code == 200
    assert post(gw, upstream.port, chat("review-retry", "three"), user="bob").status_code == 403  # alice's grant
    granted = [f for f in gw.flows() if f["user"] == "alice" and f["decision"] == "allow"]
    assert len(granted) == 2 and all("approval" in f["reason"] for f in granted)
    time.sleep(3.5)  # the window ends
    ended = post(gw, upstream.port, chat("review-retry", "four"))
    assert ended.status_code == 403 and ended.json()["error"]["type"] == "approval_required"

    cli(gw, "bob", "security", "approvals", "approve", ended.json()["error"]["approval"]["id"], "--for", "10m")
    assert post(gw, upstream.port, chat("review-retry", "five")).status_code == 200
    [active] = [g for g in json.loads(cli(gw, "bob", "security", "grants", "list", "--active", "--json").stdout)]
    assert "revoked by bob" in cli(gw, "bob", "security", "grants", "revoke", active["id"], "--reason", "done").stdout
    assert post(gw, upstream.port, chat("review-retry", "six")).status_code == 403
    assert "grant_revoked" in _steps(gw)


def test_a_grant_survives_a_restart(gateway_factory, upstream) -> None:
    gw = gateway_factory(review_rules(upstream.port))
    approval_id = post(gw, upstream.port, chat("review-retry", "one")).json()["error"]["approval"]["id"]
    with approver(gw) as bob:
        assert bob.post(f"/api/approvals/{approval_id}/approve", json={"for": "10m"}).status_code == 200
    gw.stop()
    again = gateway_factory(review_rules(upstream.port))
    assert post(again, upstream.port, chat("review-retry", "after the restart")).status_code == 200
    [grant] = again.admin_client().get("/api/grants").json()["grants"]
    assert grant["active"] and grant["approval"] == approval_id
    again.warden("verify")


def test_a_restart_while_a_request_is_held_abandons_it(gateway_factory, upstream) -> None:
    gw = gateway_factory(review_rules(upstream.port))
    sent = send(gw, upstream.port, chat("review-hold", "held across a restart"))
    [waiting] = pending(gw)
    gw.stop()
    assert sent.done.wait(30)
    assert sent.error is not None or sent.response is not None and sent.response.status_code >= 500
    assert not _chats(upstream, "review-hold")
    again = gateway_factory(review_rules(upstream.port))
    with again.admin_client() as admin:
        assert admin.get(f"/api/approvals/{waiting['id']}").json()["state"] == "abandoned"
    steps = [(e["fate"], e["flow_id"]) for e in approval_events(again)]
    assert steps == [("requested", waiting["flow_id"]), ("abandoned", waiting["flow_id"])]
    with approver(again) as bob:
        assert bob.post(f"/api/approvals/{waiting['id']}/approve", json={}).status_code == 409
    again.warden("verify")


def test_revoking_a_person_denies_their_approvals_ends_their_grants_and_refuses_their_tokens(
        gw: Gateway, upstream) -> None:
    token = gw.token("alice", groups=["staff"])
    with gw.client(token=token, timeout=30) as tunnel:
        url = f"https://localhost:{upstream.port}/v1/chat/completions"
        assert tunnel.post(url, json=chat("gpt-4o-mini")).status_code == 200  # an open tunnel, its token cached
        first = tunnel.post(url, json=chat("review-retry", "one")).json()["error"]["approval"]["id"]
        second = tunnel.post(url, json=chat("review-retry", "two")).json()["error"]["approval"]["id"]
        with approver(gw) as bob:
            assert bob.post(f"/api/approvals/{first}/approve", json={"for": "1h"}).status_code == 200
            assert bob.post("/api/revoke", json={"user": "alice"}).status_code == 403  # administrators only
        revoked = cli(gw, "root", "warden-admin", "revoke", "alice", "--reason", "laptop lost").stdout
        assert "denied 2 approval(s), revoked 1 grant(s), 1 open tunnel(s)" in revoked  # approved, unused too
        refused = tunnel.post(url, json=chat("gpt-4o-mini"))
        assert refused.status_code == 407 and refused.json()["error"]["reason"] == "revoked"
    with pytest.raises(httpx.ProxyError, match="407"):  # the same token on a new tunnel: its CONNECT is refused
        post(gw, upstream.port, chat("gpt-4o-mini"), token=token)
    with gw.admin_client() as admin:
        assert admin.get(f"/api/approvals/{second}").json()["state"] == "denied"
        assert not admin.get("/api/grants", params={"active": "1"}).json()["grants"]
    assert _steps(gw)[-4:] == ["denied", "denied", "grant_revoked", "access_revoked"]
    time.sleep(1.1)  # tokens issued after the revocation's second are accepted (the IdP decides who gets one)
    assert post(gw, upstream.port, chat("gpt-4o-mini")).status_code == 200


def test_held_requests_do_not_slow_others(gw: Gateway, upstream) -> None:
    held = [send(gw, upstream.port, chat("review-hold", f"held request {i}")) for i in range(20)]
    waiting = pending(gw, count=20, timeout=120)
    with gw.client(token=gw.token("sam", groups=["staff"]), user="sam", timeout=30) as client:
        for i in range(10):
            r = client.post(f"https://localhost:{upstream.port}/v1/chat/completions", json=chat("gpt-4o-mini", str(i)))
            assert r.status_code == 200
    assert not any(sent.done.is_set() for sent in held)  # all twenty still held while the others completed
    with approver(gw) as bob:
        for approval in waiting:
            assert bob.post(f"/api/approvals/{approval['id']}/deny", json={"reason": "cleanup"}).status_code == 200
    assert [sent.result().status_code for sent in held] == [403] * 20


def test_members_of_a_skip_group_pass_without_review(gw: Gateway, upstream) -> None:
    assert post(gw, upstream.port, chat("review-hold"), groups=["oncall"]).status_code == 200
    [flow] = gw.flows()
    assert flow["decision"] == "allow" and flow["reason"] == "review skipped: alice is in oncall"
    assert _steps(gw) == []


SERVICES = """
identity:
  service_accounts: {clients: [nightly-batch]}
"""
JOBS = """
  - name: nightly-summaries
    when: 'identity.kind == "service" && request.model == "gpt-4o-mini"'
    action: allow
    services: true
  - name: jobs-otherwise-reviewed
    when: 'identity.kind == "service" && request.model != "never"'
    action: review
    review: {approvers: [security], mode: retry}
"""


def test_service_accounts_pass_under_their_own_rules_and_go_to_review_outside_them(gateway_factory, upstream) -> None:
    gw = gateway_factory(SERVICES + rules_for(upstream.port, rules=JOBS))
    job = gw.token("svc-nightly", extra={"client_id": "nightly-batch"})
    assert post(gw, upstream.port, chat("gpt-4o-mini"), user="svc-nightly", token=job).status_code == 200
    outside = post(gw, upstream.port, chat("gpt-4o"), user="svc-nightly", token=job)
    assert outside.status_code == 403 and outside.json()["error"]["type"] == "approval_required"
    blocked = post(gw, upstream.port, chat("never"), user="svc-nightly", token=job)  # only people's default allows
    assert blocked.status_code == 403 and "service accounts pass only under their own rules" in blocked.text
    assert post(gw, upstream.port, chat("gpt-4o")).status_code == 200  # a person: the default rule


@pytest.mark.parametrize(("review", "message"), [
    ("", "rules[1].review (rule 'needs-people'): Value error, a review rule needs a 'review' block"),
    ("\n    review: {approvers: []}",
     "rules[1].review.approvers (rule 'needs-people'): List should have at least 1 item"),
    ("\n    review: {timeout: 2m}", "rules[1].review.approvers (rule 'needs-people'): Field required"),
])
def test_a_review_rule_without_approvers_stops_start_up_naming_file_rule_and_field(
        tmp_path: Path, confdir: Path, upstream, review: str, message: str) -> None:
    text = rules_for(upstream.port, rules=f"  - name: needs-people\n    action: review{review}\n")
    assert f"rules.yaml: {message}" in startup_failure(tmp_path, confdir, upstream, text)
