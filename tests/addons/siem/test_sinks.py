"""The sinks' wire forms against local servers: Splunk HEC and Elastic bulk bodies, refusals that must be retried, and
RFC 5424 messages over TCP (octet counting) and UDP."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from addons.siem.sinks import DeliveryFailed, HttpSink, SyslogSink, syslog_message

EVENTS = [{"class_uid": 6003, "severity_id": 1, "time": 1772366400250, "metadata": {"uid": "7"}},
          {"class_uid": 3002, "severity_id": 3, "time": 1772366400999, "metadata": {"uid": "8"}, "note": "ünï"}]


class Server(ThreadingHTTPServer):
    def __init__(self, status: int = 200, answer: bytes = b"{}") -> None:
        self.posts: list[tuple[dict, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server.posts.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(server.status)
                self.end_headers()
                self.wfile.write(server.answer)

            def log_message(self, *args: object) -> None:
                pass

        self.status, self.answer = status, answer
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/ingest"


def test_splunk_hec_batches() -> None:
    server = Server()
    try:
        HttpSink(server.url, "splunk", "t0k").deliver(EVENTS)
        [(headers, body)] = server.posts
        assert headers["Authorization"] == "Splunk t0k"
        lines = [json.loads(line) for line in body.decode().splitlines()]
        assert [line["event"] for line in lines] == EVENTS and lines[0]["time"] == 1772366400.25
    finally:
        server.shutdown()


def test_elastic_bulk_batches_with_the_seq_as_id() -> None:
    server = Server(answer=b'{"errors":false,"items":[]}')
    try:
        HttpSink(server.url, "elastic", "k3y").deliver(EVENTS)
        [(headers, body)] = server.posts
        assert headers["Authorization"] == "ApiKey k3y" and headers["Content-Type"] == "application/x-ndjson"
        assert body.endswith(b"\n")
        lines = [json.loads(line) for line in body.decode().splitlines()]
        assert lines == [{"index": {"_id": "7"}}, EVENTS[0], {"index": {"_id": "8"}}, EVENTS[1]]
    finally:
        server.shutdown()


@pytest.mark.parametrize(("form", "status", "answer"), [
    ("splunk", 503, b'{"text":"Server is busy"}'),
    ("splunk", 400, b'{"text":"Invalid token"}'),
    ("elastic", 200, b'{"errors":true,"items":[{"index":{"status":429,"error":{"type":"es_rejected"}}}]}'),
])
def test_a_batch_not_wholly_accepted_fails(form: str, status: int, answer: bytes) -> None:
    server = Server(status, answer)
    try:
        with pytest.raises(DeliveryFailed):
            HttpSink(server.url, form, None).deliver(EVENTS)
    finally:
        server.shutdown()


def test_an_unreachable_collector_fails_the_delivery() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeliveryFailed, match="ConnectError"):
        HttpSink(f"http://127.0.0.1:{port}/", "splunk", None, timeout=2).deliver(EVENTS)


def test_rfc5424_message() -> None:
    message = syslog_message(EVENTS[1], "gw 1\n")
    header, payload = message.split(b"\xef\xbb\xbf", 1)
    # PRI 13 * 8 + 4: log audit, warning (OCSF medium); the hostname in printable ASCII only
    assert header == (b'<108>1 2026-03-01T12:00:00.999Z gw1 warden - ocsf3002 '
                      b'[origin software="Warden" swVersion="0.1.0"] ')
    assert json.loads(payload) == EVENTS[1]


def test_syslog_over_tcp_is_octet_counted_and_over_udp_a_datagram_each() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        sink = SyslogSink(f"127.0.0.1:{server.getsockname()[1]}")
        sink.deliver(EVENTS)
        conn, _ = server.accept()
        sink.close()
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        conn.close()
    frames = []
    while data:
        length, rest = data.split(b" ", 1)
        frames.append(rest[:int(length)])
        data = rest[int(length):]
    assert frames == [syslog_message(e, socket.gethostname()) for e in EVENTS]

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        udp = SyslogSink(f"127.0.0.1:{receiver.getsockname()[1]}", udp=True)
        udp.deliver(EVENTS)
        udp.close()
        assert [receiver.recv(65536) for _ in EVENTS] == frames


def test_syslog_to_nowhere_fails_the_delivery() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeliveryFailed):
        SyslogSink(f"127.0.0.1:{port}").deliver(EVENTS)
    with pytest.raises(ValueError, match="HOST:PORT"):
        SyslogSink("nowhere")
