"""A flow's facts: one key per fact in ``flow.metadata``, plain values only, and how an addon stops a flow."""

from __future__ import annotations

import dataclasses
import typing

from mitmproxy.flow import Error
from mitmproxy.test import tflow

from addons.flow import meta
from addons.flow.answers import cut, mark_stopped, refuse
from addons.flow.errors import PolicyBlocked, ResponseTooLarge, UpgradeRefused
from addons.flow.meta import (
    AnswerNote,
    ApprovalNote,
    Decision,
    Fact,
    Finding,
    Identity,
    PiiOutcome,
    Recorded,
    Refusal,
    ReviewTerms,
)

FACTS = [value for value in vars(meta).values() if isinstance(value, Fact)]
PLAIN = (str, int, float, bool, type(None))


def _plain(value: object) -> bool:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(_plain(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):  # counts by name (entities, rules)
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return isinstance(value, PLAIN)


def test_a_fact_reads_only_what_its_owner_wrote_under_its_key() -> None:
    flow = tflow.tflow()
    assert all(fact.of(flow) is None for fact in FACTS)
    identity = meta.IDENTITY.set(flow, Identity("alice", groups=["eng"]))
    assert meta.IDENTITY.of(flow) is identity and flow.metadata["warden.identity"] is identity
    flow.metadata[meta.UPSTREAM.key] = {"name": "openai"}  # something else under the key (a loaded flow's plain dict)
    assert meta.UPSTREAM.of(flow) is None


def test_every_fact_has_a_key_of_its_own() -> None:
    assert all(isinstance(fact, Fact) and fact.key.startswith("warden.") for fact in FACTS)
    assert len({fact.key for fact in FACTS}) == len(FACTS)
    assert {name for name, value in vars(meta).items() if isinstance(value, Fact)} == {
        "IDENTITY", "CLAIMED_SUB", "UPSTREAM", "DECISION", "PII", "APPROVAL", "TRAILERS_DROPPED", "RECORDED", "ERROR",
        "ANSWER"}


def test_the_facts_are_plain_values_never_bodies_secrets_or_runtime_objects() -> None:
    for record in (Identity, Decision, ReviewTerms, ApprovalNote, Finding, PiiOutcome, Refusal, Recorded, AnswerNote):
        for name, hint in typing.get_type_hints(record).items():
            assert not any(kind in str(hint) for kind in ("bytes", "bytearray", "Any", "object", "set")), (record, name)
    flow = tflow.tflow()
    meta.IDENTITY.set(flow, Identity("alice", email="a@example.org", groups=["eng"], expires=5))
    meta.CLAIMED_SUB.set(flow, "mallory")
    meta.UPSTREAM.set(flow, "openai")
    meta.DECISION.set(flow, Decision("allow", "chat", masking="strict", review=ReviewTerms(("security",))))
    meta.APPROVAL.set(flow, ApprovalNote("ap-1", "gr-1", "passed"))
    found = Finding("EMAIL_ADDRESS", "$.messages[0].content", 0, 5, 1.0, "replace")
    meta.PII.set(flow, PiiOutcome("strict", "openai", [found], [found], skipped=None))
    meta.TRAILERS_DROPPED.set(flow, ["x-checksum"])
    meta.RECORDED.set(flow, Recorded([(1, "ab")], 2.5))
    meta.ANSWER.set(flow, AnswerNote("mask", "keys", "masked by answer rules: keys (2)", {"keys": 2}, streamed=True))
    refuse(flow, PolicyBlocked("blocked by rule 'x'"))
    assert {key for key in flow.metadata if key.startswith("warden.")} == {fact.key for fact in FACTS}
    assert all(_plain(value) for value in flow.metadata.values())


def test_refuse_answers_and_notes_a_plain_refusal_not_the_error() -> None:
    flow = tflow.tflow()
    flow.request.headers["expect"] = "100-continue"
    refuse(flow, PolicyBlocked("blocked by rule 'x'"))
    assert meta.ERROR.of(flow) == Refusal("blocked_by_policy", 403, "blocked by rule 'x'")
    assert flow.response.status_code == 403 and "expect" not in flow.request.headers


def test_cut_kills_the_flow_and_notes_why() -> None:
    flow = tflow.tflow(resp=True)
    cut(flow, UpgradeRefused("the upstream switched protocols"))
    assert flow.error is not None and flow.error.msg == Error.KILLED_MESSAGE
    assert meta.ERROR.of(flow) == Refusal("upgrade_refused", 502, "the upstream switched protocols")


def test_mark_stopped_notes_without_answering() -> None:
    flow = tflow.tflow()
    mark_stopped(flow, ResponseTooLarge("over the limit"))
    assert flow.response is None and flow.error is None
    assert meta.ERROR.of(flow) == Refusal("response_too_large", 502, "over the limit")
