"""HTTP/2 end to end: an h2 client through the gateway to an h2 upstream, trailers included.

HTTP/2 carries header fields after the body (trailers) both ways; mitmproxy forwards them as they came.
The gateway masks and records bodies and headers, not trailers, so a request with trailers is refused
(400 ``trailers_not_accepted``) and an answer's trailers are dropped before the client sees them. The
upstream here is a small TLS server on the ``h2`` library (what mitmproxy speaks HTTP/2 with) that records
everything it receives; the client is httpx with ``http2=True`` or, to send trailers, ``h2`` itself.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import pytest
import trustme

from tests.conftest import UPSTREAM_KEY, Gateway, listen, rules_for

pytestmark = pytest.mark.e2e

EMAIL = "alice.h2@example.com"
BEARER = "Bearer sk-caller-trailer-SECRET-9f3a"
CHAT = {"model": "demo", "messages": [{"role": "user", "content": f"write to {EMAIL} please"}]}
UPSTREAM_TRAILERS = [("x-upstream-note", "carol.jones@example.net"), ("x-checksum", "abc")]


@dataclass
class Received:
    """One request as the h2 upstream saw it."""

    headers: dict[str, str]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class H2Upstream:
    """A TLS server that speaks only HTTP/2 (ALPN h2) on 127.0.0.1 and records every request.

    It answers JSON; ``/v1/stream`` answers an SSE stream. Paths under ``/trailers`` add ``UPSTREAM_TRAILERS``.
    """

    ssl_context: ssl.SSLContext
    received: list[Received] = field(default_factory=list)
    alpn: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock, self.port = listen(self._serve)

    def close(self) -> None:
        self._sock.close()

    def _serve(self, sock: socket.socket) -> None:
        try:
            tls = self.ssl_context.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError):
            sock.close()
            return
        self.alpn.append(tls.selected_alpn_protocol())
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        tls.sendall(conn.data_to_send())
        streams: dict[int, Received] = {}
        with tls:
            while True:
                try:
                    data = tls.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = Received(dict(event.headers))
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id].body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.TrailersReceived):
                        streams[event.stream_id].trailers = list(event.headers)
                    elif isinstance(event, h2.events.StreamEnded):
                        request = streams.pop(event.stream_id)
                        self.received.append(request)
                        self._answer(conn, event.stream_id, request)
                tls.sendall(conn.data_to_send())

    @staticmethod
    def _answer(conn: h2.connection.H2Connection, stream_id: int, request: Received) -> None:
        path = request.headers[":path"]
        trailers = path.startswith("/trailers")
        if path.endswith("/stream"):
            body = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
            content_type = "text/event-stream"
        else:
            body = json.dumps({"id": "x", "object": "chat.completion",
                               "choices": [{"message": {"role": "assistant", "content": "ok"}}]}).encode()
            content_type = "application/json"
        conn.send_headers(stream_id, [(":status", "200"), ("content-type", content_type),
                                      *([("trailer", "x-upstream-note, x-checksum")] if trailers else [])])
        conn.send_data(stream_id, body, end_stream=not trailers)
        if trailers:
            conn.send_headers(stream_id, UPSTREAM_TRAILERS, end_stream=True)


@pytest.fixture(scope="module")
def h2_upstream(upstream_ca: trustme.CA) -> Iterator[H2Upstream]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    upstream_ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    context.set_alpn_protocols(["h2"])
    server = H2Upstream(context)
    yield server
    server.close()


@pytest.fixture
def h2_gateway(gateway_factory, upstream, h2_upstream: H2Upstream) -> Gateway:
    h2_upstream.received.clear()
    h2_upstream.alpn.clear()
    extra = f"""  - name: h2
    host: localhost
    port: {h2_upstream.port}
    credential: {{header: Authorization, value: "Bearer ${{WARDEN_TEST_UPSTREAM_KEY}}"}}
"""
    return gateway_factory(rules_for(upstream.port, extra_upstreams=extra))


@dataclass
class H2Answer:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    reset: bool = False


def h2_request(gw: Gateway, port: int, path: str, body: bytes,
               trailers: list[tuple[str, str]] | None = None) -> H2Answer:
    """One POST through the gateway (CONNECT, TLS with ALPN h2 asserted), with ``trailers`` after the body."""
    auth = base64.b64encode(f"alice:{gw.token('alice')}".encode()).decode()
    raw = socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=30)
    raw.sendall(f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n"
                f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=str(gw.ca_cert))
    context.set_alpn_protocols(["h2"])
    answer = H2Answer()
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "h2"  # the gateway speaks HTTP/2 to this client
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        headers = [(":method", "POST"), (":scheme", "https"), (":authority", f"localhost:{port}"), (":path", path),
                   ("content-type", "application/json")]
        conn.send_headers(1, headers)
        conn.send_data(1, body, end_stream=not trailers)
        if trailers:
            conn.send_headers(1, trailers, end_stream=True)
        tls.sendall(conn.data_to_send())
        while True:
            data = tls.recv(65536)
            if not data:
                answer.reset = True
                return answer
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    answer.headers = dict(event.headers)
                    answer.status = int(answer.headers[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    answer.body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.TrailersReceived):
                    answer.trailers = list(event.headers)
                elif isinstance(event, h2.events.StreamEnded):
                    return answer
                elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    answer.reset = True
                    return answer
            tls.sendall(conn.data_to_send())


def events_of(gw: Gateway, path: str) -> list[dict]:
    flow = next(f for f in gw.flows() if f["path"] == path)
    return [json.loads(line) for line in gw.warden("show", "--json", flow["flow_id"]).stdout.splitlines()]


def test_an_email_in_a_json_body_over_h2_is_masked_upstream(h2_gateway: Gateway, h2_upstream: H2Upstream) -> None:
    answer = h2_request(h2_gateway, h2_upstream.port, "/v1/chat/completions", json.dumps(CHAT).encode())
    assert answer.status == 200, answer
    assert h2_upstream.alpn == ["h2"]  # gateway to upstream (h2_request asserts client to gateway)
    [seen] = h2_upstream.received
    assert EMAIL.encode() not in seen.body
    assert json.loads(seen.body)["messages"][0]["content"] != CHAT["messages"][0]["content"]
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_an_httpx_http2_client_is_masked_too(h2_gateway: Gateway, h2_upstream: H2Upstream) -> None:
    # httpx offers ALPN "http/1.1, h2" in that order and the gateway keeps the client's preference: HTTP/1.1 to
    # the gateway, HTTP/2 from the gateway to this h2-only upstream
    with h2_gateway.client(http2=True, timeout=60) as client:
        answer = client.post(f"https://localhost:{h2_upstream.port}/v1/chat/completions", json=CHAT)
    assert answer.status_code == 200, answer.text
    assert h2_upstream.alpn == ["h2"]
    [seen] = h2_upstream.received
    assert EMAIL.encode() not in seen.body


def test_request_trailers_are_refused_and_recorded(h2_gateway: Gateway, h2_upstream: H2Upstream) -> None:
    trailers = [("authorization", BEARER), ("x-contact", EMAIL)]
    body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "hello"}]}).encode()
    answer = h2_request(h2_gateway, h2_upstream.port, "/v1/chat/completions", body, trailers)
    assert answer.status == 400, answer
    error = json.loads(answer.body)["error"]
    assert error["type"] == "trailers_not_accepted"
    assert "authorization" in error["message"] and "x-contact" in error["message"]
    assert BEARER not in error["message"] and EMAIL not in error["message"]
    assert h2_upstream.received == []  # nothing reached the upstream, trailers least of all
    [request, response] = events_of(h2_gateway, "/v1/chat/completions")[:2]
    assert request["fate"] == "trailers_not_accepted" and response["status"] == 400
    stored = json.dumps(events_of(h2_gateway, "/v1/chat/completions"))
    assert "sk-caller-trailer-SECRET" not in stored and EMAIL not in stored

    # the same request without trailers goes through on the same gateway
    answer = h2_request(h2_gateway, h2_upstream.port, "/v1/chat/completions", body)
    assert answer.status == 200 and len(h2_upstream.received) == 1
    assert h2_upstream.received[0].trailers == []


@pytest.mark.parametrize("path", ["/trailers/v1/chat/completions", "/trailers/v1/stream"])
def test_answer_trailers_are_dropped_and_noted(h2_gateway: Gateway, h2_upstream: H2Upstream, path: str) -> None:
    answer = h2_request(h2_gateway, h2_upstream.port, path, json.dumps(CHAT).encode())
    assert answer.status == 200 and not answer.reset, answer
    assert answer.body  # the answer itself came through (streamed for /stream)
    assert answer.trailers == []
    assert h2_upstream.alpn == ["h2"]
    [response] = [e for e in events_of(h2_gateway, path) if e["kind"] == "response"]
    assert response["detail"]["trailers_dropped"] == ["x-upstream-note", "x-checksum"]
    assert response["detail"].get("streamed", False) == path.endswith("/stream")
    assert "carol.jones@example.net" not in json.dumps(response)
