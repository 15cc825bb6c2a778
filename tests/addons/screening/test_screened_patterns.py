"""Answer patterns: what is a match, what may still become one, and a running text cut anywhere screened exactly as
the whole text is (blocked or not, masked alike), escapes in JSON fragments included."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addons.rules.answers import AnswerCheck, AnswerRule
from addons.screening import patterns as patterns_module
from addons.screening.patterns import MAX_HELD, Patterns, RunningText, json_view, masked
from tests.strategies import splits

WIPE = AnswerRule(name="wipe", match=[r"rm\s+-rf\s+/"], action="block")
KEY = AnswerRule(name="key", match=[r"AKIA[0-9A-Z]{4}"], action="mask")
GREEDY = AnswerRule(name="long", match=[r"tok_[a-z]{2,8}"], action="mask", placeholder="[tok]")


def patterns(*rules: AnswerRule) -> Patterns:
    return Patterns([AnswerCheck.of(rule) for rule in rules or (WIPE, KEY)])


def test_a_match_in_progress_at_the_end_is_held_and_a_complete_one_is_a_hit() -> None:
    found = patterns().scan("first rm -r", final=False)
    assert not found.hits and found.hold == 6 and found.holding == "wipe"
    found = patterns().scan("first rm -rf /home", final=False)
    assert [(h.rule, h.block, h.start, h.end) for h in found.hits] == [("wipe", True, 6, 14)]
    assert patterns().scan("first rm -r", final=True).hold == 11  # at the end nothing can grow
    assert patterns().scan("a perform b", final=False).hold == 11  # 'rm ' went on otherwise: nothing held


def test_a_mask_match_touching_the_end_is_held_since_it_may_grow() -> None:
    found = patterns(GREEDY).scan("see tok_abc", final=False)
    assert found.hits and found.hold == 4
    assert patterns(GREEDY).scan("see tok_abc.", final=False).hold == 12


def test_a_search_that_runs_too_long_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patterns_module, "TIMEOUT", 0.05)
    slow = AnswerRule(name="slow", match=[r"(x+x+)+y"], action="mask")
    [hit] = patterns(slow).scan("x" * 5000, final=True).hits
    assert hit.block and "took longer than" in hit.why


def test_overlapping_mask_hits_are_replaced_once() -> None:
    both = patterns(KEY, AnswerRule(name="four", match=["[0-9]{4}"], action="mask", placeholder="#"))
    text = "id AKIA1234 and 5678"
    found = both.scan(text, final=True)
    out, count = masked(text, found.hits, both.marks)
    assert out == "id <BLOCKED:key> and #" and count == {"key": 1, "four": 2}


TOKENS = ["rm", " ", "  ", "-rf", "-r", "f", "/", "AKIA", "AB12", "Z9", "x", "\n", "tok_", "ab"]


def whole(text: str, rules: Patterns) -> str | None:
    """The whole text as a body is screened: None if blocked, else masked."""
    found = rules.scan(text, final=True)
    return None if found.blocking() else masked(text, found.hits, rules.marks)[0]


def streamed(pieces: list[str], rules: Patterns, json_fragment: bool = False) -> str | None:
    running, out = RunningText(json_fragment=json_fragment), []
    for i, piece in enumerate([*pieces, ""]):
        released, found, _ = running.feed(piece, rules, final=i == len(pieces))
        if found.blocking():
            return None
        out.append(released)
    assert not running.held
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_running_text_cut_anywhere_is_screened_as_the_whole_text(data: st.DataObject) -> None:
    text = "".join(data.draw(st.lists(st.sampled_from(TOKENS), max_size=30)))
    pieces = data.draw(splits(text))
    rules = patterns(WIPE, KEY, GREEDY)
    assert streamed(pieces, rules) == whole(text, rules)


def test_a_split_command_is_never_released_in_part() -> None:
    running, rules = RunningText(), patterns()
    out = [running.feed(piece, rules, final=False) for piece in ["Now r", "m -", "rf ", "/etc"]]
    assert "".join(o[0] for o in out[:3]) == "Now "  # "rm -rf " held while it may become the match
    assert out[3][1].blocking() is not None and out[3][0] == ""


def test_a_possible_match_held_too_long_blocks() -> None:
    running, rules = RunningText(), patterns()
    assert running.feed("rm", rules, final=False)[0] == ""
    released, found, _ = running.feed(" " * (MAX_HELD + 1), rules, final=False)
    [hit] = found.hits
    assert released == "" and hit.block and hit.rule == "wipe" and "grew past" in hit.why


@pytest.mark.parametrize(("raw", "view"), [
    (r'{"cmd": "rm -rf \u002f"}', '{"cmd": "rm -rf /"}'),
    (r'"a\"b\\c\/d\n"', '"a"b\\c/d\n"'),
    (r'"\ud83d\ude00 \q"', '"\U0001F600 \\q"'),  # a surrogate pair is one character; an invalid escape as written
])
def test_the_json_view_reads_escapes_as_a_parser_does(raw: str, view: str) -> None:
    assert json_view(raw, False, True)[0] == view


def test_the_json_view_waits_for_an_escape_cut_off() -> None:
    for cut_off in (r'"x\\', r'"x\u00', r'"x\ud83d', r'"x\ud83d\u'):
        text, starts, states = json_view(cut_off.replace("\\\\", "\\"), False, False)
        assert text == '"x' and starts[-1] == 2 and states[-1] is True


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_json_fragment_cut_anywhere_is_screened_as_its_parser_reads_it(data: st.DataObject) -> None:
    """Tool-call arguments: the command escaped any way JSON allows, cut anywhere, even inside an escape."""
    tokens = [*TOKENS, "é", "😀", '"', "rm -rf /", "AKIAAB12"]
    command = "".join(data.draw(st.lists(st.sampled_from(tokens), max_size=20)))
    raw = json.dumps({"cmd": command}, ensure_ascii=data.draw(st.booleans()))
    if data.draw(st.booleans()):
        raw = raw.replace("/", data.draw(st.sampled_from(["\\/", "\\u002f", "\\u002F"])))
    rules = patterns(WIPE, KEY)
    out = streamed(data.draw(splits(raw)), rules, json_fragment=True)
    expected = whole(command, rules)
    assert (out is None) == (expected is None)
    if out is not None:
        assert json.loads(out) == {"cmd": expected}
