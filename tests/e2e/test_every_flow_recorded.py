"""Every flow has its request event, however its body is built (issue 9, item 12)."""

from __future__ import annotations

import pytest

from tests.conftest import Gateway

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("depth", [200, 100_000])
def test_a_deeply_nested_body_is_refused_precisely_and_recorded(gateway: Gateway, upstream, depth: int) -> None:
    body = '{"model": "deep-model", "messages": ' + "[" * depth + "]" * depth + "}"
    url = f"https://localhost:{upstream.port}/v1/chat/completions"
    with gateway.client() as client:
        r = client.post(url, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["type"] == "malformed_body"
        assert "more than 128 levels deep" in error["message"]
        ok = client.post(url, json={"model": "m", "messages": [{"role": "user", "content": "still serving"}]})
        assert ok.status_code == 200
    upstream_paths = [x["body"] for x in upstream.received if x["path"] == "/v1/chat/completions"]
    assert all(b"[[[[" not in b for b in upstream_paths)  # never forwarded
    flows = gateway.flows()
    refused = [f for f in flows if f["fate"] == "malformed_body"]
    assert len(refused) == 1 and refused[0]["status"] == 400 and refused[0]["user"] == "alice"
    shown = gateway.warden("show", "--json", refused[0]["flow_id"]).stdout
    assert "more than 128 levels deep" in shown
