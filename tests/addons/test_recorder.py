"""The recorder's own decisions, below the unit boundary."""

from __future__ import annotations

from mitmproxy.test import tflow

from addons.recorder import Recorder


def test_recorder_builds_an_event_when_a_helper_fails() -> None:
    flow = tflow.tflow()
    flow.request.path = "/v1/x?jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"

    def _request_event(flow):
        raise RecursionError("a helper failed")

    event = Recorder()._built("request", _request_event, flow)
    assert event.kind == "request" and event.flow_id == flow.id and event.fate == "forwarded"
    assert "RecursionError" in event.detail["recorder_error"] and "eyJ" not in event.path


def test_an_error_is_classified_by_the_flow_and_its_connection_not_by_message_text() -> None:
    from mitmproxy.connection import ConnectionState
    from mitmproxy.flow import Error

    from addons.recorder import classify_error

    killed = tflow.tflow(err=True)
    killed.error = Error(Error.KILLED_MESSAGE)
    assert classify_error(killed) == "killed"
    gone = tflow.tflow(err=True)
    gone.error = Error("any words at all")
    gone.client_conn.state = ConnectionState.CAN_WRITE  # the client shut its side
    assert classify_error(gone) == "client_gone"
    upstream = tflow.tflow(err=True)
    upstream.error = Error("Client disconnected.")  # the words alone prove nothing: the client is still there
    upstream.client_conn.state = ConnectionState.OPEN
    assert classify_error(upstream) == "upstream_error"
