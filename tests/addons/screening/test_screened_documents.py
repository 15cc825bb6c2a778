"""Whole answers screened: every key and string of a JSON document as a parser reads it (escapes, JSON held in a
string, a key named twice), written back in its own shape only where something was masked; JSON Lines line by line;
text with bytes that are not UTF-8 left as it came."""

from __future__ import annotations

import json

import pytest

from addons.rules.answers import AnswerCheck, AnswerRule
from addons.rules.conditions import Facts
from addons.screening.documents import parse, render, screen_body, screen_text
from addons.screening.screen import Screen

RULES = [AnswerRule(name="wipe", match=[r"rm\s+-rf\s+/"], action="block"),
         AnswerRule(name="key", match=[r"AKIA[0-9A-Z]{16}"], action="mask", placeholder="[key]")]
KEY = "AKIAQWERTYUIOPASDFGH"


def screened(body: str, content_type: str = "application/json") -> tuple[str, Screen]:
    screen = Screen([AnswerCheck.of(r) for r in RULES], Facts({}, {}, {}).for_answers(), lambda: {})
    return screen_text(body, content_type, screen), screen


@pytest.mark.parametrize("body", [
    r'{"choices": [{"message": {"content": "sudo rm -rf \u002f"}}]}',  # escaped in the body
    json.dumps({"tool_calls": [{"function": {"arguments": r'{"cmd": "rm -rf \u002f"}'}}]}),  # escaped in JSON text
    '{"content": "safe", "content": "rm -rf /"}',  # a key named twice: either value may be the one a client reads
    json.dumps({"rm -rf /": 1}),
    '"rm -rf \\/"',  # a body that is one string
])
def test_a_pattern_anywhere_a_parser_reads_it_blocks(body: str) -> None:
    out, screen = screened(body)
    assert screen.blocked is not None and screen.blocked.rule == "wipe" and out == body


def test_a_document_is_written_back_only_where_masked_and_in_its_shape() -> None:
    body = '{"a": 1.50, "b": 1e400, "n": null, "dup": 1, "dup": 2, "args": "{\\"k\\": \\"' + KEY + '\\"}"}'
    out, screen = screened(body)
    assert out == '{"a":1.50,"b":1e400,"n":null,"dup":1,"dup":2,"args":"{\\"k\\":\\"[key]\\"}"}'
    assert screen.masked == {"key": 1} and screen.blocked is None
    untouched = '{ "a" : 1.50 }'
    assert screened(untouched)[0] is untouched or screened(untouched)[0] == untouched


def test_json_lines_and_text_are_screened_and_other_bytes_survive() -> None:
    lines = f'{{"k": "{KEY}"}}\n\n{{"k": "ok"}}\r\n'
    assert screened(lines, "application/x-ndjson")[0] == '{"k":"[key]"}\n\n{"k": "ok"}\r\n'
    raw = b"\xff\xfe key " + KEY.encode() + b" \x80"
    text = raw.decode("utf-8", "surrogateescape")
    out = screened(text, "application/octet-stream")[0]
    assert out.encode("utf-8", "surrogateescape") == b"\xff\xfe key [key] \x80"


def test_parse_and_render_round_trip() -> None:
    for text in ('{"a":[1,2.0,-3e5,true,false,null],"b":{"c":"\\u00e9"}}', "[]", '"x"', "12"):
        assert json.loads(render(parse(text))) == json.loads(text)
    assert parse("{not json") is None and parse("[" * 200 + "]" * 200) is None


@pytest.mark.parametrize(("body", "content_type"), [
    ('{"content": "sudo rm -rf /"}'.encode("utf-16-le"), "application/json"),  # json.loads(bytes) reads UTF-16
    ('{"content": "sudo rm -rf /"}'.encode("utf-32"), "application/json"),
    ('{"content": "sudo rm -rf /"}'.encode("utf-16-be"), "application/json; charset=utf-8"),  # declared otherwise
    ("rm -rf /".encode("utf-16"), "text/plain; charset=utf-16"),
    (b'{"content": "ok"}', "application/json; charset=utf-16"),  # nonsense in UTF-16: read as JSON parsers do
])
def test_a_body_is_read_as_json_parsers_detect_it_and_as_declared(body: bytes, content_type: str) -> None:
    screen = Screen([AnswerCheck.of(r) for r in RULES], Facts({}, {}, {}).for_answers(), lambda: {})
    out = screen_body(body, content_type, screen)
    assert (screen.blocked is not None) == (b"o\x00k" not in body and b"ok" not in body) and out is None


def test_a_body_is_masked_in_its_first_reading_and_blocked_for_a_match_in_another() -> None:
    def screen() -> Screen:
        return Screen([AnswerCheck.of(r) for r in RULES], Facts({}, {}, {}).for_answers(), lambda: {})

    first = screen()
    masked = screen_body(f"k={KEY}".encode("utf-16"), "text/plain", first)  # a byte order mark says UTF-16
    assert masked is not None and masked.decode("utf-16") == "k=[key]" and first.blocked is None
    body = f"中k={KEY}".encode("utf-16-le")  # no zero byte up front: JSON parsers read it as UTF-8
    declared = screen()
    out = screen_body(body, "text/plain; charset=utf-16-le", declared)
    assert out is not None and out.decode("utf-16-le") == "中k=[key]"
    other = screen()
    assert screen_body(body, "application/json; charset=utf-16-le", other) is None
    assert other.blocked is not None and "read as utf-16-le" in other.blocked.reason
