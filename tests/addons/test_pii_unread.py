"""What a record or an approver's preview shows of a request masking did not read, what a pending rule counts in the
request's parts, and which requests an approval covers (outside review 2, findings 1-3, 8, 9)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from mitmproxy.test import taddons, tflow, tutils

from addons.approval import request_summary
from addons.config import Config
from addons.flow.answers import refuse
from addons.flow.errors import PolicyBlocked
from addons.flow.meta import DECISION, PENDING, PII, Decision
from addons.masking.engine import Engine
from addons.pii import PiiMasking
from addons.recorder import Recorder

EMAIL = "jane@acme.example"
_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
_PHONE = re.compile(r"\d{10}")
RULES = """
upstreams:
  - name: api
    host: api.example
masking:
  path: {path}
  unknown_content: pass
"""


class Double:
    """Finds e-mail addresses and ten-digit runs (as the phone recognizer does on a bare id)."""

    spec = SimpleNamespace(ner_entities=("PERSON",))

    async def analyze(self, texts: list[str], ner: list[bool] | None = None) -> list[list]:
        return [[("EMAIL_ADDRESS", m.start(), m.end(), 1.0) for m in _ADDRESS.finditer(t)]
                + [("PHONE_NUMBER", m.start(), m.end(), 0.7) for m in _PHONE.finditer(t)] for t in texts]

    def close(self) -> None:
        pass


class Policy:
    """Stands in for the policy addon: records the ``pii`` facts a pending rule would read, then allows."""

    def __init__(self) -> None:
        self.facts: list[dict] = []

    def decide_after_analysis(self, flow, pii: dict) -> Decision:
        self.facts.append(pii)
        return DECISION.set(flow, Decision("allow", "r"))


def _chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str = "mask") -> Iterator[tuple]:
    monkeypatch.setattr(Engine, "configure", lambda self, masking, workers: setattr(self, "pool", Double()))
    (tmp_path / "rules.yaml").write_text(RULES.format(path=path))
    config, pii, policy, recorder = Config(), PiiMasking(), Policy(), Recorder()
    with taddons.context(config, pii, policy, recorder) as tctx:
        tctx.configure(config, warden_rules=str(tmp_path / "rules.yaml"))
        tctx.configure(pii, warden_pii_hash_key=str(tmp_path / "hash.key"))
        tctx.configure(recorder, warden_signing_key=str(tmp_path / "s.key"),
                       warden_originals_key=str(tmp_path / "o.key"), warden_db=str(tmp_path / "w.duckdb"))
        yield pii, policy, recorder
        recorder.done()


@pytest.fixture
def chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:
    yield from _chain(tmp_path, monkeypatch)


def _flow(target: str, body: bytes = b"", content_type: str = "application/json", **headers: str):
    flow = tflow.tflow(req=tutils.treq(method=b"POST" if body else b"GET", path=target.encode(), content=body))
    flow.request.headers["content-type"] = content_type
    for name, value in headers.items():
        flow.request.headers[name.replace("_", "-")] = value
    return flow


# -- 1. a flow refused before masking keeps its query and header values in the clear --------------------------------

def test_a_request_refused_before_masking_records_no_pii_in_its_query_or_headers(chain) -> None:
    """The body is withheld (body_withheld), but the query and header values beside it are recorded as sent."""
    _, _, recorder = chain
    flow = _flow(f"/v1/files?owner={EMAIL}", b'{"note": "from ' + EMAIL.encode() + b'"}', X_Note=f"from {EMAIL}")
    refuse(flow, PolicyBlocked("blocked by rule 'no-files'"))  # what policy does, before the pii hook
    event = recorder._request_event(flow)
    assert event.body is None and event.detail["body_withheld"]  # the body: withheld, as designed
    recorded = json.dumps({"path": event.path, "headers": event.headers})
    assert EMAIL not in recorded, recorded


# -- 2. approvers' preview (recorded in the approval event, sent to the webhook) -------------------------------------

def test_the_approvers_preview_never_shows_a_path_segment_passed_unmasked(tmp_path, monkeypatch) -> None:
    for pii, _, recorder in _chain(tmp_path, monkeypatch, path="pass"):
        flow = _flow(f"/v1/users/{EMAIL}", b'{"a": "b"}')
        asyncio.run(pii.request(flow))
        assert EMAIL not in recorder._request_event(flow).path  # the request event: masked (recorded_target)
        summary = request_summary(flow, "digest")
        assert EMAIL not in summary["path"], summary["path"]


def test_the_approvers_preview_never_shows_a_body_masking_did_not_read(chain) -> None:
    pii, _, recorder = chain
    flow = _flow("/v1/upload", b"<note>from " + EMAIL.encode() + b"</note>", "application/xml")
    asyncio.run(pii.request(flow))
    assert flow.response is None  # passed unread (unknown_content: pass)
    assert recorder._request_event(flow).detail["body_withheld"]  # the request event withholds it
    summary = request_summary(flow, "digest")
    assert EMAIL not in summary["preview"], summary["preview"]


# -- 3. what a pending rule counts is not what masking masks ----------------------------------------------------------

def test_a_pending_rule_counts_what_masking_would_mask_in_the_request_parts(chain) -> None:
    pii, policy, _ = chain
    flow = _flow("/v1/orders/4155552671?q=a+b", b'{"a": "b"}')  # a numeric id in the path: masking leaves it
    DECISION.set(flow, Decision(PENDING, "r", "decided after PII analysis"))
    asyncio.run(pii.request(flow))
    assert flow.request.path.startswith("/v1/orders/4155552671")  # not masked (a bare run of digits is an id)
    assert PII.of(flow).findings == []
    assert policy.facts[0]["total"] == 0, policy.facts


def test_a_query_value_read_two_ways_counts_once(chain) -> None:
    pii, policy, _ = chain
    flow = _flow(f"/v1/files?owner={EMAIL}+x", b'{"a": "b"}')
    DECISION.set(flow, Decision(PENDING, "r", "decided after PII analysis"))
    asyncio.run(pii.request(flow))
    assert len(PII.of(flow).findings) == 1
    assert policy.facts[0]["counts"]["EMAIL_ADDRESS"] == 1, policy.facts


def test_a_request_refused_before_masking_keeps_its_plain_path_and_structural_headers(chain) -> None:
    _, _, recorder = chain
    flow = _flow(f"/v1/users/{EMAIL}/files/1700000000000?owner=x#frag", b"{}", X_Note="hello")
    refuse(flow, PolicyBlocked("blocked by rule 'no-files'"))
    event = recorder._request_event(flow)
    assert event.path == "/v1/users/[withheld]/files/[withheld]"
    headers = dict(event.headers)
    assert headers["content-type"] == "application/json" and headers["X-Note"] == "[withheld]"
    assert event.detail["target_withheld"].startswith("not read for PII")


def test_a_body_with_binary_content_passed_unread_is_withheld(chain) -> None:
    pii, _, recorder = chain
    png = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
           "AAAABJRU5ErkJggg==")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png}}]}]}).encode()
    flow = _flow("/v1/chat/completions", body)
    asyncio.run(pii.request(flow))
    assert flow.response is None  # passed (unknown_content: pass)
    event = recorder._request_event(flow)
    assert event.body is None and event.detail["body_withheld"].startswith("not read for PII")


def test_a_refused_turn_keeps_nothing_for_its_conversation(chain) -> None:
    pii, _, _ = chain
    flow = _flow("/v1/responses", b'{"model": "m", "previous_response_id": "resp_1", "input": "x", "input": "y"}')
    asyncio.run(pii.request(flow))
    assert flow.response is not None and flow.response.status_code == 400
    assert pii.turns.kept is not None and len(pii.turns.kept) == 0


def test_an_approval_covers_only_the_values_it_was_asked_for(chain) -> None:
    """Two bodies that mask to the same bytes but name other people are two requests."""
    from addons.approval import request_digest

    pii, _, _ = chain
    digests = []
    for address in (EMAIL, "john@acme.example"):
        flow = _flow("/v1/chat/completions", json.dumps({"messages": [{"content": f"mail {address}"}]}).encode())
        asyncio.run(pii.request(flow))
        assert b"<EMAIL_ADDRESS_1>" in flow.request.raw_content
        digests.append(request_digest(flow, "alice"))
    assert digests[0] != digests[1]
