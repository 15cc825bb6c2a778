"""Addons fail closed: a hook that raises, or a store that cannot commit, stops the request."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mitmproxy.test import taddons, tflow

from addons.flowmeta import fail_closed, meta
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
    assert meta(flow).error.type == "internal_error"


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
        assert len(meta(flow).events) == 1
        recorder.done()


def test_recorder_whose_commit_does_not_land_in_time_refuses_with_503(tmp_path: Path, monkeypatch) -> None:
    import threading

    from addons.journal import Journal

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
