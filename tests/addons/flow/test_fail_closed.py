"""Addons fail closed: a hook that raises, or a store that cannot commit, stops the request."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mitmproxy.flow import Error
from mitmproxy.test import taddons, tflow

from addons.flow.answers import fail_closed
from addons.flow.meta import ERROR, RECORDED
from addons.flow.streams import compose_stream
from addons.policy import Policy
from addons.recorder import Recorder


class Exploding:
    @fail_closed
    def request(self, flow) -> None:
        raise RuntimeError("boom")


def test_a_raising_hook_answers_500_instead_of_forwarding() -> None:
    flow = tflow.tflow()
    Exploding().request(flow)
    assert flow.response.status_code == 500
    body = json.loads(flow.response.content)
    assert body["error"]["type"] == "internal_error" and "Exploding.request failed" in body["error"]["message"]
    assert ERROR.of(flow).type == "internal_error"


def test_policy_without_rules_refuses() -> None:
    flow = tflow.tflow()
    Policy().request(flow)
    assert flow.response.status_code == 503
    assert json.loads(flow.response.content)["error"]["type"] == "gateway_not_configured"


def test_recorder_that_cannot_commit_refuses_with_503(tmp_path: Path) -> None:
    recorder = Recorder()
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, warden_db=str(tmp_path / "w.duckdb"),
                       warden_signing_key=str(tmp_path / "s.key"), warden_originals_key=str(tmp_path / "o.key"))
        # The writer thread was never started (the gateway is not "running"): nothing can be committed.
        flow = tflow.tflow()
        asyncio.run(recorder.request(flow))
        assert flow.response.status_code == 503
        assert json.loads(flow.response.content)["error"]["type"] == "recording_unavailable"
        recorder.done()


def test_recorder_commits_when_running(tmp_path: Path) -> None:
    recorder = Recorder()
    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, warden_db=str(tmp_path / "w.duckdb"),
                       warden_signing_key=str(tmp_path / "s.key"), warden_originals_key=str(tmp_path / "o.key"))
        recorder.running()
        flow = tflow.tflow()
        flow.request.headers["authorization"] = "Bearer sk-secret"
        asyncio.run(recorder.request(flow))
        assert flow.response is None
        assert len(RECORDED.of(flow).events) == 1
        recorder.done()


def test_recorder_whose_commit_does_not_land_in_time_refuses_with_503(tmp_path: Path, monkeypatch) -> None:
    import threading

    from addons.store.journal import Journal

    recorder = Recorder()
    stuck = threading.Event()
    real_append = Journal.append

    def slow_disk(self, lines) -> None:
        stuck.wait(5)
        real_append(self, lines)

    with taddons.context(recorder) as tctx:
        tctx.configure(recorder, warden_db=str(tmp_path / "w.duckdb"), warden_record_timeout="0.2",
                       warden_signing_key=str(tmp_path / "s.key"), warden_originals_key=str(tmp_path / "o.key"))
        recorder.running()
        monkeypatch.setattr(Journal, "append", slow_disk)
        flow = tflow.tflow()
        try:
            asyncio.run(recorder.request(flow))
        finally:
            stuck.set()
            recorder.done()
        assert flow.response.status_code == 503
        error = json.loads(flow.response.content)["error"]
        assert error["type"] == "recording_unavailable"
        assert "did not commit within 0.2 s (warden_record_timeout)" in error["message"]


class ExplodingHeaders:
    @fail_closed
    def responseheaders(self, flow) -> None:
        raise RuntimeError("boom")


def test_a_failure_after_the_response_headers_kills_the_flow() -> None:
    """A new response set here would go out with the upstream's (unmasked) body after it: cut instead."""
    flow = tflow.tflow(resp=True)
    upstream_response = flow.response
    ExplodingHeaders().responseheaders(flow)
    assert flow.error is not None and flow.error.msg == Error.KILLED_MESSAGE
    assert flow.response is upstream_response and ERROR.of(flow).type == "internal_error"


def test_composed_streams_end_in_order_and_never_pass_an_empty_chunk() -> None:
    seen: list[bytes] = []

    def hold_until_end(data: bytes) -> list[bytes]:
        seen.append(data)
        return [b"".join(seen)] if data == b"" else []

    stream = compose_stream(lambda data: [data.upper(), b""] if data else [b"!"], hold_until_end)
    assert stream(b"ab") == [] and stream(b"cd") == []
    assert stream(b"") == [b"ABCD!"]
    assert seen == [b"AB", b"CD", b"!", b""]
