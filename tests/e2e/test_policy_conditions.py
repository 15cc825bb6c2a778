"""Rule conditions end to end: CEL over identity, request and PII findings, through a real gateway and the
official openai SDK; block reasons reach the SDK's error, and a request blocked for its PII is recorded masked."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Gateway, rules_for
from tests.e2e.test_bad_input import startup_failure
from tests.e2e.test_secrets import all_cells

pytestmark = pytest.mark.e2e

EMAIL = "pieter.jansen@example.nl"
CONDITIONS = """
  - name: contractors-no-customer-data
    when: '"contractors" in identity.groups && pii.counts["EMAIL_ADDRESS"] > 0'
    action: block
    reason: Contractors may not send customer e-mail addresses; ask your lead for an approved workflow
  - name: jobs-use-the-small-model
    when: 'identity.kind == "service" && request.model != "gpt-4o-mini"'
    action: block
    status: 422
    reason: Service accounts use gpt-4o-mini
  - name: no-tools-for-interns
    when: '"interns" in identity.groups && size(request.tools) > 0'
    action: block
    reason: Interns may not call tools
"""


def rules(port: int) -> str:
    text = rules_for(port, rules=CONDITIONS)
    return text.replace("upstreams:", "identity:\n  service_accounts: {clients: [nightly-batch]}\nupstreams:", 1)


@pytest.fixture
def gw(gateway_factory, upstream) -> Gateway:
    return gateway_factory(rules(upstream.port))


def sdk(gw: Gateway, upstream, user: str, **claims) -> openai.OpenAI:
    http_client = httpx.Client(proxy=gw.proxy_url_for(gw.token(user, **claims), user),
                               verify=ssl.create_default_context(cafile=str(gw.ca_cert)), trust_env=False)
    return openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key="unused", max_retries=0,
                         http_client=http_client)


def ask(client: openai.OpenAI, text: str, model: str = "gpt-4o-mini", **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kwargs)


def test_a_condition_on_findings_blocks_with_its_reason_and_the_record_holds_no_value(gw: Gateway, upstream) -> None:
    contractor = sdk(gw, upstream, "carol", groups=["contractors"])
    with pytest.raises(openai.PermissionDeniedError) as blocked:
        ask(contractor, f"Draft a reply to {EMAIL} about the invoice")
    assert "Contractors may not send customer e-mail addresses" in str(blocked.value)  # what the SDK shows
    assert blocked.value.status_code == 403
    assert ask(contractor, "Draft a polite reply about the invoice").choices[0].message.content  # no e-mail: passes
    staff = sdk(gw, upstream, "sam", groups=["staff"])
    assert ask(staff, f"Draft a reply to {EMAIL}").choices[0].message.content == f"Draft a reply to {EMAIL}"
    assert all(EMAIL not in r["body"].decode() for r in upstream.received)  # staff's went out masked

    carol = sorted((f["decision"], f["rule"], f["entities"]) for f in gw.flows() if f["user"] == "carol")
    assert carol == [("allow", "default", None), ("block", "contractors-no-customer-data", {"EMAIL_ADDRESS": 1})]
    gw.stop()
    assert EMAIL not in all_cells(gw.db)  # blocked for its PII, recorded masked (the original encrypted)


def test_conditions_on_identity_kind_model_and_tools(gw: Gateway, upstream) -> None:
    job = sdk(gw, upstream, "svc-nightly", extra={"client_id": "nightly-batch"})
    with pytest.raises(openai.UnprocessableEntityError) as blocked:
        ask(job, "Summarise the logs", model="gpt-4o")
    assert blocked.value.status_code == 422 and "Service accounts use gpt-4o-mini" in str(blocked.value)
    assert ask(job, "Summarise the logs").choices[0].message.content == "Summarise the logs"
    person = sdk(gw, upstream, "pat", extra={"azp": "nightly-web"})  # a person's token names its client too
    assert ask(person, "Summarise the logs", model="gpt-4o").choices[0].message.content

    intern = sdk(gw, upstream, "ivy", groups=["interns"])
    tool = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
    with pytest.raises(openai.PermissionDeniedError, match="Interns may not call tools"):
        ask(intern, "Find the report", tools=[tool])
    assert ask(intern, "Find the report").choices[0].message.content == "Find the report"


def test_a_condition_failing_at_run_time_refuses_and_the_gateway_serves_on(gateway_factory, upstream) -> None:
    broken = CONDITIONS.replace('pii.counts["EMAIL_ADDRESS"]', 'pii.counts["ACME_ID"]')  # no such entity masked
    gw = gateway_factory(rules(upstream.port).replace(CONDITIONS, broken))
    with gw.client(user="carol", token=gw.token("carol", groups=["contractors"])) as client:
        r = client.post(f"https://localhost:{upstream.port}/v1/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 500 and r.json()["error"]["type"] == "policy_error"
    assert "rule 'contractors-no-customer-data'" in r.json()["error"]["message"]
    assert "Key not found" in r.json()["error"]["message"]
    with gw.client() as client:  # alice is no contractor: the && stops before the missing key
        assert client.post(f"https://localhost:{upstream.port}/v1/chat/completions",
                           json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    assert [f["fate"] for f in gw.flows() if f["user"] == "carol"] == ["policy_error"]


@pytest.mark.parametrize(("condition", "message"), [
    ('identity.sbu == "x"', "rules[1].when (rule 'bad'): Value error, invalid CEL condition 'identity.sbu == \"x\"': "
                            "at 1:9: undefined field 'sbu' not found in struct 'warden.Identity'"),
    ("request.body_size > '1'", "rules[1].when (rule 'bad'): Value error, invalid CEL condition"),
])
def test_a_condition_that_does_not_check_stops_start_up_naming_file_rule_and_field(
        tmp_path: Path, confdir: Path, upstream, condition: str, message: str) -> None:
    text = rules_for(upstream.port, rules=f"  - name: bad\n    when: '{condition}'\n    action: block\n")
    log = startup_failure(tmp_path, confdir, upstream, text.replace("'1'", "\"1\""))
    assert f"rules.yaml: {message}" in log




FOUND_BY_REVIEW = """
  - name: no-cards
    when: 'pii.counts["CREDIT_CARD"] > 0 || !pii.inspected'
    action: block
    reason: No card numbers, and nothing unread
  - name: no-large-model
    when: 'request.model == "gpt-4o"'
    action: block
    reason: Not that model
  - name: no-file-list
    filter: "~u /v1/files$"
    action: block
    reason: No file listing
"""


def test_what_a_pii_rule_reads_cannot_be_dodged(gateway_factory, upstream) -> None:
    """A card split across two text parts counts; a path spelled for lenient servers is still checked once the
    decision waited for analysis; an undeclared JSON body's model is read; a body nobody read is not 'no PII'."""
    gw = gateway_factory(rules_for(upstream.port, rules=FOUND_BY_REVIEW).replace(
        '  - name: no-files\n    filter: "~u /v1/files"\n    action: block\n    reason: File uploads are not allowed\n',
        ""))
    base = f"https://localhost:{upstream.port}"
    with gw.client() as client:
        parts = [{"type": "text", "text": "pay with 4111 1111"}, {"type": "text", "text": " 1111 1111 today"}]
        split = client.post(f"{base}/v1/chat/completions",
                            json={"model": "m", "messages": [{"role": "user", "content": parts}]})
        assert split.status_code == 403 and "No card numbers" in split.json()["error"]["message"]
        for spelled in ("/v1%2Ffiles", "/v1/files;x"):
            r = client.get(f"{base}{spelled}")
            assert r.status_code == 400 and r.json()["error"]["type"] == "ambiguous_path", (spelled, r.text)
        assert client.get(f"{base}/v1/files").status_code == 403
        undeclared = client.post(f"{base}/v1/chat/completions", content=json.dumps(
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode(),
            headers={"content-type": ""})
        assert undeclared.status_code == 403 and "Not that model" in undeclared.text
        assert client.post(f"{base}/v1/chat/completions", json={"model": "m", "messages": [
            {"role": "user", "content": "hi"}]}).status_code == 200
