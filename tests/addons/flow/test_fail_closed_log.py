"""Review: the log line of a hook that failed names the flow, never its URL: a query string may carry the
caller's key (``?key=...``), and the gateway log is no place for it (the record keeps the path redacted)."""

from __future__ import annotations

import logging

import pytest
from mitmproxy.test import tflow

from addons.flow.answers import fail_closed

PLANTED = "AIzaSyPLANTED-caller-key-0123456789"


class Exploding:
    @fail_closed
    def request(self, flow) -> None:
        raise RuntimeError("boom")


def test_a_failing_hook_logs_the_flow_not_its_query(caplog: pytest.LogCaptureFixture) -> None:
    flow = tflow.tflow()
    flow.request.path = f"/v1beta/models/m:generateContent?key={PLANTED}"
    with caplog.at_level(logging.ERROR, logger="warden"):
        Exploding().request(flow)
    assert flow.response.status_code == 500
    assert "Exploding.request failed" in caplog.text and flow.id in caplog.text
    assert PLANTED not in caplog.text
