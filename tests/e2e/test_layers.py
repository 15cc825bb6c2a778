"""Inside a tunnel the gateway chooses the layer: TLS it can terminate is intercepted whatever its record
version, HTTP goes to the chain, and every other byte is refused and recorded, never relayed upstream.

mitmproxy alone relays as raw TCP what it does not recognise as TLS or HTTP: a ClientHello whose record
version byte is ``03 04`` (which servers accept) reached the upstream untouched, with the caller's own
``Authorization``, unmasked PII and no flow on record. Raw sockets on 127.0.0.1 play the attacker here.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import (
    UPSTREAM_KEY,
    Gateway,
    RawListener,
    is_ready,
    open_tunnel,
    rules_for,
    start_gateway,
)

pytestmark = pytest.mark.e2e

CALLER_BEARER = "sk-caller-PLANTED-layers-8e21"
EMAIL = "maria.garcia@example.org"
SSH_BANNER = b"SSH-2.0-OpenSSH_9.6 PLANTED-ssh-secret\r\n"
GARBAGE = b"\x00\x01garbage PLANTED-raw-secret"


@pytest.fixture
def raw_listener():
    listener = RawListener()
    yield listener
    listener.close()


def layer_rules(upstream_port: int, raw_port: int) -> str:
    return rules_for(upstream_port, extra_upstreams=f"  - name: raw\n    host: 127.0.0.1\n    port: {raw_port}\n")


def tunnel(port: int, host: str, target_port: int, token: str) -> socket.socket:
    return open_tunnel(port, f"{host}:{target_port}", token)


class BioTLS:
    """A TLS client over a raw socket through ``ssl.MemoryBIO``, so the first record can be rewritten on the wire."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str | None,
                 record_version: int | None = 0x04, split: bool = False) -> None:
        self.sock, self.record_version, self.split = sock, record_version, split
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)

    def handshake(self) -> None:
        first = True
        while True:
            try:
                self.tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                data = self.outgoing.read()
                if first and self.record_version is not None:
                    assert data[:3] == b"\x16\x03\x01", data[:5]  # a ClientHello record, as the ssl module sends it
                    data = data[:2] + bytes([self.record_version]) + data[3:]
                if first and self.split:
                    self._send_split(data)
                else:
                    self.sock.sendall(data)
                first = False
                self._receive()

    def _send_split(self, record: bytes) -> None:
        """The ClientHello over two records (both with the rewritten version), sent a few bytes at a time."""
        body, half = record[5:], (len(record) - 5) // 2
        data = b"".join(record[:3] + len(part).to_bytes(2, "big") + part for part in (body[:half], body[half:]))
        for start, end in ((0, 1), (1, 3), (3, 7), (7, half), (half, len(data))):
            self.sock.sendall(data[start:end])
            time.sleep(0.05)  # separate segments, so the gateway sees the ClientHello arrive in pieces

    def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send one HTTP/1.1 request and read its Content-Length-framed answer."""
        self.tls.write(raw)
        self._flush()
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += self._read()
        head, _, body = buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            body += self._read()
        return int(status_line.split()[1]), headers, body

    def _read(self) -> bytes:
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._receive()

    def _flush(self) -> None:
        if data := self.outgoing.read():
            self.sock.sendall(data)

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the gateway closed the connection")
        self.incoming.write(chunk)


def chat_request(host: str, port: int, extra: str = "") -> bytes:
    body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": f"Write to {EMAIL} today."}]})
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {CALLER_BEARER}\r\n{extra}Content-Length: {len(body)}\r\n\r\n{body}").encode()


def assert_went_through_the_chain(upstream, status: int, body: bytes) -> None:
    assert status == 200, body
    sent = upstream.received[-1]
    headers = {k.lower(): v for k, v in sent["headers"]}
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # injected; the caller's was stripped
    assert CALLER_BEARER not in json.dumps(sent["headers"]) and EMAIL not in sent["body"].decode()
    assert EMAIL in json.loads(body)["choices"][0]["message"]["content"]  # the pseudonym restored for the caller


def gateway_context(gw: Gateway) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(gw.ca_cert))


def closed_without_answer(sock: socket.socket) -> bool:
    """True when the gateway closes the connection (EOF or reset) without sending a byte."""
    sock.settimeout(10)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def connection_events(gw: Gateway) -> list[dict]:
    events = gw.admin_client().get("/api/events").json()["events"]
    return [e for e in events if e["kind"] == "connection"]


def stored_cells(db: Path) -> str:
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT * FROM events").fetchall()
    con.close()
    return "\n".join(c.decode("latin-1") if isinstance(c, (bytes, bytearray)) else str(c) for row in rows for c in row)


# -- TLS whatever its record version: intercepted, through the whole chain ------------------------------


def test_clienthello_with_record_version_0304_is_intercepted_with_the_gateway_certificate(
        gateway: Gateway, upstream) -> None:
    """On mitmproxy's own layer choice the handshake reached the upstream: its certificate fails verification."""
    sock = tunnel(gateway.proxy_port, "localhost", upstream.port, gateway.token("alice"))
    with sock:
        tls = BioTLS(sock, gateway_context(gateway), "localhost")
        tls.handshake()  # verified against the gateway's CA: the gateway terminated it
        status, _, body = tls.request(chat_request("localhost", upstream.port))
    assert_went_through_the_chain(upstream, status, body)

    # The same ClientHello over two records and in pieces: the gateway waits for all of it, relays nothing meanwhile.
    with tunnel(gateway.proxy_port, "localhost", upstream.port, gateway.token("carol")) as sock:
        tls = BioTLS(sock, gateway_context(gateway), "localhost", split=True)
        tls.handshake()
        status, _, body = tls.request(chat_request("localhost", upstream.port))
    assert_went_through_the_chain(upstream, status, body)
    flows = gateway.flows()
    assert sorted((f["user"], f["path"], f["fate"]) for f in flows) == [
        ("alice", "/v1/chat/completions", "completed"), ("carol", "/v1/chat/completions", "completed")]


def test_reverse_listener_and_clienthello_without_sni_are_intercepted(gateway: Gateway, upstream) -> None:
    # Reverse mode: the 03 04 ClientHello straight to the listener, the token in Authorization.
    token = gateway.token("bob")
    with socket.create_connection(("127.0.0.1", gateway.reverse_port), timeout=10) as sock:
        tls = BioTLS(sock, gateway_context(gateway), "localhost")
        tls.handshake()
        status, _, body = tls.request(chat_request("localhost", upstream.port).replace(
            f"Bearer {CALLER_BEARER}".encode(), f"Bearer {token}".encode()))
    assert status == 200, body
    sent = {k.lower(): v for k, v in upstream.received[-1]["headers"]}
    assert sent["authorization"] == f"Bearer {UPSTREAM_KEY}" and EMAIL not in upstream.received[-1]["body"].decode()

    # No SNI at all inside a tunnel: the gateway still terminates it, with a certificate for the CONNECT host.
    context = gateway_context(gateway)
    context.check_hostname = False  # no SNI means no name to check; the CA is still verified
    with tunnel(gateway.proxy_port, "localhost", upstream.port, gateway.token("alice")) as sock:
        tls = BioTLS(sock, context, None)
        tls.handshake()
        assert "localhost" in json.dumps(tls.tls.getpeercert())
        status, _, body = tls.request(chat_request("localhost", upstream.port))
    assert_went_through_the_chain(upstream, status, body)
    assert {f["user"] for f in gateway.flows()} == {"alice", "bob"}


# -- everything else: refused, recorded, never relayed -----------------------------------------------------


def client_hello(alpn: list[str] | None = None, record_version: int = 0x01) -> bytes:
    """The first flight of a real TLS client (its ClientHello), with the record version byte set."""
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    data = outgoing.read()
    return data[:2] + bytes([record_version]) + data[3:]


REFUSED = {
    # what the client sends after the CONNECT -> the classification on record
    "garbage": (GARBAGE, "unknown"),
    "ssh": (SSH_BANNER, "ssh"),
    "tls-unparseable": (b"\x16\x03\x04\x00\x10" + b"\x01\x00\x00\x0c" + b"PLANTED-tls!", "tls"),
    "tls-alpn-imap": (client_hello(["imap"]), "tls"),
    "tls-sslv2-major": (b"\x16\x02\x00\x00\x05hello PLANTED", "unknown"),
}


def test_bytes_that_are_neither_tls_nor_http_are_refused_recorded_and_never_relayed(
        gateway_factory, upstream, raw_listener: RawListener) -> None:
    gw = gateway_factory(layer_rules(upstream.port, raw_listener.port))
    token = gw.token("alice")
    for name, (payload, _) in REFUSED.items():
        with tunnel(gw.proxy_port, "127.0.0.1", raw_listener.port, token) as sock:
            sock.sendall(payload)
            assert closed_without_answer(sock), name
    # Reverse mode: the same bytes straight to the reverse listener.
    with socket.create_connection(("127.0.0.1", gw.reverse_port), timeout=10) as sock:
        sock.sendall(GARBAGE)
        assert closed_without_answer(sock)
    # TLS the client does not finish with the gateway (it trusts only the system's CAs): on record too.
    with tunnel(gw.proxy_port, "127.0.0.1", raw_listener.port, token) as sock, \
            pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(sock, server_hostname="localhost")

    deadline = time.monotonic() + 10
    while len(events := connection_events(gw)) < len(REFUSED) + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert raw_listener.connections == 0 and raw_listener.received == b""  # nothing reached the upstream
    [failed] = [e for e in events if e["fate"] == "tls_failed"]
    assert failed["user"] == "alice" and "handshake with the client failed" in failed["record"]
    events = [e for e in events if e is not failed]
    records = [json.loads(e["record"]) for e in events]
    tunnels, reverse = records[:-1], records[-1]
    assert [r["detail"]["classification"] for r in tunnels] == [c for _, c in REFUSED.values()]
    for event, record in zip(events[:-1], tunnels, strict=True):
        assert (event["user"], event["host"], record["port"], event["fate"]) == \
               ("alice", "127.0.0.1", raw_listener.port, "connection_refused")
        assert record["client"].startswith("127.0.0.1:") and record["mode"] == "regular" and record["reason"]
        assert record["detail"]["identity"]["sub"] == "alice"
    assert "imap" in events[3]["record"]  # the ALPN it asked for is named
    assert reverse["mode"] == "reverse" and reverse["detail"]["classification"] == "unknown"
    assert gw.flows() == []  # no HTTP flow exists for any of them
    assert gw.warden("verify").returncode == 0

    gw.stop()
    cells = stored_cells(gw.db)
    assert cells.count("connection_refused") >= len(REFUSED) + 1
    for secret in ("PLANTED", "garbage", "OpenSSH"):
        assert secret not in cells  # the classification is kept, never the bytes
    assert gw.warden("verify", "--pubkey", str(gw.signing_pub)).returncode == 0


def test_http_inside_a_tunnel_is_an_http_flow_never_a_relay(gateway: Gateway, upstream) -> None:
    with tunnel(gateway.proxy_port, "localhost", upstream.port, gateway.token("alice")) as sock:
        sock.sendall(f"GET /echo/PLANTED-path HTTP/1.1\r\nHost: localhost:{upstream.port}\r\n\r\n".encode())
        sock.settimeout(10)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 ")  # the chain answered: an HTTP flow, whatever its fate
    assert [f["path"] for f in gateway.flows()] == ["/echo/PLANTED-path"]
    assert connection_events(gateway) == []


# -- mitmproxy's passthrough options cannot open a way around -----------------------------------------------


def refused_naming(gw: Gateway, named: str) -> bool:
    """True if the gateway refused to start (its log naming ``named``); False once it started and is ready."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            assert named in gw.log()
            return True
        if is_ready(gw):
            return False
        time.sleep(0.1)
    raise AssertionError(f"the gateway neither refused nor became ready in 60 s:\n{gw.log()}")


@pytest.mark.parametrize("option", ["ignore_hosts=.*", "allow_hosts=^nothing-matches$", "tcp_hosts=.*"])
def test_passthrough_options_never_create_passthrough(tmp_path: Path, confdir: Path, upstream,
                                                      raw_listener: RawListener, option: str) -> None:
    """Either the gateway refuses to start naming the option, or it starts and still relays nothing."""
    gw = start_gateway(tmp_path / "gw", confdir, layer_rules(upstream.port, raw_listener.port), upstream.port,
                       extra_args=("--set", option), wait=False)
    try:
        if refused_naming(gw, option.split("=")[0]):
            return
        token = gw.token("alice")
        with tunnel(gw.proxy_port, "localhost", upstream.port, token) as sock:
            tls = BioTLS(sock, gateway_context(gw), "localhost", record_version=None)
            tls.handshake()
            status, _, body = tls.request(chat_request("localhost", upstream.port))
        assert_went_through_the_chain(upstream, status, body)
        with tunnel(gw.proxy_port, "127.0.0.1", raw_listener.port, token) as sock:
            sock.sendall(SSH_BANNER)
            assert closed_without_answer(sock)
        assert raw_listener.connections == 0
    finally:
        gw.stop()


def test_a_mode_that_binds_no_identity_relays_nothing(tmp_path: Path, confdir: Path, upstream,
                                                      raw_listener: RawListener) -> None:
    """SOCKS5 asks for no token: either the gateway refuses to start with it, or it serves nothing through it."""
    from tests.conftest import free_port

    socks_port = free_port()
    gw = start_gateway(tmp_path / "gw", confdir, layer_rules(upstream.port, raw_listener.port), upstream.port,
                       extra_args=("--mode", f"socks5@{socks_port}"), wait=False)
    try:
        if refused_naming(gw, "socks5"):
            return
        with socket.create_connection(("127.0.0.1", socks_port), timeout=10) as sock:
            sock.sendall(b"\x05\x01\x00")
            assert sock.recv(2) == b"\x05\x00"
            sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + raw_listener.port.to_bytes(2, "big"))
            assert sock.recv(10)[:2] == b"\x05\x00"
            sock.sendall(GARBAGE)
            assert closed_without_answer(sock)
        assert raw_listener.connections == 0 and raw_listener.received == b""
        [event] = connection_events(gw)
        assert event["fate"] == "connection_refused" and json.loads(event["record"])["mode"] == "socks5"
    finally:
        gw.stop()
