"""Answer rules in the rules file: checked at load (patterns, conditions over ``answer``, what each action needs),
errors naming the file, the rule and the field; compiled once for the gateway."""

from __future__ import annotations

from pathlib import Path

import pytest

from addons.rules.conditions import ANSWER, ConditionError, compile_condition
from addons.rules.model import RulesError, load_rules

HEAD = "upstreams:\n  - {name: demo, host: api.example.com}\nanswers:\n"


def load(tmp_path: Path, answers: str):
    path = tmp_path / "rules.yaml"
    path.write_text(HEAD + answers)
    return load_rules(path)


def test_answer_rules_load_compiled(tmp_path: Path) -> None:
    rules = load(tmp_path, r"""
  - {name: wipe, match: ['rm\s+-rf\s+/'], action: block, reason: No wipes, status: 451, filter: "~c 200"}
  - {name: keys, match: ['AKIA[0-9A-Z]{16}'], action: mask, placeholder: "[key]"}
  - {name: lists, when: 'answer.counts["EMAIL_ADDRESS"] > 10 && "eng" in identity.groups', action: block}
""")
    wipe, keys, lists = rules.answer_checks
    assert wipe.patterns[0].search("sudo rm  -rf /") and wipe.filter is not None and wipe.rule.status == 451
    assert keys.rule.mark == "[key]" and not keys.late
    assert lists.late and not lists.patterns
    assert load(tmp_path, "  - {name: k, match: [x], action: mask}").answer_checks[0].rule.mark == "<BLOCKED:k>"
    assert load(tmp_path, "  []").answer_checks == []


@pytest.mark.parametrize(("answers", "message"), [
    ("  - {name: w, match: ['rm', '('], action: block}",
     "answers[0].match[1] (rule 'w'): Value error, invalid pattern '(': missing ) at position 1"),
    ("  - {name: w, match: ['x*'], action: block}", "answers[0].match[0] (rule 'w'): Value error, pattern 'x*' "
                                                    "matches the empty string"),
    ("  - {name: w, action: mask}", "answers[0] (rule 'w'): Value error, a mask rule needs 'match' patterns"),
    ("  - {name: w, when: '\"x\" in identity.groups', action: block}",
     "answers[0] (rule 'w'): Value error, an answer rule needs 'match' patterns or a 'when' condition that reads "
     "'answer'"),
    ("  - {name: w, match: [x], action: block, placeholder: y}", "only a mask rule has a placeholder"),
    ("  - {name: w, match: ['[a-z]+'], action: mask}", "the placeholder '<BLOCKED:w>' matches the rule's own"),
    ("  - {name: w, match: [x], action: redact}", "answers[0].action (rule 'w'): Input should be 'block' or 'mask'"),
    ("  - {name: w, match: [x], action: block, severity: high}", "answers[0].severity (rule 'w'): Extra inputs"),
    ("  - {name: w, when: 'pii.total > 0', action: block}",
     "answers[0].when (rule 'w'): Value error, invalid CEL condition 'pii.total > 0': at 1:4: undeclared reference"),
    ("  - {name: w, when: 'answer.totl > 0', action: block}", "undefined field 'totl'"),
    ("  - {name: w, match: [x], filter: '~q ~', action: block}", "answers[0].filter (rule 'w'): Value error, invalid "
                                                                "mitmproxy filter expression"),
    ("  - {name: w, match: [x], action: block}\n  - {name: w, match: [y], action: mask}",
     "answers: Value error, names must be unique; repeated: w"),
    ("  - {name: 'two words', match: [x], action: block}", "answers[0].name (rule 'two words'): String should match"),
    ("  - {name: w, match: [x], action: block, status: 302}", "answers[0].status (rule 'w'): Input should be greater"),
])
def test_a_bad_answer_rule_is_refused_naming_file_rule_and_field(tmp_path: Path, answers: str, message: str) -> None:
    with pytest.raises(RulesError) as refused:
        load(tmp_path, answers)
    assert f"{tmp_path / 'rules.yaml'}: " in str(refused.value) and message in str(refused.value)


def test_request_rules_cannot_read_the_answer_and_answer_rules_not_the_requests_findings() -> None:
    with pytest.raises(ConditionError, match="undeclared reference to 'answer"):
        compile_condition("answer.total > 0")
    assert compile_condition("answer.total > 0 && answer.status == 200", ANSWER).reads_answer
    assert not compile_condition('request.model == "x"', ANSWER).reads_answer
