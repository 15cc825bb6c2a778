"""Policy's plain functions: one spelling of a path for rules and upstream alike."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mitmproxy.test import tflow

from addons.bodies.usage import RequestShape
from addons.flow.meta import IDENTITY, UPSTREAM, Identity, ReviewTerms
from addons.identity import identity_from_claims
from addons.policy import PENDING, ConditionFailed, Step, decide, facts_for, lenient_path, normal_path
from addons.rules.model import load_rules


@pytest.mark.parametrize(("sent", "judged"), [
    ("/v1/chat/completions", "/v1/chat/completions"),
    ("/v1/%66iles", "/v1/files"),                      # an unreserved character, escaped
    ("/v1//files", "/v1/files"),                       # a repeated slash
    ("/x/../v1/./files", "/v1/files"),                 # dot segments
    ("/%2e%2e/v1/files?x=/../y", "/v1/files?x=/../y"),  # escaped dots; the query as sent
    ("/v1/%2ffiles", "/v1/%2Ffiles"),                  # a reserved escape stays escaped, in upper case
    ("/v1/files/", "/v1/files/"), ("/a/b/..", "/a/"), ("/a/.", "/a/"), ("/..", "/"), ("/", "/"),
    ("//v1", "/v1"), ("/v1/files//", "/v1/files/"),
])
def test_normal_path(sent: str, judged: str) -> None:
    assert normal_path(sent) == judged


@pytest.mark.parametrize(("sent", "lenient"), [
    ("/v1%2Ffine_tuning/jobs", "/v1/fine_tuning/jobs"),     # servers that decode %2F before routing
    ("/v1/chat/..%2Ffiles", "/v1/files"),                   # ... and then resolve dot segments
    ("/v1/..;/admin", "/admin"),                            # servers that drop ';' parameters
    ("/v1\\files", "/v1/files"),                            # backslashes as slashes
    ("/v1/chat/completions", "/v1/chat/completions"),
])
def test_lenient_path(sent: str, lenient: str) -> None:
    assert lenient_path(sent) == lenient


RULES = """
identity:
  service_accounts: {clients: [nightly-batch], groups: [robots]}
time_zone: caller
upstreams:
  - {name: openai, host: api.openai.com}
rules:
  - name: no-files-for-contractors
    filter: "~u /v1/files"
    when: '"contractors" in identity.groups'
    action: block
    status: 451
    reason: Contractors may not upload files
  - name: jobs-only-gpt4o-mini
    when: 'identity.kind == "service" && request.model != "gpt-4o-mini"'
    action: block
    reason: Jobs use gpt-4o-mini
  - name: contractors-no-emails
    when: '"contractors" in identity.groups && pii.counts["EMAIL_ADDRESS"] > 0'
    action: block
    reason: Contractors may not send e-mail addresses
  - name: night
    when: 'time.hour < 6'
    action: block
  - name: default
    action: allow
"""


def _flow(path: str = "/v1/chat/completions", **claims):


    flow = tflow.tflow()
    flow.request.host, flow.request.path = "api.openai.com", path
    rules = load_rules(_rules_file())
    IDENTITY.set(flow, identity_from_claims({"sub": "alice", **claims}, rules.identity, "bearer"))
    UPSTREAM.set(flow, "openai")
    return rules, flow


def _rules_file(cache={}):  # noqa: B006  (one file per test session)
    if "path" not in cache:
        path = Path(tempfile.mkdtemp()) / "rules.yaml"
        path.write_text(RULES)
        cache["path"] = path
    return cache["path"]


NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


NOTHING_FOUND = {"counts": {"EMAIL_ADDRESS": 0}, "total": 0, "entities": []}


def _decide(rules, flow, shape=None, now=NOON):
    """The decision once analysis found nothing."""

    return decide(rules, flow, facts_for(rules, flow, shape or RequestShape(), now).with_pii(NOTHING_FOUND))


def test_filter_and_condition_both_decide() -> None:
    rules, flow = _flow("/v1/files", groups=["contractors"])
    decision = _decide(rules, flow)
    assert (decision.action, decision.rule, decision.status) == ("block", "no-files-for-contractors", 451)
    rules, flow = _flow("/v1/files", groups=["staff"])  # the filter matches, the condition does not
    assert _decide(rules, flow).rule == "default"


def test_service_accounts_by_client_or_group_and_the_request_model() -> None:

    rules, flow = _flow(client_id="nightly-batch")
    assert _decide(rules, flow, RequestShape(model="gpt-4o")).rule == "jobs-only-gpt4o-mini"
    assert _decide(rules, flow, RequestShape(model="gpt-4o-mini")).rule == "default"
    rules, flow = _flow(groups=["robots"], azp="some-cli")
    assert _decide(rules, flow, RequestShape(model="o3")).rule == "jobs-only-gpt4o-mini"
    rules, flow = _flow(azp="nightly-web")  # a person's token names a client too: not a service account
    assert _decide(rules, flow, RequestShape(model="o3")).rule == "default"


def test_a_rule_that_reads_pii_waits_for_the_analysis_then_decides_from_there() -> None:

    rules, flow = _flow(groups=["contractors"])
    facts = facts_for(rules, flow, RequestShape(), NOON)
    pending = decide(rules, flow, facts)
    assert (pending.action, pending.rule) == (PENDING, "contractors-no-emails")
    found = {"counts": {"EMAIL_ADDRESS": 1, "PERSON": 0}, "total": 1, "entities": ["EMAIL_ADDRESS"]}
    assert decide(rules, flow, facts.with_pii(found), 2).rule == "contractors-no-emails"
    none = {"counts": {"EMAIL_ADDRESS": 0, "PERSON": 2}, "total": 2, "entities": ["PERSON"]}
    trace: list[Step] = []
    assert decide(rules, flow, facts.with_pii(none), 2, trace=trace).rule == "default"
    assert [(s.rule, s.condition) for s in trace] == [("contractors-no-emails", "false"), ("night", "false"),
                                                      ("default", "none")]
    rules, flow = _flow("/v1/files", groups=["contractors"])  # an earlier rule decides: no wait
    assert decide(rules, flow, facts_for(rules, flow, RequestShape(), NOON)).rule == "no-files-for-contractors"


def test_time_in_the_callers_zone() -> None:

    night_in_tokyo = datetime(2026, 12, 1, 18, 30, tzinfo=UTC)  # 03:30 in Tokyo, 19:30 in Berlin
    rules, flow = _flow(zoneinfo="Asia/Tokyo")
    assert _decide(rules, flow, now=night_in_tokyo).rule == "night"
    rules, flow = _flow(zoneinfo="Europe/Berlin")
    assert _decide(rules, flow, now=night_in_tokyo).rule == "default"
    rules, flow = _flow(zoneinfo="Not/AZone")  # a claim that names no zone: UTC
    assert _decide(rules, flow, now=night_in_tokyo).rule == "default"


def test_a_condition_that_fails_at_run_time_names_its_rule(tmp_path) -> None:


    path = tmp_path / "rules.yaml"
    path.write_text(RULES.replace('pii.counts["EMAIL_ADDRESS"] > 0', 'pii.counts["ACME_ID"] > 0'))
    rules = load_rules(path)
    flow = tflow.tflow()
    IDENTITY.set(flow, Identity(sub="bob", groups=["contractors"]))
    facts = facts_for(rules, flow, RequestShape(), NOON).with_pii({"counts": {"EMAIL_ADDRESS": 1}})
    with pytest.raises(ConditionFailed, match="rule 'contractors-no-emails': .*Key not found"):
        decide(rules, flow, facts, 2)


REVIEWED = """
identity:
  service_accounts: {clients: [nightly]}
upstreams:
  - name: openai
    host: api.openai.com
rules:
  - name: jobs
    when: 'identity.kind == "service" && request.model == "gpt-4o-mini"'
    action: allow
    services: true
  - name: fine-tuning
    filter: "~u /v1/fine_tuning"
    action: review
    review: {approvers: [security, legal], min_approvals: 2, timeout: 2m, ttl: 1h, window: 30m, mode: retry}
  - name: default
    action: allow
"""


def test_a_review_decision_carries_a_snapshot_of_its_terms_and_services_pass_only_under_their_own_rules(
        tmp_path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(REVIEWED)
    rules = load_rules(path)
    flow = tflow.tflow()
    flow.request.host, flow.request.path = "api.openai.com", "/v1/fine_tuning/jobs"
    IDENTITY.set(flow, Identity(sub="alice"))
    decision = decide(rules, flow, facts_for(rules, flow, RequestShape(), NOON))
    assert (decision.action, decision.rule) == ("review", "fine-tuning")
    assert "waits for approval by security, legal" in decision.reason
    assert decision.review == ReviewTerms(approvers=("security", "legal"), min_approvals=2, timeout=120.0,
                                          mode="retry", ttl=3600.0, window=1800.0)

    flow.request.path = "/v1/chat/completions"
    IDENTITY.set(flow, Identity(sub="svc", client_id="nightly", kind="service"))
    passed = decide(rules, flow, facts_for(rules, flow, RequestShape(model="gpt-4o-mini"), NOON))
    assert (passed.action, passed.rule) == ("allow", "jobs")
    outside = decide(rules, flow, facts_for(rules, flow, RequestShape(model="gpt-4o"), NOON))
    assert (outside.action, outside.rule) == ("block", "default")  # never silently through the people's rule
    assert "service accounts pass only under their own rules" in outside.reason


@pytest.mark.parametrize(("review", "message"), [
    ("    action: allow\n    review: {approvers: [x]}",
     "rules[1].review (rule 'fine-tuning'): Value error, only a rule with action 'review' has a review block"),
    ("    action: review\n    review: {approvers: [x], timeout: 2h, ttl: 1h}",
     "rules[1].review (rule 'fine-tuning'): Value error, timeout (7200 s) is longer"),
    ("    action: review\n    review: {approvers: [x], timeout: soon}",
     "rules[1].review.timeout (rule 'fine-tuning'): Value error, 'soon' is not a duration"),
])
def test_review_blocks_are_checked(tmp_path, review: str, message: str) -> None:
    from addons.rules.model import RulesError

    path = tmp_path / "rules.yaml"
    start = REVIEWED.index("    action: review")
    path.write_text(REVIEWED[:start] + review + REVIEWED[REVIEWED.index("\n", REVIEWED.index("review: {")):])
    with pytest.raises(RulesError) as bad:
        load_rules(path)
    assert message in str(bad.value)


@pytest.mark.parametrize(("identity", "message"), [
    ("  service_accounts: {clients: [nightly], groups: [legal]}",
     "rules[1].review.approvers[1] (rule 'fine-tuning'): 'legal' is a service-account group"),
    ("  service_accounts: {clients: [nightly]}\n  groups: [security, engineering]",
     "rules[1].review.approvers[1] (rule 'fine-tuning'): nobody holds 'legal': it is not one of identity.groups"),
])
def test_approver_groups_nobody_can_hold_stop_start_up(tmp_path, identity: str, message: str) -> None:
    from addons.rules.model import RulesError

    path = tmp_path / "rules.yaml"
    path.write_text(REVIEWED.replace("  service_accounts: {clients: [nightly]}", identity))
    with pytest.raises(RulesError) as bad:
        load_rules(path)
    assert f"{path}: {message}" in str(bad.value)
    path.write_text(REVIEWED.replace("  service_accounts: {clients: [nightly]}",
                                     "  service_accounts: {clients: [nightly]}\n  groups: [security, legal]"))
    assert load_rules(path).model.identity.groups == ["security", "legal"]
