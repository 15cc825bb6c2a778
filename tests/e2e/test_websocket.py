"""WebSocket through the gateway: refused unless the upstream opts in; an opted-in session is masked both ways,
every message is on record (masked) before it is relayed, and the connection ends with the token.

A real TLS WebSocket upstream and a real WebSocket client in a CONNECT tunnel (``websocket_peers.py``).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import time
from collections.abc import Iterator

import httpx
import pytest
import trustme
from wsproto.events import CloseConnection, Ping, Pong

from tests.conftest import Gateway
from tests.e2e.websocket_peers import (
    CLOSE_PII,
    CONTROL_PII,
    RAW,
    UNSOLICITED,
    UPSTREAM_PII,
    WsClient,
    WsUpstream,
    tunnel,
)

pytestmark = pytest.mark.e2e

EMAIL = "maria.garcia@example.org"


@pytest.fixture
def ws_upstream(upstream_ca: trustme.CA) -> Iterator[WsUpstream]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    upstream_ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    server = WsUpstream(context)
    yield server
    server.close()


def ws_rules(port: int, masking: str = "") -> str:
    """``localhost`` opts in to WebSocket; ``127.0.0.1`` (the same server) does not."""
    return f"""
identity:
  leeway: 0
upstreams:
  - name: realtime
    host: localhost
    port: {port}
    websocket: true
  - name: plain
    host: 127.0.0.1
    port: {port}
{masking}
rules:
  - name: default
    action: allow
"""


def connect(gw: Gateway, ws_upstream: WsUpstream, host: str = "localhost", token: str | None = None,
            path: str = "/ws", deflate: bool = False) -> WsClient:
    return WsClient(gw.proxy_port, str(gw.ca_cert), token or gw.token("alice"), host, ws_upstream.port, path,
                    deflate=deflate)


def events_of(gw: Gateway, path: str) -> tuple[dict, list[dict]]:
    """The flow on ``path`` (``warden flows``) and its events (``warden show --json``)."""
    [flow] = [f for f in gw.flows() if f["path"] == path]
    events = [json.loads(line) for line in gw.warden("show", flow["flow_id"], "--json").stdout.splitlines()]
    return flow, events


def websocket_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e["kind"] == "websocket"]


def stored(gw: Gateway) -> bytes:
    """Every byte of the (stopped) gateway's store and journal."""
    journal = gw.db.with_name(gw.db.name + ".journal")
    return gw.db.read_bytes() + (journal.read_bytes() if journal.exists() else b"")


def test_upgrade_is_refused_by_default_and_recorded(gateway_factory, ws_upstream: WsUpstream) -> None:
    gw = gateway_factory(ws_rules(ws_upstream.port))
    client = connect(gw, ws_upstream, host="127.0.0.1")
    assert not client.accepted and client.rejected is not None and client.rejected.status_code == 403
    error = json.loads(client.reject_body)["error"]
    assert error["type"] == "websocket_not_allowed"
    assert "'plain'" in error["message"] and "websocket: true" in error["message"]
    client.sock.close()
    assert ws_upstream.connections == 0  # nothing went upstream, not even a connection

    flow, events = events_of(gw, "/ws")
    assert flow["fate"] == "websocket_not_allowed" and flow["status"] == 403 and flow["user"] == "alice"
    assert [e["kind"] for e in events] == ["request", "response"]


def test_an_unasked_101_is_killed_never_relayed(gateway_factory, ws_upstream: WsUpstream) -> None:
    gw = gateway_factory(ws_rules(ws_upstream.port))
    for host in ("127.0.0.1", "localhost"):  # whether the upstream allows WebSocket or not: this request did not ask
        raw = tunnel(gw.proxy_port, gw.token("alice"), host, ws_upstream.port)
        with ssl.create_default_context(cafile=str(gw.ca_cert)).wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET /rogue HTTP/1.1\r\nHost: {host}:{ws_upstream.port}\r\n\r\n".encode())
            got = b""
            try:
                while chunk := tls.recv(65536):
                    got += chunk
            except (OSError, ssl.SSLError):
                pass
        assert b"101" not in got and RAW not in got, got
    assert ws_upstream.rogue_hits == 2
    flows = [f for f in gw.flows() if f["path"] == "/rogue"]
    assert len(flows) == 2 and all(f["fate"] == "upgrade_refused" and f["status"] == 101 for f in flows), flows


def test_allowed_websocket_is_masked_both_ways_and_every_message_recorded(gateway_factory,
                                                                          ws_upstream: WsUpstream) -> None:
    gw = gateway_factory(ws_rules(ws_upstream.port))
    client = connect(gw, ws_upstream)
    assert client.accepted
    first, again = f"Please write to {EMAIL} today", f"And copy {EMAIL} too"
    client.send_text(first)
    assert client.receive_text() == first  # the caller reads its own value again
    client.send_text(again)
    assert client.receive_text() == again
    client.send_text(UNSOLICITED)
    from_upstream = client.receive_text()
    assert UPSTREAM_PII not in from_upstream and from_upstream.startswith("reach me at ")
    client.close()

    # What left the organisation: pseudonyms, numbered as in HTTP, the same value keeping its number.
    assert ws_upstream.received == ["Please write to <EMAIL_ADDRESS_1> today", "And copy <EMAIL_ADDRESS_1> too",
                                    UNSOLICITED]
    assert ws_upstream.closed.wait(10)

    flow, events = events_of(gw, "/ws")
    assert flow["status"] == 101 and flow["user"] == "alice"
    ws = websocket_events(events)
    assert [e["fate"] for e in ws] == ["open"] + ["relayed"] * 6 + ["closed"]
    messages = ws[1:-1]
    assert [e["detail"]["direction"] for e in messages] == ["client_to_server", "server_to_client"] * 3
    bodies = [e["body"] for e in messages]
    assert bodies[:4] == ["Please write to <EMAIL_ADDRESS_1> today"] * 2 + ["And copy <EMAIL_ADDRESS_1> too"] * 2
    assert bodies[4] == UNSOLICITED and UPSTREAM_PII not in bodies[5]
    assert messages[0]["entities"] == {"EMAIL_ADDRESS": 1} and messages[5]["entities"] == {"EMAIL_ADDRESS": 1}
    assert all(e["user"] == "alice" for e in ws)
    assert ws[-1]["detail"]["closed_by"] == "client" and ws[-1]["detail"]["close_code"] == 1000
    assert ws[-1]["detail"]["close_reason_size"] == len("done")  # the peer's free text is neither relayed nor stored
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)

    # Nowhere in the store in the clear: the originals are kept only encrypted.
    gw.stop()
    raw = gw.db.read_bytes() + (gw.db.with_name(gw.db.name + ".journal").read_bytes()
                                if gw.db.with_name(gw.db.name + ".journal").exists() else b"")
    assert EMAIL.encode() not in raw and UPSTREAM_PII.encode() not in raw
    dump = gw.warden("show", flow["flow_id"], "--json", db_only=True).stdout
    assert EMAIL not in dump and UPSTREAM_PII not in dump
    gw.warden("verify", db_only=True)


def test_binary_message_closes_the_connection_when_unknown_content_blocks(gateway_factory,
                                                                          ws_upstream: WsUpstream) -> None:
    gw = gateway_factory(ws_rules(ws_upstream.port))
    client = connect(gw, ws_upstream)
    client.send_bytes(b"\x00\x01binary")
    client.wait_closed()
    assert client.closed and ws_upstream.received == []
    ws = websocket_events(events_of(gw, "/ws")[1])
    assert ws[-1]["fate"] == "unsupported_content" and ws[-1]["detail"]["closed_by"] == "gateway"
    assert "binary" in ws[-1]["reason"]


def test_binary_message_passes_when_unknown_content_passes(gateway_factory, ws_upstream: WsUpstream) -> None:
    gw = gateway_factory(ws_rules(ws_upstream.port, "masking:\n  unknown_content: pass"))
    client = connect(gw, ws_upstream)
    binary = b"\x00\x01binary " + EMAIL.encode()  # not text: passed unread, as the operator chose
    client.send_bytes(binary)
    assert client.receive_bytes() == binary
    client.close()
    flow, events = events_of(gw, "/ws")
    ws = websocket_events(events)
    assert [e["fate"] for e in ws] == ["open", "relayed", "relayed", "closed"]
    for message in ws[1:3]:  # recorded by its size only; the bytes kept only as the encrypted original
        assert "not inspected" in message["detail"]["skipped"]
        assert "not read for PII" in message["detail"]["body_withheld"]
        assert message["body"] == "" and message["body_size"] == len(binary)
        assert message["original"] == message["detail"]["original"] == "encrypted"
    clear = gw.warden("show", "--json", "--originals", "--key", str(gw.originals_key), flow["flow_id"]).stdout
    shown = websocket_events([json.loads(line) for line in clear.splitlines()])
    assert [e["body"] for e in shown[1:3]] == [binary.decode()] * 2
    gw.stop()
    assert EMAIL.encode() not in stored(gw)
    assert EMAIL not in gw.warden("show", flow["flow_id"], "--json", db_only=True).stdout


@pytest.mark.parametrize("unknown_content", ["block", "pass"])
def test_a_binary_message_that_is_text_is_masked_as_text(gateway_factory, ws_upstream: WsUpstream,
                                                         unknown_content: str) -> None:
    """Many clients send JSON in binary frames: UTF-8 text is text, whatever the frame's opcode."""
    gw = gateway_factory(ws_rules(ws_upstream.port, f"masking:\n  unknown_content: {unknown_content}"))
    client = connect(gw, ws_upstream)
    sent = json.dumps({"m": "jane@acme.example"}).encode()
    client.send_bytes(sent)
    assert client.receive_bytes() == sent  # still a binary frame; the caller reads its own value again
    client.close()
    assert ws_upstream.received == [b'{"m": "<EMAIL_ADDRESS_1>"}']  # what left: the pseudonym, as bytes
    flow, events = events_of(gw, "/ws")
    ws = websocket_events(events)
    assert [e["fate"] for e in ws] == ["open", "relayed", "relayed", "closed"]
    assert [e["detail"]["type"] for e in ws[1:3]] == ["binary", "binary"]
    assert [e["body"] for e in ws[1:3]] == ['{"m": "<EMAIL_ADDRESS_1>"}'] * 2
    assert ws[1]["entities"] == {"EMAIL_ADDRESS": 1} and "skipped" not in ws[1]["detail"]
    gw.stop()
    assert b"jane@acme.example" not in stored(gw)
    assert "jane@acme.example" not in gw.warden("show", flow["flow_id"], "--json", db_only=True).stdout


def test_token_expiry_closes_an_idle_websocket_and_is_recorded(gateway_factory, ws_upstream: WsUpstream) -> None:
    gw = gateway_factory(ws_rules(ws_upstream.port))
    client = connect(gw, ws_upstream, token=gw.token("alice", ttl=6))
    client.send_text("hello")
    assert client.receive_text() == "hello"
    client.wait_closed()  # nothing more is sent: only the token's end closes it
    assert client.closed
    assert ws_upstream.closed.wait(10)  # the upstream's side is closed too
    ws = websocket_events(events_of(gw, "/ws")[1])
    assert [e["fate"] for e in ws] == ["open", "relayed", "relayed", "token_expired"]
    assert ws[-1]["detail"]["closed_by"] == "gateway" and "expired" in ws[-1]["reason"]


def test_message_after_expiry_is_not_relayed(gateway_factory, ws_upstream: WsUpstream) -> None:
    gw = gateway_factory(ws_rules(ws_upstream.port))
    token = gw.token("alice", ttl=3)
    client = connect(gw, ws_upstream, token=token)
    deadline = time.time() + 10
    while time.time() < deadline and not client.closed:
        try:
            client.send_text("tick")
            client.receive_text()
        except (ConnectionError, OSError):
            break
        time.sleep(0.2)
    client.wait_closed()
    assert client.closed
    ws = websocket_events(events_of(gw, "/ws")[1])
    assert ws[-1]["fate"] == "token_expired"
    relayed = sum(1 for e in ws if e["fate"] == "relayed" and e["detail"]["direction"] == "client_to_server")
    assert ws_upstream.received == ["tick"] * relayed  # every message the upstream got is on record


def test_analysis_failure_drops_the_message_and_closes(gateway_factory, ws_upstream: WsUpstream) -> None:
    gw = gateway_factory(ws_rules(ws_upstream.port), extra_args=("--set", "warden_pii_timeout=2"))
    client = connect(gw, ws_upstream)
    client.send_text("warm up")
    assert client.receive_text() == "warm up"
    [pid] = httpx.get(f"{gw.admin_url}/healthz", trust_env=False).json()["pii"][0]["pids"]
    os.kill(pid, signal.SIGSTOP)
    try:
        client.send_text(f"Stuck: mail {EMAIL} please")
        client.wait_closed()
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert client.closed and ws_upstream.received == ["warm up"]
    ws = websocket_events(events_of(gw, "/ws")[1])
    assert ws[-1]["fate"] == "pii_unavailable" and ws[-1]["detail"]["closed_by"] == "gateway"


def test_control_frame_payloads_never_cross_the_gateway(gateway_factory, ws_upstream: WsUpstream) -> None:
    """Pings and pongs are relayed empty both ways (keep-alive still works), never logged, never stored."""
    gw = gateway_factory(ws_rules(ws_upstream.port))
    client = connect(gw, ws_upstream)
    client.ping(EMAIL.encode())
    pong = client.receive_control()
    assert isinstance(pong, Pong) and bytes(pong.payload) == b""  # the caller still gets its pong
    assert ws_upstream.pings == [b""]  # the upstream got the ping, without its payload

    client.send_text(CONTROL_PII)  # the upstream answers with a ping and a pong, each carrying PII
    ping, pong = client.receive_control(), client.receive_control()
    assert isinstance(ping, Ping) and bytes(ping.payload) == b""
    assert isinstance(pong, Pong) and bytes(pong.payload) == b""
    client.close()
    assert ws_upstream.closed.wait(10)

    flow, events = events_of(gw, "/ws")
    close = websocket_events(events)[-1]
    assert close["fate"] == "closed"
    assert close["detail"]["control_payloads_dropped"] == {"count": 3, "bytes": len(EMAIL) + 2 * len(UPSTREAM_PII)}
    log = gw.log()
    assert EMAIL not in log and UPSTREAM_PII not in log
    gw.stop()
    assert EMAIL.encode() not in stored(gw) and UPSTREAM_PII.encode() not in stored(gw)
    dump = gw.warden("show", flow["flow_id"], "--json", db_only=True).stdout
    assert EMAIL not in dump and UPSTREAM_PII not in dump


def test_a_close_reason_never_crosses_the_gateway(gateway_factory, ws_upstream: WsUpstream) -> None:
    gw = gateway_factory(ws_rules(ws_upstream.port))
    client = connect(gw, ws_upstream)
    client.send_text(CLOSE_PII)  # the upstream closes with PII as its reason
    close = client.wait_closed()
    assert isinstance(close, CloseConnection) and close.code == 4000 and not close.reason
    assert client.closed

    _, events = events_of(gw, "/ws")
    close_event = websocket_events(events)[-1]
    assert close_event["fate"] == "closed" and close_event["detail"]["closed_by"] == "server"
    assert close_event["detail"]["close_code"] == 4000
    assert close_event["detail"]["close_reason_size"] == len(UPSTREAM_PII)
    assert UPSTREAM_PII not in gw.log()
    gw.stop()
    assert UPSTREAM_PII.encode() not in stored(gw)


def test_an_oversized_message_closes_the_session_unrelayed(gateway_factory, ws_upstream: WsUpstream) -> None:
    gw = gateway_factory(ws_rules(ws_upstream.port), extra_args=("--set", "warden_max_body=4096"))
    client = connect(gw, ws_upstream)
    client.send_text("a" * 4096)  # at the limit: relayed
    assert client.receive_text() == "a" * 4096
    client.send_text("b" * 4097)
    close = client.wait_closed()
    assert isinstance(close, CloseConnection) and close.code == 1009  # Message Too Big
    assert client.closed and ws_upstream.received == ["a" * 4096]
    assert ws_upstream.closed.wait(10)

    ws = websocket_events(events_of(gw, "/ws")[1])
    assert [e["fate"] for e in ws] == ["open", "relayed", "relayed", "message_too_large"]
    assert ws[-1]["detail"]["closed_by"] == "gateway"
    assert ws[-1]["detail"]["close_code"] == 1009 and "warden_max_body (4096 bytes)" in ws[-1]["reason"]


def test_compression_is_never_negotiated(gateway_factory, ws_upstream: WsUpstream) -> None:
    """permessage-deflate would be inflated without a bound before any hook or limit sees a message."""
    gw = gateway_factory(ws_rules(ws_upstream.port))
    client = connect(gw, ws_upstream, deflate=True)
    assert client.accepted
    client.send_text(f"mail {EMAIL}")
    assert client.receive_text() == f"mail {EMAIL}"
    client.close()
    assert ws_upstream.offers == [[]]  # the client's offer never reached the upstream
    assert ws_upstream.received == ["mail <EMAIL_ADDRESS_1>"]
