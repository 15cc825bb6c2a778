"""The admin API: health, Prometheus metrics, search and verify, as the CLI and monitoring use them."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Gateway

pytestmark = pytest.mark.e2e


def test_health_metrics_and_search(gateway: Gateway, upstream) -> None:
    with gateway.client() as client:
        for _ in range(3):
            client.post(f"https://localhost:{upstream.port}/v1/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": "metrics"}]})
        client.post(f"https://localhost:{upstream.port}/v1/files", content=b"x")
    admin = gateway.admin_client()
    health = admin.get("/healthz").json()
    assert health["status"] == "ok" and health["store"]["head_seq"] >= 7 and health["store"]["failures"] == 0

    metrics = admin.get("/metrics").text
    assert 'warden_requests_total{decision="allow",fate="completed"} 3.0' in metrics
    assert 'warden_requests_total{decision="block",fate="blocked_by_policy"} 1.0' in metrics
    assert "warden_request_duration_seconds_bucket" in metrics
    assert "warden_upstream_duration_seconds_count 3.0" in metrics
    assert "warden_store_queue_depth" in metrics and "warden_store_commit_seconds_count" in metrics

    flows = admin.get("/api/flows", params={"fate": "completed"}).json()["flows"]
    assert len(flows) == 3 and all(f["tokens_in"] for f in flows)
    events = admin.get(f"/api/flows/{flows[0]['flow_id']}").json()["events"]
    assert [e["kind"] for e in events] == ["request", "response"]
    assert admin.get("/api/flows/no-such-flow").status_code == 404
    bad = admin.get("/api/flows", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and "neither an ISO 8601 time" in bad.json()["error"]["message"]
    assert admin.get("/api/verify").json()["ok"] is True


def test_flows_table_for_people(gateway: Gateway, upstream) -> None:
    with gateway.client() as client:
        client.get(f"https://localhost:{upstream.port}/echo/table")
    table = gateway.warden("flows").stdout
    [flow] = gateway.flows()
    assert "1 flows (admin API" in table and flow["flow_id"][:8] in table
    assert "alice" in table and "completed" in table and "/echo/table" in table


def test_admin_api_needs_an_admin_token(gateway: Gateway) -> None:
    """Flows hold bodies: only tokens of identity.admin_groups may read them; health and metrics stay open."""
    anonymous = httpx.Client(base_url=gateway.admin_url, trust_env=False)
    assert anonymous.get("/healthz").status_code == 200 and anonymous.get("/metrics").status_code == 200
    for path in ("/api/flows", "/api/events", "/api/verify", "/api/flows/x"):
        r = anonymous.get(path)
        assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"], path
    forged = gateway.admin_client(token="not.a.token").get("/api/flows")
    assert forged.status_code == 401 and "malformed" in forged.json()["error"]["message"]
    user = gateway.admin_client(token=gateway.token("mallory", groups=["dev"])).get("/api/flows")
    assert user.status_code == 403
    assert "mallory is in none of the admin groups (warden-admin)" in user.json()["error"]["message"]
    assert gateway.admin_client().get("/api/flows").status_code == 200
    # The CLI signs its own admin token with the embedded issuer's key; a user's token is refused.
    refused = gateway.warden("--token", gateway.token("mallory", groups=["dev"]), "flows", check=False)
    assert refused.returncode == 2 and "HTTP 403" in refused.stderr
