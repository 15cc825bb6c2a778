"""Rule conditions: CEL checked at load against the declared variables, evaluated on a request's facts."""

from __future__ import annotations

import pytest

from addons.rules.conditions import ConditionError, EvaluationError, Facts, compile_condition, conditions_together

FACTS = dict(identity={"sub": "alice", "groups": ["contractors", "eng"], "kind": "person"},
             request={"method": "POST", "path": "/v1/chat/completions", "model": "gpt-4o", "tools": ["search"],
                      "messages": 3, "body_size": 1200},
             time={"hour": 22, "weekday": "Sat", "zone": "Europe/Berlin"})


@pytest.mark.parametrize(("source", "message"), [
    ('identity.sbu == "alice"', "undefined field 'sbu'"),
    ('idenity.sub == "alice"', "undeclared reference to 'idenity"),
    ('request.body_size > "10"', "no matching overload"),
    ("request.model", "gives string, not a bool"),
    ('identity.groups.exists(g, g ==', "Syntax error"),
    ("  ", "empty"),
])
def test_a_condition_that_does_not_check_is_refused_with_where_and_why(source: str, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        compile_condition(source)


@pytest.mark.parametrize(("source", "expected"), [
    ('"contractors" in identity.groups', True),
    ('identity.kind == "service"', False),
    ('request.model.startsWith("gpt-4") && request.messages >= 3', True),
    ('"search" in request.tools && request.body_size < 1000', False),
    ('time.weekday in ["Sat", "Sun"] || time.hour >= 20', True),
    ("identity.email == ''", True),  # unset fields read as their zero value
])
def test_conditions_read_the_facts(source: str, expected: bool) -> None:
    assert Facts(**FACTS).evaluate(compile_condition(source).program) is expected


def test_a_condition_knows_whether_it_needs_the_analysis() -> None:
    assert compile_condition('pii.counts["EMAIL_ADDRESS"] > 0').reads_pii
    assert compile_condition('"contractors" in identity.groups && pii.total > 0').reads_pii
    assert not compile_condition('"contractors" in identity.groups').reads_pii


def test_pii_counts_and_errors_at_run_time() -> None:
    facts = Facts(**FACTS).with_pii({"counts": {"EMAIL_ADDRESS": 2, "PERSON": 0}, "total": 2,
                                      "entities": ["EMAIL_ADDRESS"]})
    assert facts.evaluate(compile_condition('pii.counts["EMAIL_ADDRESS"] >= 2 && pii.total == 2').program) is True
    assert facts.evaluate(compile_condition('"EMAIL_ADDRESS" in pii.entities').program) is True
    with pytest.raises(EvaluationError, match="Key not found"):  # checked, but the map has no such key
        facts.evaluate(compile_condition('pii.counts["ACME_ID"] > 0').program)


def test_all_conditions_in_one_evaluation_agree_with_each_alone() -> None:
    sources = ['"eng" in identity.groups', "time.hour < 6", 'request.method == "POST"', "request.messages > 5"]
    conditions = [compile_condition(s) for s in sources]
    facts = Facts(**FACTS)
    assert facts.evaluate(conditions_together(conditions)) == [facts.evaluate(c.program) for c in conditions]
