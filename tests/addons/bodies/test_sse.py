"""SSE framing: events cut from chunks cut anywhere, any line end, comments and multi-line data kept."""

from __future__ import annotations

import pytest

from addons.bodies.sse import EventSplitter, events, parse_event, render_event
from addons.bodies.usage import response_usage

STREAM = b'event: delta\ndata: {"a": 1}\n\n: keep-alive\n\ndata: line one\ndata: line two\nid: 7\n\ndata: [DONE]\n\n'
EVENTS = [b'event: delta\ndata: {"a": 1}\n\n', b": keep-alive\n\n", b"data: line one\ndata: line two\nid: 7\n\n",
          b"data: [DONE]\n\n"]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_split_across_every_cut(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    expected = [e.replace(b"\n", newline) for e in EVENTS]
    for cut in range(len(stream) + 1):
        splitter = EventSplitter()
        out = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:])
        assert out == expected and splitter.finish() == b"", cut
    splitter = EventSplitter()
    assert [e for byte in range(len(stream)) for e in splitter.feed(stream[byte:byte + 1])] == expected


def test_a_partial_event_waits_and_the_end_releases_it() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: x\n\ndata: y") == [b"data: x\n\n"]
    assert splitter.feed(b"") == [] and splitter.pending == b"data: y"
    assert splitter.finish() == b"data: y" and splitter.finish() == b""
    assert list(events(b"data: a\r\n\r\ndata: b")) == [b"data: a\r\n\r\n", b"data: b"]
    assert list(events(b"")) == []


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_fields_comments_and_multi_line_data(newline: str) -> None:
    raw = newline.join(["event: delta", ": a comment", "data: one", "data:two", "data:  three", "id", "retry: 5",
                        "", ""])
    fields, data = parse_event(raw.encode())
    assert fields == [("event", "delta"), ("", "a comment"), ("id", ""), ("retry", "5")]  # one space dropped
    assert data == "one\ntwo\n three"
    assert parse_event(b": only a comment\n\n") == ([("", "only a comment")], None)
    assert parse_event(b"data\n\n") == ([("data", "")], None)  # no colon: a field named data, not data


def test_render_round_trip() -> None:
    fields = [("event", "delta"), ("", "a comment")]
    raw = render_event(fields, "one\ntwo")
    assert raw == b"event: delta\n:a comment\ndata: one\ndata: two\n\n"
    assert parse_event(raw) == (fields, "one\ntwo")
    odd = b"data: caf\xe9\n\n"  # not UTF-8: survives unchanged
    assert render_event(*parse_event(odd)) == odd


def test_usage_reads_multi_line_data_and_crlf() -> None:
    body = b'data: {"usage":\r\ndata: {"prompt_tokens": 4, "completion_tokens": 6}}\r\n\r\ndata: [DONE]\r\n\r\n'
    assert vars(response_usage(body, "text/event-stream")) == {"tokens_in": 4, "tokens_out": 6}
