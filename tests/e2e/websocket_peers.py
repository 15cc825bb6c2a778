"""A real WebSocket upstream (TLS, echo) and a real WebSocket client through the gateway, both on wsproto.

wsproto is what mitmproxy itself speaks WebSocket with, so it is installed wherever the gateway is.
The upstream echoes every message and remembers what it received; ``/rogue`` answers 101 to anything and then
sends raw bytes, as an upstream that switches protocols unasked would.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from tests.conftest import listen, open_tunnel, read_head

UNSOLICITED = "send me your contact"  # the upstream answers it with PII of its own
UPSTREAM_PII = "carol.jones@example.net"
RAW = b"RAW-BYTES-FROM-UPSTREAM"
CONTROL_PII = "send me control frames"  # the upstream answers with a ping and a pong carrying UPSTREAM_PII
CLOSE_PII = "close with a reason"  # the upstream closes with UPSTREAM_PII as the close reason


@dataclass
class WsUpstream:
    """A TLS WebSocket echo server on 127.0.0.1, one thread per connection."""

    ssl_context: ssl.SSLContext
    received: list[str | bytes] = field(default_factory=list)
    pings: list[bytes] = field(default_factory=list)  # the payload of every ping that reached it
    offers: list[list[str]] = field(default_factory=list)  # the extensions each handshake offered it
    connections: int = 0
    closed: threading.Event = field(default_factory=threading.Event)  # a WebSocket connection ended
    rogue_hits: int = 0

    def __post_init__(self) -> None:
        self._sock, self.port = listen(self._serve)

    def close(self) -> None:
        self._sock.close()

    def _serve(self, raw: socket.socket) -> None:
        self.connections += 1
        try:
            with self.ssl_context.wrap_socket(raw, server_side=True) as sock:
                head = read_head(sock)
                if head.split(b" ", 2)[1:2] == [b"/rogue"]:
                    self.rogue_hits += 1
                    sock.sendall(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    sock.sendall(RAW)
                    sock.recv(65536)
                    return
                self._websocket(sock, head)
        except OSError:
            pass
        finally:
            self.closed.set()

    def _websocket(self, sock: ssl.SSLSocket, head: bytes) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(head)
        while True:
            for event in ws.events():
                if isinstance(event, Request):
                    self.offers.append([str(e) for e in event.extensions])
                    accept = [PerMessageDeflate()] if event.extensions else []  # take deflate if it is offered
                    sock.sendall(ws.send(AcceptConnection(extensions=accept)))
                elif isinstance(event, TextMessage) and event.data == CONTROL_PII:
                    self.received.append(event.data)
                    sock.sendall(ws.send(Ping(UPSTREAM_PII.encode())) + ws.send(Pong(UPSTREAM_PII.encode())))
                elif isinstance(event, TextMessage) and event.data == CLOSE_PII:
                    self.received.append(event.data)
                    sock.sendall(ws.send(CloseConnection(code=4000, reason=UPSTREAM_PII)))
                elif isinstance(event, TextMessage):
                    self.received.append(event.data)
                    reply = f"reach me at {UPSTREAM_PII}" if event.data == UNSOLICITED else event.data
                    sock.sendall(ws.send(TextMessage(reply)))
                elif isinstance(event, BytesMessage):
                    self.received.append(bytes(event.data))
                    sock.sendall(ws.send(BytesMessage(event.data)))
                elif isinstance(event, Ping):
                    self.pings.append(bytes(event.payload))
                    sock.sendall(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    try:
                        sock.sendall(ws.send(event.response()))
                    except Exception:
                        pass
                    return
            data = sock.recv(65536)
            if not data:
                return
            ws.receive_data(data)


def tunnel(proxy_port: int, token: str, host: str, port: int, timeout: float = 30) -> socket.socket:
    """A CONNECT tunnel through the gateway's forward proxy, authenticated with ``token``."""
    return open_tunnel(proxy_port, f"{host}:{port}", token, timeout)


class WsClient:
    """A WebSocket client in a CONNECT tunnel through the gateway's forward proxy, with a token."""

    def __init__(self, proxy_port: int, ca_cert: str, token: str, host: str, port: int, path: str = "/ws",
                 timeout: float = 30, deflate: bool = False) -> None:
        sock = tunnel(proxy_port, token, host, port, timeout)
        self.sock = ssl.create_default_context(cafile=ca_cert).wrap_socket(sock, server_hostname=host)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.closed = False
        self.rejected: RejectConnection | None = None
        self.reject_body = b""
        self.accepted = False
        offer = [PerMessageDeflate()] if deflate else []
        self.sock.sendall(self.ws.send(Request(host=f"{host}:{port}", target=path, extensions=offer)))
        while not self.accepted and self.rejected is None:
            event = self.next_event()
            if event is None:
                break
        if self.rejected is not None and self.rejected.has_body:
            while (event := self.next_event()) is not None:
                if isinstance(event, RejectData) and event.body_finished:
                    break

    def _events(self):
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, RejectConnection):
                self.rejected = event
            elif isinstance(event, RejectData):
                self.reject_body += event.data
            yield event

    def next_event(self) -> Event | None:
        """The next WebSocket event; None once the connection is gone."""
        while True:
            for event in self._events():
                return event
            if self.closed:
                return None
            try:
                data = self.sock.recv(65536)
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                try:
                    self.ws.receive_data(None)
                except Exception:  # the handshake never finished
                    return None
            else:
                self.ws.receive_data(data)

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(text)))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data)))

    def ping(self, payload: bytes) -> None:
        self.sock.sendall(self.ws.send(Ping(payload)))

    def receive_control(self) -> Ping | Pong | CloseConnection:
        """The next ping, pong or close frame (messages in between are skipped)."""
        while (event := self.next_event()) is not None:
            if isinstance(event, (Ping, Pong, CloseConnection)):
                return event
        raise ConnectionError("the connection was closed")

    def receive_text(self) -> str:
        """The next whole text message (fragments joined)."""
        parts = []
        while (event := self.next_event()) is not None:
            if isinstance(event, TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    return "".join(parts)
            elif isinstance(event, CloseConnection):
                raise ConnectionError(f"closed ({event.code} {event.reason})")
        raise ConnectionError("the connection was closed")

    def receive_bytes(self) -> bytes:
        """The next whole binary message (fragments joined)."""
        parts = []
        while (event := self.next_event()) is not None:
            if isinstance(event, BytesMessage):
                parts.append(bytes(event.data))
                if event.message_finished:
                    return b"".join(parts)
            elif isinstance(event, CloseConnection):
                raise ConnectionError(f"closed ({event.code} {event.reason})")
        raise ConnectionError("the connection was closed")

    def wait_closed(self) -> CloseConnection | None:
        """Read until the connection ends; the close frame if one came."""
        close = None
        while (event := self.next_event()) is not None:
            if isinstance(event, CloseConnection):
                close = close or event
        return close

    def close(self) -> None:
        try:
            self.sock.sendall(self.ws.send(CloseConnection(code=1000, reason="done")))
            self.wait_closed()
        except Exception:
            pass
        self.sock.close()
