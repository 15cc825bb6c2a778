"""Every string of a streamed answer, end to end: PII an upstream streams beside the text (reasoning, a
field the provider adds, a tool's name) never reaches the client or the record; pseudonyms come back."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

from tests.conftest import Gateway, rules_for

pytestmark = pytest.mark.e2e

NAME, EMAIL = "Maria Garcia", "maria.garcia@example.org"  # the caller's: pseudonymized, restored
LEAKS = ("bob.jones@evil.example", "4111 1111 1111 1111", "536-22-8726")  # the upstream's own: masked


def pieces(text: str, size: int = 3) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def answer(asked: str) -> list[dict]:
    """An OpenAI chat stream that repeats what it was asked (pseudonyms) and adds PII of its own beside the text."""
    thinking = f"The user asked: {asked} Our notes: {LEAKS[0]} paid with {LEAKS[1]}."
    call = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "notify", "arguments": ""}}
    deltas = [{"role": "assistant", "content": ""}]
    deltas += [{"reasoning_content": piece} for piece in pieces(thinking)]
    deltas += [{"content": piece} for piece in pieces("All done, see the notes.")]
    deltas += [{"tool_calls": [call]}]
    deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
               for piece in pieces(json.dumps({"to": asked.split(" at ")[-1].rstrip(".")}))]
    chunks = [{"choices": [{"index": 0, "delta": delta, "finish_reason": None}]} for delta in deltas]
    chunks[3]["x_provider_trace"] = {"account": LEAKS[0], "ssn on file": f"ssn {LEAKS[2]}", "about": asked}
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    base = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "reasoner"}
    return [{**base, **chunk} for chunk in chunks]


class StreamingUpstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked, as providers stream
    received: list[dict] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.received.append(body)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in answer(body["messages"][-1]["content"]):
            self._chunk(f"data: {json.dumps(event)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def streaming_upstream() -> Iterator[ThreadingHTTPServer]:
    StreamingUpstream.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StreamingUpstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_pii_beside_the_streamed_text_is_masked_and_pseudonyms_restored(gateway_factory, upstream,
                                                                       streaming_upstream) -> None:
    port = streaming_upstream.server_address[1]
    gw: Gateway = gateway_factory(rules_for(upstream.port, extra_upstreams=f"""  - name: reasoner
    host: localhost
    scheme: http
    port: {port}
    credential: {{header: Authorization, value: "Bearer ${{WARDEN_TEST_UPSTREAM_KEY}}"}}
"""))
    client = openai.OpenAI(base_url=f"http://localhost:{port}/v1", api_key="unused", max_retries=0,
                           http_client=httpx.Client(proxy=gw.proxy_url_for(), trust_env=False, timeout=30))
    asked = f"Tell {NAME} at {EMAIL}."
    chunks = list(client.chat.completions.create(model="reasoner", messages=[{"role": "user", "content": asked}],
                                                 stream=True))
    sent = StreamingUpstream.received[0]["messages"][0]["content"]
    assert NAME not in sent and EMAIL not in sent

    seen = json.dumps([chunk.model_dump() for chunk in chunks])  # every field the client can read
    assert not [value for value in LEAKS if value in seen]
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert reasoning == (f"The user asked: {asked} Our notes: <EMAIL_ADDRESS> paid with <CREDIT_CARD>.")
    [trace] = [c.model_extra["x_provider_trace"] for c in chunks if "x_provider_trace" in (c.model_extra or {})]
    assert trace == {"account": "<EMAIL_ADDRESS>", "ssn on file": "ssn <US_SSN>", "about": asked}

    # The SDK's own accumulation parses the flush events: no tool call id or name repeated, arguments restored.
    with client.chat.completions.stream(model="reasoner", messages=[{"role": "user", "content": asked}]) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "All done, see the notes."
    [call] = message.tool_calls
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("call_9", "notify", {"to": EMAIL})

    flows = [f for f in gw.flows() if f["upstream"] == "reasoner"]
    assert len(flows) == 2 and {f["fate"] for f in flows} == {"completed"}
    shown = gw.warden("show", flows[0]["flow_id"], "--json").stdout
    assert "<EMAIL_ADDRESS_1>" in shown and "<CREDIT_CARD>" in shown
    gw.stop()
    store = gw.db.read_bytes() + (gw.db.parent / (gw.db.name + ".journal")).read_bytes()
    for value in (*LEAKS, NAME, EMAIL):
        assert value.encode() not in store, value
