"""Layers: the gateway chooses every protocol layer itself, and refuses what it cannot inspect.

mitmproxy's own ``NextLayer`` relays as raw TCP whatever it does not recognise as TLS or HTTP (a
ClientHello whose record version byte is ``03 04``, an SSH session, any other bytes), and honours
``ignore_hosts``, ``allow_hosts``, ``tcp_hosts``, ``udp_hosts`` and ``rawtcp``, each a way around the
chain. So this addon takes ``NextLayer`` out of the addon chain when it loads and decides alone:

- TLS the gateway can terminate is intercepted whatever its record version byte (the ClientHello's
  record headers are normalised to ``03 03`` before mitmproxy's TLS layer reads them);
- HTTP goes to the HTTP layer, so to the chain;
- everything else (TLS it cannot parse, TLS offering no HTTP ALPN, TLS inside TLS, SSH, unknown bytes,
  UDP, modes that bind no identity) is refused: the client connection is closed, the upstream is never
  opened, and the refusal is committed to the store as a ``connection`` event (client, CONNECT target,
  the identity bound to the tunnel, what the first bytes were; never the bytes).

A client whose TLS handshake with the gateway fails (it does not trust the gateway's CA, no common
version) is recorded the same way: nothing reaches the upstream from it either.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass

from mitmproxy import connection, ctx, tls
from mitmproxy.proxy import commands, events, layer, mode_specs, tunnel
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import ClientTLSLayer, HttpLayer, ServerTLSLayer, modes
from mitmproxy.proxy.layers.http import HTTPMode, HttpStream
from mitmproxy.proxy.layers.tls import HTTP1_ALPNS, HTTP2_ALPN, parse_client_hello

from addons.store.events import Event

log = logging.getLogger("warden.layers")

MAX_CLIENT_HELLO = 64 * 1024  # bytes buffered while a ClientHello arrives; real ones are a few KiB
MAX_METHOD = 20  # letters an HTTP method may have before its space ("PRI" for HTTP/2, "PROPFIND", ...)
HTTP_ALPNS = (HTTP2_ALPN, *HTTP1_ALPNS)  # what the gateway speaks over TCP
REFUSED = "connection_refused"
TLS_FAILED = "tls_failed"
_METHOD = re.compile(rb"[A-Za-z]{3,%d} " % MAX_METHOD)


@dataclass(frozen=True)
class FirstBytes:
    """What a connection's first bytes are, for the decision and the record (never the bytes themselves)."""

    protocol: str  # tls | http | ssh | unknown
    problem: str | None = None  # why the gateway cannot serve it; None when it can
    hello: tls.ClientHello | None = None
    data: bytes = b""  # TLS only: the client's bytes as mitmproxy's TLS layer is to read them


def _client_hello_end(data: bytes) -> int | None:
    """Where the records holding the whole ClientHello end, accepting any ``03 xx`` record version.

    None while more bytes are needed; ValueError when the bytes are not TLS handshake records."""
    offset, handshake = 0, b""
    while True:
        if len(data) < offset + 5:
            return None
        if data[offset] != 0x16 or data[offset + 1] != 0x03:
            raise ValueError("not a TLS handshake record")
        size = int.from_bytes(data[offset + 3 : offset + 5], "big")
        if size == 0:
            raise ValueError("an empty TLS record")
        if len(data) < offset + 5 + size:
            return None
        handshake += data[offset + 5 : offset + 5 + size]
        offset += 5 + size
        if handshake[0] != 0x01:
            raise ValueError("the first handshake message is not a ClientHello")
        if len(handshake) >= 4:
            announced = int.from_bytes(handshake[1:4], "big") + 4
            if announced > MAX_CLIENT_HELLO:
                raise ValueError(f"the ClientHello announces {announced} bytes, more than {MAX_CLIENT_HELLO}")
            if len(handshake) >= announced:
                return offset


def normalise_records(data: bytes, end: int) -> bytes:
    """``data`` with the record version of the ClientHello's records (up to ``end``) capped at ``03 03``.

    Only the record layer changes: the handshake transcript covers the messages, not record headers."""
    out, offset = bytearray(data), 0
    while offset < end:
        out[offset + 2] = min(out[offset + 2], 0x03)
        offset += 5 + int.from_bytes(out[offset + 3 : offset + 5], "big")
    return bytes(out)


def classify_tls(data: bytes) -> FirstBytes | None:
    """A TLS ClientHello, whatever its record version byte; None until all of it has arrived."""
    try:
        end = _client_hello_end(data)
    except ValueError as e:
        return FirstBytes("tls", f"the TLS records do not parse ({e})")
    if end is None:
        if len(data) > MAX_CLIENT_HELLO:
            return FirstBytes("tls", f"the ClientHello is larger than {MAX_CLIENT_HELLO} bytes")
        return None
    normalised = normalise_records(data, end)
    try:
        hello = parse_client_hello(normalised)
    except ValueError:
        return FirstBytes("tls", "the ClientHello does not parse")
    if hello is None:  # cannot happen once the records are complete; fail closed all the same
        return FirstBytes("tls", "the ClientHello is incomplete")
    offers = hello.alpn_protocols
    if offers and not any(alpn in HTTP_ALPNS for alpn in offers):
        names = ", ".join(a.decode("ascii", "replace")[:32] for a in offers[:8])
        return FirstBytes("tls", f"the client offers only ALPN {names}; the gateway speaks HTTP/1.1 and HTTP/2",
                          hello=hello)
    return FirstBytes("tls", hello=hello, data=normalised)


def classify(data: bytes) -> FirstBytes | None:
    """What the first bytes of a TCP stream are; None while more bytes are needed to tell."""
    if data[:1] == b"\x16":
        if len(data) < 2:
            return None
        if data[1] == 0x03:
            return classify_tls(data)
    if data.startswith(b"SSH-"):
        return FirstBytes("ssh", "an SSH session: the gateway carries only HTTP, in the clear or in TLS it terminates")
    if _METHOD.match(data):
        return FirstBytes("http")
    if len(data) <= MAX_METHOD and data.isalpha():
        return None  # the start of an HTTP method, or not
    return FirstBytes("unknown", "bytes that are neither TLS nor HTTP: the gateway relays nothing it cannot inspect")


class Refusal(layer.Layer):
    """Closes the client connection at its first event; the upstream connection is never opened."""

    closed = False

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if not self.closed:
            self.closed = True
            if self.context.server.connected:
                yield commands.CloseConnection(self.context.server)
            yield commands.CloseConnection(self.context.client)


class Layers:
    def load(self, loader) -> None:
        # Taken out, not outvoted: while this hook waits for more bytes, NextLayer would decide alone.
        if (builtin := ctx.master.addons.get("nextlayer")) is not None:
            ctx.master.addons.remove(builtin)

    async def next_layer(self, nextlayer: layer.NextLayer) -> None:
        if nextlayer.layer is not None:
            return
        context = nextlayer.context
        try:
            where = position(context)
            if where is None:
                await self._refuse(nextlayer, "unsupported", f"a {mode_name(context)} connection "
                                   f"(stack {context.layers!r}): the gateway serves the regular and reverse modes only")
                return
            if context.client.transport_protocol != "tcp":
                await self._refuse(nextlayer, "udp", "UDP (DNS, QUIC, HTTP/3): the gateway carries only TCP")
                return
            first = classify(nextlayer.data_client())
            if first is None:
                return  # wait for more bytes; nothing else decides meanwhile
            if first.problem is not None:
                await self._refuse(nextlayer, first.protocol, first.problem, first.hello)
            elif first.protocol == "tls" and where == "tunnel-tls":
                await self._refuse(nextlayer, "tls", "TLS inside the TLS the gateway terminated", first.hello)
            elif first.protocol == "tls":
                _replace_client_data(nextlayer, first.data)
                nextlayer.layer = tls_stack(context, where)
            else:
                nextlayer.layer = http_stack(context, where)
        except Exception as e:  # fail closed: a layer nobody chose must not become a relay
            log.error("warden: choosing the layer for %s failed: %r", context.client.peername, e, exc_info=e)
            if nextlayer.layer is None:
                nextlayer.layer = Refusal(context)

    async def tls_failed_client(self, data: tls.TlsData) -> None:
        error = data.conn.error or "unknown error"
        if error.startswith("Cannot parse ClientHello"):
            error = "the ClientHello does not parse"  # mitmproxy's message carries the bytes
        await self._record(data.context, "tls", f"the TLS handshake with the client failed: {error[:300]}",
                           fate=TLS_FAILED)

    async def _refuse(self, nextlayer: layer.NextLayer, protocol: str, reason: str,
                      hello: tls.ClientHello | None = None) -> None:
        try:
            await self._record(nextlayer.context, protocol, reason, hello=hello)
        finally:
            nextlayer.layer = Refusal(nextlayer.context)

    async def _record(self, context: Context, protocol: str, reason: str, *, fate: str = REFUSED,
                      hello: tls.ClientHello | None = None) -> None:
        event = connection_event(context, protocol, reason, fate, hello, self._identity(context.client))
        log.warning("warden: refused %s connection from %s to %s: %s", protocol, event.client,
                    f"{event.host}:{event.port}", reason)
        try:
            await ctx.master.addons.get("recorder").commit(event)
        except Exception as e:  # the connection is refused either way
            log.error("warden: the refusal above could not be recorded: %r", e)

    @staticmethod
    def _identity(client: connection.Client) -> dict | None:
        gate = ctx.master.addons.get("identitygate")
        identity = gate.tunnels.lookup(client) if gate is not None else None
        return dataclasses.asdict(identity) if identity is not None else None


def position(context: Context) -> str | None:
    """Where in which mode's stack the next layer goes; None for anything the gateway does not serve."""
    stack = context.layers
    if len(stack) == 1 and isinstance(stack[0], modes.HttpProxy):
        return "proxy"  # the client's first bytes to the regular listener
    if len(stack) == 1 and isinstance(stack[0], modes.ReverseProxy):
        scheme = getattr(context.client.proxy_mode, "scheme", None)
        return f"reverse-{scheme}" if scheme in ("http", "https") else None
    if not isinstance(stack[0], modes.HttpProxy):
        return None
    connect = getattr(stack[-1], "flow", None) if isinstance(stack[-1], HttpStream) else None
    if connect is not None and connect.request.method == "CONNECT":
        return "tunnel"  # inside a CONNECT the identity and policy addons allowed
    if (len(stack) >= 3 and isinstance(stack[-1], ClientTLSLayer) and isinstance(stack[-2], ServerTLSLayer)
            and isinstance(stack[-3], HttpStream)):
        return "tunnel-tls"  # inside the TLS the gateway terminated in a tunnel
    return None


def tls_stack(context: Context, where: str) -> layer.Layer:
    """The layers mitmproxy gives a ``16 03 01`` ClientHello at this position."""
    stack = tunnel.LayerStack()
    if where == "proxy":  # TLS to the proxy itself (a secure web proxy)
        stack /= ClientTLSLayer(context)
        stack /= HttpLayer(context, HTTPMode.regular)
    elif where == "tunnel":
        stack /= ServerTLSLayer(context)
        stack /= ClientTLSLayer(context)
    elif where == "reverse-https":
        stack /= ServerTLSLayer(context)
        stack /= ClientTLSLayer(context)
        stack /= HttpLayer(context, HTTPMode.transparent)
    else:  # reverse-http
        stack /= ClientTLSLayer(context)
        stack /= HttpLayer(context, HTTPMode.transparent)
    return stack[0]


def http_stack(context: Context, where: str) -> layer.Layer:
    """The HTTP layer for cleartext HTTP at this position."""
    if where == "proxy":
        return HttpLayer(context, HTTPMode.regular)
    stack = tunnel.LayerStack()
    if where == "reverse-https":
        stack /= ServerTLSLayer(context)
    stack /= HttpLayer(context, HTTPMode.transparent)
    return stack[0]


def _replace_client_data(nextlayer: layer.NextLayer, data: bytes) -> None:
    """Hand the TLS layer the normalised bytes in place of what the client sent (same order, one event)."""
    client = nextlayer.context.client
    kept = [e for e in nextlayer.events if not (isinstance(e, events.DataReceived) and e.connection == client)]
    nextlayer.events[:] = [*kept, events.DataReceived(client, data)]


def mode_name(context: Context) -> str:
    mode = context.client.proxy_mode
    return mode.type_name if isinstance(mode, mode_specs.ProxyMode) else "unknown"


def connection_event(context: Context, protocol: str, reason: str, fate: str, hello: tls.ClientHello | None,
                     identity: dict | None) -> Event:
    """The record of a refused connection: who, from where, to where, what its first bytes were, why."""
    peer = context.client.peername
    host, port = (context.server.address or (None, None))[:2]
    detail: dict[str, object] = {"classification": protocol, "connection": context.client.id}
    if identity is not None:
        detail["identity"] = identity
    if hello is not None:
        detail["sni"] = (hello.sni or "")[:253] or None
        detail["alpn_offers"] = [a.decode("ascii", "replace")[:32] for a in hello.alpn_protocols[:8]]
    return Event(
        kind="connection", flow_id=context.client.id, user=identity["sub"] if identity else None,
        client=f"{peer[0]}:{peer[1]}" if peer else None, mode=mode_name(context), host=host, port=port,
        fate=fate, reason=reason, detail=detail,
    )
