"""The masking addon on the request beside its body, below the proxy: an analyzer double finds e-mail addresses, so
what is checked is what the addon does with them (one round trip with the body, every kind of body, the flow and
the record's form), not what Presidio finds."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from mitmproxy.test import taddons, tflow, tutils

from addons.config import Config
from addons.flow.meta import ERROR, PII
from addons.masking.engine import Engine
from addons.pii import PiiMasking

EMAIL = "jane@acme.example"
_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
RULES = """
upstreams:
  - name: api
    host: api.example
masking:
  path: {path}
  unknown_content: pass
"""


class AnalyzerDouble:
    """Finds e-mail addresses; counts its round trips and what it ran NER on."""

    spec = SimpleNamespace(ner_entities=("PERSON",))

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, bool]]] = []

    async def analyze(self, texts: list[str], ner: list[bool] | None = None) -> list[list]:
        self.calls.append(list(zip(texts, ner or [True] * len(texts), strict=True)))
        return [[("EMAIL_ADDRESS", m.start(), m.end(), 1.0) for m in _ADDRESS.finditer(t)] for t in texts]

    def close(self) -> None:
        pass


def _pii(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str = "refuse") -> Iterator[PiiMasking]:
    double = AnalyzerDouble()

    def configure(self: Engine, masking: object, workers: int) -> None:
        self.pool = double  # type: ignore[assignment]

    monkeypatch.setattr(Engine, "configure", configure)
    (tmp_path / "rules.yaml").write_text(RULES.format(path=path))
    config, pii = Config(), PiiMasking()
    with taddons.context(config, pii) as tctx:
        tctx.configure(config, warden_rules=str(tmp_path / "rules.yaml"))
        tctx.configure(pii, warden_pii_hash_key=str(tmp_path / "hash.key"))
        yield pii


@pytest.fixture
def pii(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PiiMasking]:
    yield from _pii(tmp_path, monkeypatch)


def _flow(target: str, body: bytes = b"", content_type: str = "application/json", **headers: str) -> tflow.HTTPFlow:
    flow = tflow.tflow(req=tutils.treq(method=b"POST" if body else b"GET", path=target.encode(), content=body))
    flow.request.headers["content-type"] = content_type
    for name, value in headers.items():
        flow.request.headers[name.replace("_", "-")] = value
    return flow


def test_the_query_headers_and_body_go_in_one_round_trip_and_leave_masked(pii: PiiMasking) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "mail jane@acme.example"}]}'
    flow = _flow(f"/v1/chat/completions?user={EMAIL}", body, X_Note=f"from {EMAIL}")
    asyncio.run(pii.request(flow))
    assert flow.response is None
    assert len(pii.engine.pool.calls) == 1  # type: ignore[union-attr]
    ran = dict(pii.engine.pool.calls[0])  # type: ignore[union-attr]
    assert ran[EMAIL] is True and ran[f"from {EMAIL}"] is False  # NER on the query, patterns only on headers
    assert flow.request.path == "/v1/chat/completions?user=%3CEMAIL_ADDRESS_1%3E"
    assert flow.request.headers["x-note"] == "from <EMAIL_ADDRESS_1>"
    assert b"<EMAIL_ADDRESS_1>" in flow.request.content
    assert flow.request.headers["content-length"] == str(len(flow.request.raw_content))  # the body's, not stale
    outcome = PII.of(flow)
    assert {f.path for f in outcome.findings} == {"$.messages[0].content", "query.user", "header.x-note"}
    assert pii.vault_of(flow).restore("<EMAIL_ADDRESS_1>") == EMAIL


def test_a_get_without_a_body_and_a_body_passed_unread_still_have_their_query_masked(pii: PiiMasking) -> None:
    get = _flow(f"/v1/files?owner={EMAIL}")
    asyncio.run(pii.request(get))
    assert get.response is None and get.request.path == "/v1/files?owner=%3CEMAIL_ADDRESS_1%3E"
    binary = _flow(f"/v1/upload?owner={EMAIL}", b"\x00\x01\x02", "application/octet-stream")
    asyncio.run(pii.request(binary))
    assert binary.response is None and binary.request.path == "/v1/upload?owner=%3CEMAIL_ADDRESS_1%3E"
    assert binary.request.content == b"\x00\x01\x02" and "not inspected" in PII.of(binary).skipped


def test_a_malformed_body_is_refused_with_its_query_masked_for_the_record(pii: PiiMasking) -> None:
    flow = _flow(f"/v1/chat/completions?user={EMAIL}", b'{"content": "x", "content": "y"}')
    asyncio.run(pii.request(flow))
    assert flow.response.status_code == 400 and ERROR.of(flow).type == "duplicate_json_key"
    assert EMAIL not in flow.request.path


def test_a_segment_refused_is_held_masked_and_nothing_else_is_decided(pii: PiiMasking) -> None:
    flow = _flow(f"/v1/users/{EMAIL}/x", b'{"a": "b"}')
    asyncio.run(pii.request(flow))
    assert flow.response.status_code == 400 and ERROR.of(flow).type == "pii_in_path"
    assert flow.request.path == "/v1/users/%3CEMAIL_ADDRESS_1%3E/x"
    assert b"[1]" not in flow.response.content and b"path segment [2] carries EMAIL_ADDRESS" in flow.response.content


def test_a_segment_passed_by_policy_leaves_as_sent_and_is_recorded_masked(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for pii in _pii(tmp_path, monkeypatch, path="pass"):
        flow = _flow(f"/v1/users/{EMAIL}?e={EMAIL}")
        asyncio.run(pii.request(flow))
        assert flow.response is None and flow.request.path == f"/v1/users/{EMAIL}?e=%3CEMAIL_ADDRESS_1%3E"
        assert pii.originals_of(flow).recorded_target == "/v1/users/%3CEMAIL_ADDRESS_1%3E?e=%3CEMAIL_ADDRESS_1%3E"
        outcome = PII.of(flow)
        assert outcome.passed == "path segments passed unmasked (masking path: pass): path[2] (EMAIL_ADDRESS)"
        assert [(f.path, f.operator) for f in outcome.findings] == [("path[2]", "pass"), ("query.e", "pseudonymize")]
