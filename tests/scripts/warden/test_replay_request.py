"""``warden replay``: what of a recorded request may be sent again, and what is refused before anything is sent."""

from __future__ import annotations

import gzip
import socket

import pytest
import typer

from addons.store.events import Event
from scripts.warden.replay import readable, replay_headers, send


def test_no_credential_redacted_value_or_hop_by_hop_header_is_sent_again() -> None:
    event = Event(kind="request", headers=[
        ["Host", "api.openai.com"], ["Authorization", "[redacted]"], ["Proxy-Authorization", "[redacted]"],
        ["x-api-key", "[redacted]"], ["Cookie", "[redacted]"], ["X-Trace", "id [redacted-credential]"],
        ["X-Custom", "Bearer abcdefghijklmnop"], ["Connection", "keep-alive"], ["Transfer-Encoding", "chunked"],
        ["Content-Length", "12"], ["Content-Type", "application/json"], ["User-Agent", "OpenAI/Python 1.0"],
        ["Idempotency-Key", "k-1"],
    ])
    assert replay_headers(event) == [("Content-Type", "application/json"), ("User-Agent", "OpenAI/Python 1.0"),
                                     ("Idempotency-Key", "k-1")]


@pytest.mark.parametrize("request_event", [
    Event(kind="request", flow_id="f1", method="POST", path="/v1/chat", body=None, body_size=120,
          detail={"body_withheld": "not read for PII"}),
    Event(kind="request", flow_id="f1", method="POST", path="/v1/chat", body=b'{"mess', body_size=99,
          body_truncated=True),
    Event(kind="request", flow_id="f1", method="POST", path="/v1/chat", body=None, body_size=42),
])
def test_a_request_whose_body_is_not_on_record_in_full_is_never_sent(request_event: Event) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    try:
        with pytest.raises(typer.Exit) as e:
            send(request_event, f"http://127.0.0.1:{listener.getsockname()[1]}", None)
        assert e.value.exit_code == 2
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing connected
    finally:
        listener.close()


def test_bodies_are_compared_as_pretty_json_with_sorted_keys_else_as_text() -> None:
    assert readable(b'{"b": 1, "a": [1, 2]}') == readable(b'{"a":[1,2],"b":1}') == [
        "{", '  "a": [', "    1,", "    2", "  ],", '  "b": 1', "}"]
    assert readable(b"line one\nline two") == ["line one", "line two"]

    assert readable(gzip.compress(b'{"z": 0}'), "gzip") == ["{", '  "z": 0', "}"]
