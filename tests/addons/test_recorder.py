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
