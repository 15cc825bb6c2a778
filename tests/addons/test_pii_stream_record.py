"""Review: a streamed answer whose pseudonyms were restored for the client is never kept in the record as the
client read it (the caller's values), also when the flow ends in an error mid-stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy.flow import Error
from mitmproxy.test import taddons, tflow, tutils

from addons.config import Config
from addons.credentials import Credentials
from addons.flow.meta import PII, PiiOutcome
from addons.masking.engine import Engine
from addons.masking.pseudonyms import Vault
from addons.pii import PiiMasking
from addons.recorder import Recorder
from addons.store.database import connect
from addons.store.queries import flow_events

RULES = """
upstreams:
  - name: openai
    host: api.openai.example
masking:
  responses: restore
"""
NAME = "Annabel Leeworth"
EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "Dear <PERSON_1>, hello"}}]}\n\n'


def _streaming(pii: PiiMasking, recorder: Recorder) -> tflow.HTTPFlow:
    flow = tflow.tflow(resp=tutils.tresp(content=b""))
    flow.request.path = "/v1/chat/completions"
    flow.response.headers["content-type"] = "text/event-stream"
    PII.set(flow, PiiOutcome(profile="default"))
    vault = Vault()
    assert vault.pseudonym("PERSON", NAME) == "<PERSON_1>"
    pii.vaults[flow] = vault
    flow.response.stream = lambda data: [data] if data else []  # as Intake leaves an unencoded SSE answer
    pii.responseheaders(flow)
    recorder.responseheaders(flow)
    return flow


@pytest.fixture
def chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PiiMasking, Recorder]]:
    monkeypatch.setattr(Engine, "configure", lambda self, masking, workers: None)  # restoring needs no analyzer
    (tmp_path / "rules.yaml").write_text(RULES)
    config, pii, credentials, recorder = Config(), PiiMasking(), Credentials(), Recorder()
    with taddons.context(config, pii, credentials, recorder) as tctx:
        tctx.configure(config, warden_rules=str(tmp_path / "rules.yaml"))
        tctx.configure(recorder, warden_db=str(tmp_path / "w.duckdb"),
                       warden_signing_key=str(tmp_path / "s.key"), warden_originals_key=str(tmp_path / "o.key"))
        recorder.running()
        yield pii, recorder
        recorder.done()


def _recorded(tmp_path: Path, flow: tflow.HTTPFlow, kind: str):
    [event] = [e for e in flow_events(connect(tmp_path / "w.duckdb", read_only=True), flow.id) if e.kind == kind]
    return event


def test_a_restored_stream_cut_by_an_error_is_recorded_masked(chain, tmp_path: Path) -> None:
    pii, recorder = chain
    flow = _streaming(pii, recorder)
    client = b"".join(flow.response.stream(EVENT))
    assert NAME.encode() in client  # the client reads its own value back
    flow.error = Error("the upstream went away mid-stream")
    asyncio.run(recorder.error(flow))
    recorder.done()
    event = _recorded(tmp_path, flow, "error")
    assert NAME.encode() not in (event.body or b""), "the caller's restored value is in the record"
    assert b"<PERSON_1>" in event.body


def test_a_restored_stream_whose_rewrite_failed_is_recorded_masked(chain, tmp_path: Path) -> None:
    pii, recorder = chain
    flow = _streaming(pii, recorder)
    assert NAME.encode() in b"".join(flow.response.stream(EVENT))
    pii.streams[flow].error = "RuntimeError: a later event could not be rewritten"
    asyncio.run(pii.response(flow))  # fails closed: the flow is cut
    assert flow.error is not None and flow.error.msg == Error.KILLED_MESSAGE
    asyncio.run(recorder.response(flow))
    recorder.done()
    event = _recorded(tmp_path, flow, "response")
    assert event.fate == "internal_error"
    assert NAME.encode() not in (event.body or b""), "the caller's restored value is in the record"
    assert b"<PERSON_1>" in event.body
