"""WebSocket: an upgrade is refused unless its upstream opts in, and an opted-in session is masked, recorded and
closed when its token expires.

After credentials, before the recorder. An upgrade request (``Upgrade: websocket``, or the handshake's
``Sec-WebSocket-*`` headers) to an upstream without ``websocket: true`` is refused (403
``websocket_not_allowed``) before anything leaves; an upstream that answers 101 to a request that was not
allowed to upgrade gets the flow killed, never relayed. In an allowed session every message is held while it is
masked (text, and a binary message whose bytes are UTF-8 text: the PII addon's analyzer and the flow's pseudonym
vault; other binary: ``masking.unknown_content``, and when passed it is recorded by its size, its bytes kept only
as the encrypted original) and committed to the store as a ``websocket`` event, then relayed. Anything that
fails closes the connection.

mitmproxy 12 gives addons no way to close a live WebSocket (``flow.kill()`` does nothing to one, and
``inject.websocket`` sends only text or binary messages: mitmproxy issue #4773). The gateway closes the client's
connection as mitmproxy's own inactivity timeout does, through its connection handler; the WebSocket layer then
closes the upstream's side and the ``websocket_end`` hook records the close with the gateway's reason.

Control frames have no hook either: mitmproxy's WebSocket layer relays a ping's or pong's payload (and logs it
at INFO) and a close frame's reason text, a channel around masking and the record. The layer reads every frame
through its ``WebsocketConnection`` class; ``load()`` puts ``WardenConnection`` in its place, which hands
the layer each ping, pong and close without its payload, so a ping still gets a pong and a close still closes,
and no byte of the payload crosses or is logged. Only the dropped sizes are recorded, on the session's close.

A message over ``warden_max_body`` bytes is not relayed: ``WardenConnection`` counts a message as its pieces
arrive and, past the limit, hands the layer a close (1009) instead of the rest, so the layer never buffers
more; the close is recorded ``message_too_large``. ``websocket_message`` checks the size again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import wsproto.events
import wsproto.frame_protocol
from mitmproxy import ctx, http
from mitmproxy.proxy.layers import websocket as websocket_layer
from mitmproxy.websocket import WebSocketMessage

from addons.flow.answers import cut, fail_closed, refuse
from addons.flow.errors import (
    MessageTooLarge,
    NotConfigured,
    UnsupportedContent,
    UpgradeRefused,
    WardenError,
    WebSocketNotAllowed,
)
from addons.flow.meta import IDENTITY, PII, UPSTREAM, Finding, PiiOutcome
from addons.masking.payloads.encoded import utf8_text
from addons.rules.model import Rules, current_rules
from addons.store.events import Event

log = logging.getLogger("warden.websocket")
MAX_FINDINGS = 1000  # per event; the counts stay complete


def wants_upgrade(request: http.Request) -> bool:
    """Whether ``request`` asks for a WebSocket, by any of the handshake's headers (any case, any list position)."""
    upgrade = {token.strip().lower() for token in request.headers.get_all("upgrade") for token in token.split(",")}
    return "websocket" in upgrade or any(h in request.headers for h in ("sec-websocket-key", "sec-websocket-version"))


def expiry(flow: http.HTTPFlow, leeway: int) -> float | None:
    """When the flow's token stops being good (``exp`` plus the identity config's leeway), or None."""
    identity = IDENTITY.of(flow)
    return None if identity is None or identity.expires is None else identity.expires + leeway


# mitmproxy's own class, even if this module is imported again while WardenConnection is in its place
MITMPROXY_CONNECTION: type[websocket_layer.WebsocketConnection] = next(
    c for c in websocket_layer.WebsocketConnection.__mro__ if c.__module__ == websocket_layer.__name__)


class WardenConnection(MITMPROXY_CONNECTION):  # type: ignore[misc, valid-type]  # a base found at run time
    """mitmproxy's WebSocket connection, handing its layer every ping and pong with an empty payload, every
    close without a reason (the code is kept), and a close (1009) instead of the rest of a message once it is
    over ``warden_max_body`` bytes.

    The layer relays (and logs) what it gets from ``events()``, so nothing of a control frame's payload crosses
    the gateway or reaches the log, and no message grows past the limit in its buffer (wsproto hands data
    frames on in pieces as they arrive). The WebSocket addon is told each dropped payload's size, never its
    bytes, and why it closed a session.
    """

    message_size = 0  # bytes of the message being received so far

    def events(self) -> Iterator[wsproto.events.Event]:
        for event in super().events():
            if isinstance(event, (wsproto.events.Ping, wsproto.events.Pong)) and event.payload:
                self._addon().control_dropped(self.conn.id, "control", len(event.payload))
                event = type(event)(payload=b"")
            elif isinstance(event, wsproto.events.CloseConnection) and event.reason:
                self._addon().control_dropped(self.conn.id, "close_reason", len(event.reason.encode()))
                event = wsproto.events.CloseConnection(code=event.code, reason=None)
            elif isinstance(event, wsproto.events.Message):
                data = event.data
                self.message_size += len(data.encode() if isinstance(data, str) else data)
                if self.message_size > ctx.options.warden_max_body:
                    self._addon().too_large(self.conn.id, self.message_size)
                    yield wsproto.events.CloseConnection(code=wsproto.frame_protocol.CloseReason.MESSAGE_TOO_BIG)
                    return  # the layer closes both sides on it; the rest is never read into a message
                if event.message_finished:
                    self.message_size = 0
            yield event

    @staticmethod
    def _addon() -> WebSocket:
        return ctx.master.addons.get("websocket")


@dataclass
class Session:
    """One allowed WebSocket: its upstream, its token's end, and why the gateway closed it (if it did)."""

    upstream: str
    expires_at: float | None = None
    messages: int = 0
    dropped: int = 0
    control_dropped: int = 0  # pings and pongs whose payload was dropped, and those payloads' bytes
    control_bytes: int = 0
    close_reason_size: int = 0
    client_id: str = ""  # the client's connection id
    closed_as: tuple[str, str] | None = None  # (fate, reason) when the gateway closed it
    timer: asyncio.TimerHandle | None = None


class WebSocket:
    def __init__(self) -> None:
        self.rules: Rules | None = None
        self.sessions: weakref.WeakKeyDictionary[http.HTTPFlow, Session] = weakref.WeakKeyDictionary()
        self.by_connection: dict[str, Session] = {}  # a live session by its client's and server's connection id

    def load(self, loader) -> None:
        # mitmproxy relays (and logs) ping/pong payloads and close reasons with no addon hook: empty them.
        websocket_layer.WebsocketConnection = WardenConnection  # type: ignore[misc]  # mypy cannot type a class swap

    def configure(self, updated: set[str]) -> None:
        if "warden_rules" in updated:
            self.rules = current_rules()

    def done(self) -> None:
        if websocket_layer.WebsocketConnection is WardenConnection:
            websocket_layer.WebsocketConnection = MITMPROXY_CONNECTION  # type: ignore[misc]  # as in load()
        for session in list(self.sessions.values()):
            if session.timer is not None:
                session.timer.cancel()

    # -- the handshake ----------------------------------------------------------------------------------

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or not wants_upgrade(flow.request):
            return
        if self.rules is None:
            refuse(flow, NotConfigured("the gateway has no valid rules loaded; see the operator log"))
            return
        upstream = self.rules.upstream_for(flow.request.host, flow.request.port)
        if upstream is None:
            return  # policy refuses the host itself
        if not upstream.websocket:
            refuse(flow, WebSocketNotAllowed(
                f"WebSocket upgrades to upstream {upstream.name!r} ({upstream.host}:{upstream.port}) are not allowed; "
                f"an operator may set 'websocket: true' on it in {self.rules.path}"
            ))
            return
        self.sessions[flow] = Session(upstream.name)
        # No permessage-deflate: wsproto would inflate each read without a bound before any message hook or limit.
        flow.request.headers.pop("sec-websocket-extensions", None)

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        if flow.response.status_code != 101:
            return
        plain = "sec-websocket-extensions" not in flow.response.headers  # the gateway offered no extension
        if flow in self.sessions and flow.websocket is not None and plain:
            return
        asked = ("an extension it was not offered" if flow in self.sessions and flow.websocket is not None else
                 "a WebSocket upgrade it does not allow" if flow in self.sessions else
                 "a request that did not ask for it")
        cut(flow, UpgradeRefused(
            f"the upstream switched protocols (101, Upgrade: {flow.response.headers.get('upgrade', '-')!r}) "
            f"for {asked}; the connection was cut and nothing was relayed"
        ))

    async def websocket_start(self, flow: http.HTTPFlow) -> None:
        session = self.sessions.get(flow)
        if session is None:  # cannot happen (the 101 was killed); fail closed all the same
            self._close(flow, Session("-"), "upgrade_refused", "the WebSocket was not allowed")
            return
        assert self.rules is not None
        session.expires_at = expiry(flow, self.rules.identity.leeway)
        self.by_connection[flow.client_conn.id] = self.by_connection[flow.server_conn.id] = session
        session.client_id = flow.client_conn.id
        try:
            await self._commit(self._event(flow, fate="open", reason=f"WebSocket to upstream {session.upstream}"))
        except Exception as e:
            self._close(flow, session, "recording_unavailable", f"the WebSocket's start could not be recorded ({e})")
            return
        if session.expires_at is not None:
            loop = asyncio.get_running_loop()
            session.timer = loop.call_later(max(session.expires_at - time.time(), 0), self._expire, flow)

    # -- messages ---------------------------------------------------------------------------------------

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        assert flow.websocket is not None
        message = flow.websocket.messages[-1]
        del flow.websocket.messages[:-1]  # mitmproxy keeps every message; the store is the record
        session = self.sessions.get(flow)
        if session is None or session.closed_as is not None:
            message.drop()
            if session is not None:
                session.dropped += 1
            return
        if session.expires_at is not None and time.time() >= session.expires_at:
            message.drop()
            self._close(flow, session, "token_expired", "the token expired; the WebSocket was closed")
            return
        try:
            await self._relay(flow, session, message)
        except WardenError as e:
            message.drop()
            self._close(flow, session, e.type, f"{e.message}; the WebSocket was closed")
        except Exception as e:
            message.drop()
            log.error("warden: WebSocket message on %s failed: %r", flow.request.pretty_host, e, exc_info=e)
            self._close(flow, session, "internal_error", "a message could not be masked or recorded (see the "
                                                         "gateway log); the WebSocket was closed")

    async def _relay(self, flow: http.HTTPFlow, session: Session, message: WebSocketMessage) -> None:
        """Mask ``message`` in place and commit its event; it is relayed only if this returns."""
        direction = "client_to_server" if message.from_client else "server_to_client"
        if len(message.content) > ctx.options.warden_max_body:
            raise MessageTooLarge(f"a {direction} message of {len(message.content)} bytes is over warden_max_body "
                                  f"({ctx.options.warden_max_body} bytes); it was not relayed")
        session.messages += 1
        detail: dict[str, object] = {"direction": direction, "type": "text" if message.is_text else "binary",
                                     "index": session.messages}
        event = self._event(flow, fate="relayed", detail=detail)
        recorder = ctx.master.addons.get("recorder")
        relayed: bytes | None = None
        # Many clients send JSON in binary frames: bytes that are UTF-8 text are masked as text, whatever the opcode.
        text = message.text if message.is_text else utf8_text(message.content)
        if text is not None:
            pii = ctx.master.addons.get("piimasking")
            masked, findings = await pii.mask_texts(flow, [text], response=not message.from_client)
            recorded = masked[0]  # as it left, or as the upstream sent it masked: never the caller's values
            relayed = (recorded if message.from_client else pii.vault_of(flow).restore(recorded)).encode()
            self._pii(event, detail, PII.of(flow), findings)
            if recorded != text:  # as for HTTP bodies: the message as it reached the gateway, encrypted
                detail["original"] = recorder.keep_original(event, text.encode(), flow.id)
            event.body = recorded.encode()
            event.body_size = len(event.body)
        else:
            assert self.rules is not None
            if self.rules.masking.unknown_content == "block":
                raise UnsupportedContent("a binary message cannot be inspected for PII, and "
                                         "masking.unknown_content is 'block'")
            # As an HTTP body masking did not read: its size on record, its bytes only as the (encrypted) original.
            detail["skipped"] = "binary message not inspected (masking.unknown_content: pass)"
            detail["body_withheld"] = f"not read for PII: {detail['skipped']}"
            detail["original"] = recorder.keep_original(event, message.content, flow.id)
            event.body_size = len(message.content)
        if session.expires_at is not None and time.time() >= session.expires_at:
            raise _TokenExpired("the token expired")
        await self._commit(event)
        if relayed is not None and relayed != message.content:
            message.content = relayed

    # -- the close --------------------------------------------------------------------------------------

    async def websocket_end(self, flow: http.HTTPFlow) -> None:
        session = self.sessions.pop(flow, None)
        if session is None:
            return
        for conn in (flow.client_conn, flow.server_conn):
            self.by_connection.pop(conn.id, None)
        if session.timer is not None:
            session.timer.cancel()
        ws = flow.websocket
        detail: dict[str, object] = {"messages": session.messages}
        if ws is not None:
            # The close frame's reason text is the peer's free text (it may carry PII): dropped, only its size kept.
            detail.update(close_code=ws.close_code, close_reason_size=session.close_reason_size,
                          closed_by="gateway" if session.closed_as else ("client" if ws.closed_by_client else "server"))
        if session.control_dropped:
            detail["control_payloads_dropped"] = {"count": session.control_dropped, "bytes": session.control_bytes}
        if session.dropped:
            detail["dropped_after_close"] = session.dropped
        fate, reason = session.closed_as or ("closed", f"closed by the {detail.get('closed_by', 'peer')}")
        try:
            await self._commit(self._event(flow, fate=fate, reason=reason, detail=detail))
        except Exception as e:
            log.error("warden: the close of WebSocket flow %s could not be recorded: %r", flow.id, e)

    def control_dropped(self, connection_id: str, kind: str, size: int) -> None:
        """``WardenConnection`` dropped a ping's or pong's payload (``control``) or a close reason."""
        session = self.by_connection.get(connection_id)
        if session is None:
            return  # not a session of ours (it cannot be: upgrades are ours to allow); the payload is gone all the same
        if kind == "close_reason":
            session.close_reason_size = size
        else:
            session.control_dropped += 1
            session.control_bytes += size

    def too_large(self, connection_id: str, size: int) -> None:
        """``WardenConnection`` stopped a message at ``size`` bytes, over ``warden_max_body``, and closes the
        session (the layer records the close as the peer's; ``closed_as`` makes it the gateway's)."""
        session = self.by_connection.get(connection_id)
        if session is not None and session.closed_as is None:
            direction = "client_to_server" if session.client_id == connection_id else "server_to_client"
            reason = (f"a {direction} message grew past warden_max_body ({ctx.options.warden_max_body} bytes) at "
                      f"{size} bytes; it was not relayed and the WebSocket was closed")
            session.closed_as = (MessageTooLarge.type, reason)
            if session.timer is not None:
                session.timer.cancel()

    def _expire(self, flow: http.HTTPFlow) -> None:
        session = self.sessions.get(flow)
        if session is not None and session.closed_as is None:
            self._close(flow, session, "token_expired", "the token expired; the WebSocket was closed")

    @staticmethod
    def _close(flow: http.HTTPFlow, session: Session, fate: str, reason: str) -> None:
        """Close the client's connection (the WebSocket layer then closes the upstream's and ends the flow)."""
        if session.closed_as is None:
            session.closed_as = (fate, reason)
        if session.timer is not None:
            session.timer.cancel()
        proxyserver = ctx.master.addons.get("proxyserver")
        handler = proxyserver.connections.get(flow.client_conn.id) if proxyserver is not None else None
        if handler is None:
            return  # the connection is gone already
        for conn in (flow.client_conn, flow.server_conn):
            transport = handler.transports.get(conn)
            if transport is not None and transport.handler is not None:
                handler.close_connection(conn)

    # -- the record -------------------------------------------------------------------------------------

    def _event(self, flow: http.HTTPFlow, *, fate: str, reason: str | None = None,
               detail: dict[str, object] | None = None) -> Event:
        identity = IDENTITY.of(flow)
        return Event(kind="websocket", flow_id=flow.id, user=identity.sub if identity else None,
                     host=flow.request.host, port=flow.request.port, upstream=UPSTREAM.of(flow), fate=fate,
                     reason=reason, detail=detail)

    @staticmethod
    def _pii(event: Event, detail: dict[str, object], outcome: PiiOutcome | None, findings: list[Finding]) -> None:
        """Findings for the record: entity, span, score, operator. Never the value."""
        if outcome is None:
            return
        pii: dict[str, object] = {"profile": outcome.profile}
        pii["findings"] = [[f.entity, f.path, f.start, f.end, f.score, f.operator] for f in findings[:MAX_FINDINGS]]
        detail["pii"] = pii
        event.entities = PiiOutcome.counts(findings) or None

    async def _commit(self, event: Event) -> None:
        """Commit ``event`` (the store's journal is fsync'ed before this returns), or raise RecordingUnavailable."""
        await ctx.master.addons.get("recorder").commit(event)


class _TokenExpired(WardenError):
    type = "token_expired"
