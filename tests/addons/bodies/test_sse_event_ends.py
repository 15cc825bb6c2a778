"""Review: SSE framing cuts an event at every blank line the SSE spec allows (any line end, then an empty line
with any line end), and reads each byte of a stream a bounded number of times however it is cut."""

from __future__ import annotations

import pytest

from addons.bodies import sse
from addons.bodies.sse import EventSplitter


@pytest.mark.parametrize(("line_end", "blank"), [(b"\n", b"\r\n"), (b"\r\n", b"\r"), (b"\n", b"\r")])
def test_mixed_line_ends_end_an_event(line_end: bytes, blank: bytes) -> None:
    first = b'data: {"a": 1}' + line_end + blank
    stream = first + b'data: {"b": 2}\n\n'
    for cut in range(len(stream) + 1):
        splitter = EventSplitter()
        out = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:])
        assert out == [first, b'data: {"b": 2}\n\n'] and splitter.finish() == b"", cut


def test_a_long_event_is_scanned_once_not_once_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    scanned = []
    real = sse.EVENT_END

    class Counting:
        def finditer(self, buffer, pos=0):
            scanned.append(len(buffer) - pos)
            return real.finditer(buffer, pos)

    monkeypatch.setattr(sse, "EVENT_END", Counting())
    splitter = EventSplitter()
    chunk = b"data: " + b"x" * 1000
    for _ in range(1000):
        assert splitter.feed(chunk) == []
    assert splitter.feed(b"\n\n") == [chunk * 1000 + b"\n\n"]
    assert sum(scanned) <= 2 * (len(chunk) * 1000 + 2)


def test_events_framed_with_mixed_line_ends_are_restored_one_by_one() -> None:
    from addons.masking.payloads import adapter_for
    from addons.masking.pseudonyms import Vault
    from addons.masking.stream import StreamRewriter

    vault = Vault()
    vault.pseudonym("PERSON", "Annabel Leeworth")
    delta = b'data: {"choices": [{"index": 0, "delta": {"content": "%s"}}]}\n\r\n'
    stream = delta % b"Dear <PERSON_1>" + delta % b", hello"
    rewriter = StreamRewriter(adapter_for("/v1/chat/completions"), vault, None, None)
    client = b"".join(rewriter(stream) + rewriter(b""))
    assert b"Annabel Leeworth" in client and b"<PERSON_1>" not in client


def test_an_event_that_never_ends_is_stopped_at_the_limit() -> None:
    import pytest

    from addons.bodies.sse import EventSplitter, EventTooLong

    splitter = EventSplitter(limit=1024)
    assert splitter.feed(b"data: x\n\n" + b"data: " + b"y" * 1000) == [b"data: x\n\n"]
    with pytest.raises(EventTooLong):
        splitter.feed(b"y" * 100)


def test_a_stream_whose_event_never_ends_is_cut_off() -> None:
    from addons.masking.payloads import adapter_for
    from addons.masking.pseudonyms import Vault
    from addons.masking.stream import MAX_EVENT, StreamRewriter

    rewriter = StreamRewriter(adapter_for("/v1/chat/completions"), Vault([]), None, None)
    chunk = b"data: " + b"z" * (1024 * 1024)
    out = [rewriter(chunk) for _ in range(MAX_EVENT // len(chunk) + 2)]
    assert rewriter.error is not None and "EventTooLong" in rewriter.error
    assert not any(out) and rewriter(b"data: more\n\n") == []  # nothing went out, nothing more will
