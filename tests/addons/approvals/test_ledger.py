"""The approvals state machine: each step checked against the state, applied only once committed, and the state
rebuilt from the events alone."""

from __future__ import annotations

import pytest

from addons.approvals.ledger import Ledger, Refused
from addons.approvals.terms import Terms
from addons.flow.meta import ReviewTerms
from addons.store.events import Event

T0 = 1_700_000_000.0
TERMS = Terms(rule="needs-review", approvers=("security",), ttl=60)
ALICE = {"sub": "alice", "email": None, "groups": ["staff"], "kind": "person"}
REQUEST = {"method": "POST", "host": "api.example.com", "path": "/v1/chat", "digest": "d1", "preview": "{}",
           "findings": {}}


def applied(ledger: Ledger, events: Event | list[Event]) -> list[Event]:
    events = events if isinstance(events, list) else [events]
    for event in events:
        ledger.apply(event)
    return events


def requested(ledger: Ledger, terms: Terms = TERMS, at: float = T0, digest: str = "d1") -> str:
    [event] = applied(ledger, ledger.request(terms, ALICE, {**REQUEST, "digest": digest}, "flow-1", at))
    assert event.kind == "approval" and event.fate == "requested" and event.user == "alice"
    return event.detail["approval"]


def test_one_approval_approves_and_the_request_passes_once() -> None:
    ledger = Ledger()
    approval_id = requested(ledger)
    assert ledger.matching("alice", "needs-review", "d1").state == "pending"
    applied(ledger, ledger.vote(approval_id, "bob", ["security"], "approved", "fine", None, T0 + 1))
    assert ledger.get(approval_id).state == "approved"
    assert ledger.matching("alice", "needs-review", "d2") is None  # another body is another request
    assert ledger.matching("mallory", "needs-review", "d1") is None  # and another requester
    applied(ledger, ledger.use(approval_id, "flow-2", T0 + 2))
    assert ledger.get(approval_id).state == "used" and ledger.matching("alice", "needs-review", "d1") is None


@pytest.mark.parametrize(("approver", "groups", "status", "kind"), [
    ("alice", ["security"], 403, "own_request"),
    ("carol", ["staff", "warden-admin"], 403, "not_an_approver"),
])
def test_who_may_not_decide(approver: str, groups: list[str], status: int, kind: str) -> None:
    ledger = Ledger()
    approval_id = requested(ledger)
    with pytest.raises(Refused) as refused:
        ledger.vote(approval_id, approver, groups, "approved", "", None, T0 + 1)
    assert (refused.value.status, refused.value.type) == (status, kind)
    assert ledger.get(approval_id).state == "pending"


def test_unknown_decided_and_expired_approvals_are_refused() -> None:
    ledger = Ledger()
    with pytest.raises(Refused) as unknown:
        ledger.vote("ap-nope", "bob", ["security"], "approved", "", None, T0)
    assert unknown.value.status == 404
    denied = requested(ledger)
    applied(ledger, ledger.vote(denied, "bob", ["security"], "denied", "no", None, T0 + 1))
    assert ledger.get(denied).reason == "no"
    with pytest.raises(Refused) as decided:
        ledger.vote(denied, "dave", ["security"], "approved", "", None, T0 + 2)
    assert (decided.value.status, decided.value.type) == (409, "already_decided")
    late = requested(ledger)
    with pytest.raises(Refused) as expired:  # past its TTL before the sweeper recorded it
        ledger.vote(late, "bob", ["security"], "approved", "", None, T0 + 61)
    assert expired.value.status == 410
    assert [a.id for a in ledger.due(T0 + 61)] == [late]
    applied(ledger, ledger.expire(T0 + 61))
    assert ledger.get(late).state == "expired" and not ledger.due(T0 + 62)


def test_two_approvals_and_one_from_each_group() -> None:
    ledger = Ledger()
    two = requested(ledger, Terms(rule="two", approvers=("security",), min_approvals=2))
    applied(ledger, ledger.vote(two, "bob", ["security"], "approved", "", None, T0))
    assert ledger.get(two).state == "pending"
    with pytest.raises(Refused, match="already approved"):
        ledger.vote(two, "bob", ["security"], "approved", "", None, T0)
    applied(ledger, ledger.vote(two, "carol", ["security"], "approved", "", None, T0))
    assert ledger.get(two).state == "approved"

    each = Terms(rule="each", approvers=("security", "legal"), one_from_each_group=True)
    both = requested(ledger, each)
    applied(ledger, ledger.vote(both, "bob", ["security", "legal"], "approved", "", None, T0))
    assert ledger.get(both).state == "pending"  # one person stands for one group
    applied(ledger, ledger.vote(both, "erin", ["legal"], "approved", "", None, T0))
    assert ledger.get(both).state == "approved"


def test_a_window_creates_a_grant_that_ends_or_is_revoked() -> None:
    ledger = Ledger()
    approval_id = requested(ledger, Terms(rule="windowed", approvers=("security",), window=3600))
    events = applied(ledger, ledger.vote(approval_id, "bob", ["security"], "approved", "", 60, T0))
    assert [e.fate for e in events] == ["approved", "grant_created"]  # the approver's shorter window wins
    grant = ledger.grant_for("alice", "windowed", T0 + 30)
    assert grant is not None and grant.until == T0 + 60 and ledger.get(approval_id).grant == grant.id
    assert ledger.grant_for("alice", "windowed", T0 + 61) is None
    assert ledger.grant_for("alice", "other-rule", T0 + 30) is None
    applied(ledger, ledger.revoke_grant(grant.id, "bob", "done", T0 + 10))
    assert ledger.grant_for("alice", "windowed", T0 + 30) is None
    with pytest.raises(Refused) as again:
        ledger.revoke_grant(grant.id, "bob", "", T0 + 11)
    assert again.value.status == 409


def test_revoking_access_denies_revokes_and_refuses_older_tokens() -> None:
    ledger = Ledger()
    granted = requested(ledger, Terms(rule="windowed", approvers=("security",), window=3600))
    applied(ledger, ledger.vote(granted, "bob", ["security"], "approved", "", None, T0))
    waiting = requested(ledger, digest="d2")
    events = applied(ledger, ledger.revoke_access("alice", "root", "laptop lost", T0 + 5))
    assert [e.fate for e in events] == ["denied", "denied", "grant_revoked", "access_revoked"]
    assert ledger.get(waiting).state == "denied" and ledger.grant_for("alice", "windowed", T0 + 6) is None
    assert ledger.revoked("alice", int(T0)) and ledger.revoked("alice", None)
    assert not ledger.revoked("alice", int(T0) + 6) and not ledger.revoked("bob", int(T0))


def test_the_state_is_rebuilt_from_the_events_alone() -> None:
    live = Ledger()
    events = [live.request(TERMS, ALICE, REQUEST, "flow-1", T0)]
    live.apply(events[0])
    approval_id = events[0].detail["approval"]
    for event in live.vote(approval_id, "bob", ["security"], "approved", "", 600, T0 + 1):
        live.apply(event)
        events.append(event)
    events.append(Ledger.refused(Refused(403, "own_request", "no"), "alice", T0 + 2, approval=approval_id))
    rebuilt = Ledger().rebuild(events)
    assert rebuilt.get(approval_id).as_json() == live.get(approval_id).as_json()
    assert rebuilt.grant_for("alice", "needs-review", T0 + 60) is not None


def test_terms_snapshot_round_trips() -> None:
    terms = Terms.of("r", ReviewTerms(("a", "b"), 2, True, ("oncall",), 5.0, "retry", 60.0, None))
    assert Terms.from_json(terms.as_json()) == terms
    assert terms.skips(["oncall"]) and not terms.skips(["staff"]) and terms.may_approve(["b"])


def test_a_notification_is_recorded_without_changing_the_approval() -> None:
    ledger = Ledger()
    approval_id = requested(ledger)
    [failed] = applied(ledger, ledger.notice(approval_id, "notify_failed", "gave up after 3 attempt(s)", T0 + 1,
                                             channel="webhook", target="https://hooks.slack.com/…", attempts=3,
                                             status=500))
    assert (failed.kind, failed.fate, failed.user, failed.rule) == \
        ("approval", "notify_failed", "alice", "needs-review")
    approval = ledger.get(approval_id)
    assert approval.state == "pending"
    [notice] = approval.as_json()["notices"]
    assert (notice["fate"], notice["target"], notice["attempts"], notice["status"]) == \
        ("notify_failed", "https://hooks.slack.com/…", 3, 500)
    applied(ledger, ledger.vote(approval_id, "bob", ["security"], "approved", "", None, T0 + 2))
    applied(ledger, ledger.notice(approval_id, "notified", "accepted", T0 + 3))  # late: it changes nothing
    assert ledger.get(approval_id).state == "approved" and len(ledger.get(approval_id).notices) == 2
    with pytest.raises(ValueError):
        ledger.notice(approval_id, "approved", "", T0 + 4)  # a notice is no decision


def test_a_decision_says_how_it_came() -> None:
    ledger = Ledger()
    approval_id = requested(ledger)
    [vote] = applied(ledger, ledger.vote(approval_id, "bob", ["security"], "approved", "in Slack", None, T0 + 1,
                                         via="slack", slack_user="U0BOB"))
    assert (vote.detail["via"], vote.detail["slack_user"]) == ("slack", "U0BOB")
    assert Ledger().rebuild([*ledger_events(ledger, approval_id), vote]).get(approval_id).state == "approved"


def ledger_events(ledger: Ledger, approval_id: str) -> list[Event]:
    """The ``requested`` event of ``approval_id`` again (as a rebuild reads it from the store)."""
    approval = ledger.get(approval_id)
    event = Ledger().request(approval.terms, approval.requester, approval.request, approval.flow_id, T0)
    event.detail["approval"] = approval_id
    return [event]
