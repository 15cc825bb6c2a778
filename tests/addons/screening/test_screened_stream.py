"""SSE answers screened as they pass: cut at any byte, a block ends the stream with the provider's error event after
what was screened before it; masks apply to deltas split across events, to every other string, key and field; a
flush event repeats no unscreened value; rules that read ``answer`` are weighed as what masking found grows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from addons.bodies.sse import events, parse_event
from addons.masking.payloads import adapter_for
from addons.rules.answers import AnswerCheck, AnswerRule
from addons.rules.conditions import Facts
from addons.screening.screen import Screen
from addons.screening.stream import StreamScreen

KEY = "AKIAQWERTYUIOPASDFGH"
RULES = [
    AnswerRule(name="wipe", match=[r"rm\s+-rf\s+/"], action="block", reason="No disk wipes"),
    AnswerRule(name="key", match=[r"AKIA[0-9A-Z]{16}"], action="mask"),
]
CHAT = "/v1/chat/completions"


def screen(rules: list[AnswerRule] = RULES, answer: dict | None = None) -> Screen:
    return Screen([AnswerCheck.of(r) for r in rules], Facts({}, {}, {}).for_answers(), lambda: answer or {})


def run(path: str, body: bytes, size: int, into: Screen | None = None) -> tuple[bytes, StreamScreen]:
    stream = StreamScreen(adapter_for(path), into or screen())
    out = b"".join(b"".join(stream(body[i:i + size])) for i in range(0, len(body), size))
    return out + b"".join(stream(b"")), stream


def chat(*deltas: dict, **extra: Any) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", **extra}
    chunks = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def documents(out: bytes) -> list[Any]:
    return [json.loads(data) for _, data in map(parse_event, events(out)) if data and data != "[DONE]"]


def content(out: bytes) -> str:
    return "".join(d["choices"][0]["delta"].get("content") or "" for d in documents(out) if d.get("choices"))


def pieces(text: str, size: int) -> list[dict]:
    return [{"content": text[i:i + size]} for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50, 10_000])
def test_a_block_ends_the_stream_after_what_came_before(size: int) -> None:
    text = "Clean up first, then rm -rf / and reboot."
    out, stream = run(CHAT, chat(*pieces(text, 3)), size)
    *delivered, last = documents(out)
    assert last == {"error": {"type": "answer_blocked", "message": "No disk wipes (answer rule wipe)", "status": 502,
                              "rule": "wipe", "code": "answer_blocked", "param": None}}
    assert content(b"".join(f"data: {json.dumps(d)}\n\n".encode() for d in delivered)) == "Clean up first, then "
    assert b"rm -rf" not in out and b"reboot" not in out and b"[DONE]" not in out
    assert stream.ended and stream(b"data: more\n\n") == [] and stream(b"") == []
    assert stream.screen.note().decision == "block" and bytes(stream.after) == out


@pytest.mark.parametrize("size", [1, 5, 64])
def test_a_key_split_across_deltas_is_masked_and_the_rest_passes(size: int) -> None:
    text = f"export KEY={KEY}\necho done"
    out, stream = run(CHAT, chat(*pieces(text, 4)), size)
    assert content(out) == "export KEY=<BLOCKED:key>\necho done" and KEY.encode() not in out
    assert out.rstrip().endswith(b"data: [DONE]") and stream.screen.note().masked == {"key": 1}


def test_every_string_key_and_field_is_screened_and_a_flush_repeats_nothing_unscreened() -> None:
    body = b": note rm -r\n" + chat({"content": f"k={KEY[:6]}"}, {"content": KEY[6:]}, id=KEY,
                                    **{"x_trace": {KEY: f"seen {KEY}"}})
    out, _ = run(CHAT, body, 9)
    assert KEY.encode() not in out
    docs = documents(out)
    assert {d["id"] for d in docs} == {"<BLOCKED:key>"}  # the flush event's locators too
    assert docs[0]["x_trace"] == {"<BLOCKED:key>": "seen <BLOCKED:key>"}
    assert content(out) == "k=<BLOCKED:key>"
    comment = b": no wipes here\n\n" + b": then rm -rf /\n\n"
    out, stream = run(CHAT, comment, 4)
    assert stream.screen.blocked is not None and b"rm -rf" not in out


@pytest.mark.parametrize(("path", "shape"), [
    ("/v1/messages", b'event: error\ndata: {"type": "error", "error": {"type": "answer_blocked"'),
    ("/v1/responses", b'event: error\ndata: {"type": "error", "code": "answer_blocked"'),
    ("/some/api", b'event: error\ndata: {"error": {"type": "answer_blocked"'),
])
def test_each_provider_gets_its_own_error_event(path: str, shape: bytes) -> None:
    out, _ = run(path, b'data: {"text": "rm -rf /"}\n\n', 3)
    assert out.startswith(shape) and b"rm -rf" not in out


def test_anthropic_tool_input_split_with_an_escape_is_caught() -> None:
    deltas = ['{"cmd": "rm -rf ', "\\u00", '2f"}']
    body = b"".join(b"event: content_block_delta\ndata: " + json.dumps(
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": d}}
    ).encode() + b"\n\n" for d in deltas)
    out, stream = run("/v1/messages", body, 5)
    assert stream.screen.blocked is not None and b"rm -rf" not in out


def test_a_rule_on_what_masking_found_blocks_once_it_holds() -> None:
    found = {"counts": {"EMAIL_ADDRESS": 0}}
    rule = AnswerRule(name="lists", when='answer.counts["EMAIL_ADDRESS"] >= 2', action="block")
    into = screen([rule], answer=found)
    stream = StreamScreen(adapter_for(CHAT), into)
    body = chat({"content": "one"}, {"content": "two"})
    first, second = body[:body.index(b"\n\n") + 2], body[body.index(b"\n\n") + 2:]
    assert b"".join(stream(first)) and into.blocked is None
    found["counts"]["EMAIL_ADDRESS"] = 2  # masking read the next chunk before this screen does
    out = b"".join(stream(second))
    assert into.blocked is not None and out.startswith(b'data: {"error"')


def test_a_condition_that_fails_on_the_answer_blocks() -> None:
    rule = AnswerRule(name="typo", when='answer.counts["ACME_ID"] > 0', action="block")
    into = screen([rule], answer={"counts": {"EMAIL_ADDRESS": 0}})
    out, _ = run(CHAT, chat({"content": "hello"}), 100, into)
    assert into.blocked is not None and "could not be evaluated" in into.blocked.reason
    assert b"hello" not in out


def test_a_failure_while_screening_cuts_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = StreamScreen(adapter_for(CHAT), screen())
    monkeypatch.setattr(stream, "_event", lambda raw, out: 1 / 0)
    assert stream(chat({"content": "x"})) == [] and stream.failure and stream(b"") == []
