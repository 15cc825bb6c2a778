"""The request beside its body, end to end through a real gateway (issue 11, item 5): query strings are masked before
they leave, a path segment that carries PII is refused by default or passed or masked by policy, never silently,
header values are masked or refused, benign URLs leave untouched, and the record never holds a planted value."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import Gateway, rules_for
from tests.e2e.test_secrets import assert_nowhere

pytestmark = pytest.mark.e2e

EMAIL, CARD, SSN = "maria.garcia@example.org", "4111111111111111", "536-22-1234"
STRIPE = "sk_live_PLANTEDq0u3ry0h3ad3r5"
PLANTED = (EMAIL, EMAIL.replace("@", "%40"), EMAIL.upper(), CARD, SSN, STRIPE)
CHAT = {"model": "demo", "messages": [{"role": "user", "content": f"write to {EMAIL} today"}]}
PROFILES = """
masking:
  recognizers:
    - entity: API_KEY
      patterns: ['\\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}']
  profiles:
    - name: path-pass
      path: pass
    - name: path-mask
      path: mask
    - name: strict-headers
      headers: refuse
"""
RULES = """
  - name: passing
    filter: "~u /echo/pass/"
    action: allow
    masking: path-pass
  - name: masking
    filter: "~u /echo/mask/"
    action: allow
    masking: path-mask
  - name: strict
    filter: "~u /echo/strict"
    action: allow
    masking: strict-headers
"""


@pytest.fixture
def gateway(gateway_factory, upstream) -> Gateway:
    return gateway_factory(rules_for(upstream.port, rules=RULES).replace("rules:", PROFILES + "rules:", 1))


def url(upstream, target: str) -> str:
    return f"https://localhost:{upstream.port}{target}"


def received(upstream, prefix: str) -> dict:
    return [r for r in upstream.received if r["path"].startswith(prefix)][-1]


def shown(gateway: Gateway, flow: dict) -> dict:
    return json.loads(gateway.warden("show", flow["flow_id"], "--json").stdout.splitlines()[0])


def test_query_values_and_names_are_masked_in_the_same_vault_and_never_recorded(
        gateway: Gateway, upstream, tmp_path: Path) -> None:
    query = (f"user={EMAIL.replace('@', '%40')}&user={EMAIL.upper().replace('@', '%2540')}&blank=&flag"
             f"&note=card+{CARD}&{SSN}=x&limit=20")
    with gateway.client() as client:
        r = client.post(url(upstream, f"/v1/chat/completions?{query}"), json=CHAT)
    assert r.status_code == 200, r.text
    assert EMAIL in r.json()["choices"][0]["message"]["content"]  # pseudonyms restored in the answer as usual
    sent = received(upstream, "/v1/chat/completions")
    path = sent["path"]
    assert not any(value in unquote(unquote(path)) for value in PLANTED), path
    # one vault: the body's address and the query's are the same pseudonym; order, repeats, blanks kept
    assert "<EMAIL_ADDRESS_1>" in sent["body"].decode()
    assert path == ("/v1/chat/completions?user=%3CEMAIL_ADDRESS_1%3E&user=%3CEMAIL_ADDRESS_1%3E&blank=&flag"
                    "&note=card+%3CCREDIT_CARD_1%3E&%3CUS_SSN_1%3E=x&limit=20"), path
    [flow] = gateway.flows()
    findings = {(f[0], f[1]) for f in shown(gateway, flow)["detail"]["pii"]["findings"]}
    assert {("EMAIL_ADDRESS", "query.user"), ("CREDIT_CARD", "query.note"),
            ("US_SSN", "query.<US_SSN_1>"), ("EMAIL_ADDRESS", "$.messages[0].content")} <= findings
    assert_nowhere(gateway, tmp_path, PLANTED)


def test_a_path_segment_with_pii_is_refused_by_default_with_a_clear_error_and_recorded(
        gateway: Gateway, upstream, tmp_path: Path) -> None:
    refused = {f"/echo/users/{EMAIL}": "[2] carries EMAIL_ADDRESS",
               f"/echo/cards/{CARD}/charges": "[2] carries CREDIT_CARD",
               f"/echo/users;id={SSN}/x": "[1] carries US_SSN",  # a matrix parameter is part of its segment
               f"/echo/u/{EMAIL.upper().replace('@', '%40')}": "[2] carries EMAIL_ADDRESS"}
    with gateway.client() as client:
        for target, named in refused.items():
            r = client.get(url(upstream, target))
            assert r.status_code == 400 and r.json()["error"]["type"] == "pii_in_path", (target, r.text)
            message = r.json()["error"]["message"]
            assert f"path segment {named}" in message and "path: refuse" in message, message
            assert not any(value in r.text for value in PLANTED)
    assert not any(r["path"].startswith(("/echo/users", "/echo/cards", "/echo/u/")) for r in upstream.received)
    flows = gateway.flows()
    assert [f["fate"] for f in flows] == ["pii_in_path"] * len(refused)
    assert all("%3C" in f["path"] for f in flows)  # on record as it would have left: masked
    assert_nowhere(gateway, tmp_path, PLANTED)


def test_benign_urls_leave_untouched(gateway: Gateway, upstream) -> None:
    targets = ["/echo/v1/batches/batch_6721b5c3e5bc8190", "/echo/v1/threads/123e4567-e89b-12d3-a456-426614174000/runs",
               "/echo/2023-06-01/models/claude-3-5-sonnet-20241022", "/echo/v1/orders/1700000000/items/42",
               "/echo/openai/deployments/gpt-35-turbo-0613/chat/completions?api-version=2024-02-15-preview",
               "/echo/v1/models/gpt-4o-2024-08-06?limit=20&order=desc&after=file-abc123",
               "/echo/v1beta/models/gemini-1.5-pro:generateContent"]
    with gateway.client() as client:
        for target in targets:
            r = client.get(url(upstream, target), headers={"X-Request-Id": "req_8f3a2b", "X-Client-Version": "1.40.0"})
            assert r.status_code == 200, (target, r.text)
            sent = received(upstream, target.split("?")[0])
            assert sent["path"] == target
            headers = dict((k.lower(), v) for k, v in sent["headers"])
            assert headers["x-request-id"] == "req_8f3a2b" and headers["x-client-version"] == "1.40.0"
    assert all(shown(gateway, f)["detail"]["pii"]["findings"] == [] for f in gateway.flows())


def test_a_profile_passes_or_masks_path_segments(gateway: Gateway, upstream, tmp_path: Path) -> None:
    with gateway.client() as client:
        passed = client.get(url(upstream, f"/echo/pass/users/{EMAIL}?who={EMAIL}"))
        masked = client.get(url(upstream, f"/echo/mask/users/{EMAIL}"))
    assert passed.status_code == 200 and masked.status_code == 200
    assert received(upstream, "/echo/pass/")["path"] == f"/echo/pass/users/{EMAIL}?who=%3CEMAIL_ADDRESS_1%3E"
    assert received(upstream, "/echo/mask/")["path"] == "/echo/mask/users/%3CEMAIL_ADDRESS_1%3E"
    by_path = {f["path"].split("/")[2]: shown(gateway, f) for f in gateway.flows()}
    passing = by_path["pass"]
    assert passing["path"] == "/echo/pass/users/%3CEMAIL_ADDRESS_1%3E?who=%3CEMAIL_ADDRESS_1%3E"  # recorded masked
    assert "path[3] (EMAIL_ADDRESS)" in passing["detail"]["pii"]["passed"]
    assert ["EMAIL_ADDRESS", "path[3]"] + [] == passing["detail"]["pii"]["findings"][0][:2]
    assert passing["detail"]["pii"]["findings"][0][5] == "pass"
    assert "passed" not in by_path["mask"]["detail"]["pii"]
    assert_nowhere(gateway, tmp_path, PLANTED)


def test_header_values_are_masked_or_refused_by_policy(gateway: Gateway, upstream, tmp_path: Path) -> None:
    headers = {"X-Custom-Note": f"call back at {EMAIL}", "X-Card": f"card {CARD}", "X-Debug-Blob": STRIPE,
               "anthropic-version": "2023-06-01", "Accept": "application/json"}
    with gateway.client() as client:
        r = client.post(url(upstream, "/echo/headers"), json={"hello": "world"}, headers=headers)
        assert r.status_code == 200, r.text
        sent = {k.lower(): v for k, v in received(upstream, "/echo/headers")["headers"]}
        assert sent["x-custom-note"] == "call back at <EMAIL_ADDRESS_1>"
        assert sent["x-card"] == "card <CREDIT_CARD_1>" and sent["x-debug-blob"] == "<API_KEY_1>"
        assert sent["anthropic-version"] == "2023-06-01" and sent["accept"] == "application/json"
        refused = client.post(url(upstream, "/echo/strict"), json={"hello": "world"}, headers=headers)
        named = client.post(url(upstream, "/echo/named"), headers={f"X-{CARD}": "1"})
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "pii_in_header"
    assert "header.x-custom-note carries EMAIL_ADDRESS" in refused.json()["error"]["message"]
    assert named.status_code == 400 and named.json()["error"]["type"] == "pii_in_header"
    assert not any(value in refused.text + named.text for value in PLANTED)
    assert not any(r["path"].startswith(("/echo/strict", "/echo/named")) for r in upstream.received)
    findings = {f[1] for flow in gateway.flows() for f in shown(gateway, flow)["detail"]["pii"]["findings"]}
    assert {"header.x-custom-note", "header.x-card", "header.x-debug-blob"} <= findings
    assert_nowhere(gateway, tmp_path, PLANTED)
