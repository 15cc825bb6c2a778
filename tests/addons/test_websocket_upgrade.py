"""What counts as a WebSocket upgrade request, and pseudonyms reserved by later messages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import wsproto
import wsproto.events
from mitmproxy.proxy.layers import websocket as websocket_layer
from mitmproxy.test import taddons, tflow, tutils
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from addons.intake import Intake
from addons.masking.pseudonyms import Vault
from addons.websocket import MITMPROXY_CONNECTION, Session, WardenConnection, WebSocket, wants_upgrade


@pytest.mark.parametrize(("headers", "wanted"), [
    ({}, False),
    ({"upgrade": "h2c"}, False),
    ({"upgrade": "websocket"}, True),
    ({"upgrade": "WebSocket"}, True),
    ({"upgrade": "foo, websocket"}, True),
    ({"sec-websocket-version": "13"}, True),  # what mitmproxy itself checks before it speaks WebSocket
    ({"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}, True),
])
def test_wants_upgrade(headers: dict[str, str], wanted: bool) -> None:
    request = tutils.treq()
    for name, value in headers.items():
        request.headers[name] = value
    assert wants_upgrade(request) is wanted


def test_a_later_message_reserves_the_pseudonyms_it_spells() -> None:
    vault = Vault()
    assert vault.pseudonym("EMAIL_ADDRESS", "a@example.org") == "<EMAIL_ADDRESS_1>"
    vault.reserve(["I typed <EMAIL_ADDRESS_2> and <EMAIL_ADDRESS_1> myself"])
    assert vault.pseudonym("EMAIL_ADDRESS", "b@example.org") == "<EMAIL_ADDRESS_3>"
    assert vault.restore("<EMAIL_ADDRESS_1>") == "a@example.org"  # an issued one stays restorable


def test_a_message_the_store_cannot_commit_is_dropped_and_the_session_closed(tmp_path: Path) -> None:
    from addons.config import Config
    from addons.recorder import Recorder
    from addons.websocket import Session, WebSocket

    rules = tmp_path / "rules.yaml"
    rules.write_text("upstreams:\n  - {name: rt, host: example.com, websocket: true}\n"
                     "masking: {unknown_content: pass}\n")
    websocket, recorder = WebSocket(), Recorder()
    with taddons.context(Config(), Intake(), websocket, recorder) as tctx:
        tctx.configure(recorder, warden_rules=str(rules), warden_db=str(tmp_path / "w.duckdb"),
                       warden_signing_key=str(tmp_path / "s.key"), warden_originals_key=str(tmp_path / "o.key"))
        # The store's writer was never started (the gateway is not "running"): nothing can be committed.
        flow = tflow.twebsocketflow()
        websocket.sessions[flow] = session = Session("rt")
        flow.websocket.messages.append(WebSocketMessage(Opcode.BINARY, True, b"\x00payload"))
        asyncio.run(websocket.websocket_message(flow))
        assert flow.websocket.messages[-1].dropped
        assert session.closed_as is not None and session.closed_as[0] == "recording_unavailable"
        recorder.done()


def test_control_payloads_are_dropped_only_while_the_addon_is_loaded() -> None:
    websocket = WebSocket()
    with taddons.context(websocket):
        assert websocket_layer.WebsocketConnection is WardenConnection
        websocket.done()
    assert websocket_layer.WebsocketConnection is MITMPROXY_CONNECTION


def test_control_frames_reach_the_layer_empty_and_only_their_sizes_are_counted() -> None:
    websocket = WebSocket()
    peer = wsproto.Connection(wsproto.ConnectionType.CLIENT)
    frames = b"".join(peer.send(e) for e in (
        wsproto.events.Ping(b"maria@example.org"), wsproto.events.Pong(b"1234"), wsproto.events.Ping(b""),
        wsproto.events.TextMessage("kept"), wsproto.events.CloseConnection(code=4000, reason="carol@example.net"),
    ))
    client = tflow.tclient_conn()
    with taddons.context(Intake(), websocket):
        websocket.by_connection[client.id] = session = Session("rt")
        ws = WardenConnection(wsproto.ConnectionType.SERVER, conn=client)
        ws.receive_data(frames)
        events = list(ws.events())
        websocket.done()
    assert [type(e).__name__ for e in events] == ["Ping", "Pong", "Ping", "TextMessage", "CloseConnection"]
    assert [bytes(e.payload) for e in events[:3]] == [b"", b"", b""]
    assert events[3].data == "kept"
    assert events[4].code == 4000 and not events[4].reason
    assert (session.control_dropped, session.control_bytes) == (2, len("maria@example.org") + 4)
    assert session.close_reason_size == len("carol@example.net")


def test_a_message_is_stopped_as_it_grows_past_the_limit() -> None:
    websocket = WebSocket()
    peer = wsproto.Connection(wsproto.ConnectionType.CLIENT)
    client = tflow.tclient_conn()
    with taddons.context(Intake(), websocket) as tctx:
        tctx.options.warden_max_body = 10
        websocket.by_connection[client.id] = session = Session("rt", client_id=client.id)
        ws = WardenConnection(wsproto.ConnectionType.SERVER, conn=client)
        ws.receive_data(peer.send(wsproto.events.TextMessage("0123456789", message_finished=True)))
        assert [e.data for e in ws.events()] == ["0123456789"]  # at the limit: whole
        ws.receive_data(peer.send(wsproto.events.BytesMessage(b"01234", message_finished=False)))
        ws.receive_data(peer.send(wsproto.events.BytesMessage(b"567890", message_finished=True)))
        events = list(ws.events())
        websocket.done()
    assert bytes(events[0].data) == b"01234" and len(events) == 2  # the piece over the limit is never handed on
    assert isinstance(events[1], wsproto.events.CloseConnection) and events[1].code == 1009
    assert session.closed_as is not None and session.closed_as[0] == "message_too_large"
    assert "client_to_server" in session.closed_as[1] and "at 11 bytes" in session.closed_as[1]
