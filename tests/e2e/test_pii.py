"""PII masking end to end: the official SDKs through a real gateway to the echo upstream.

The upstream echoes the last user message, so what it received shows what left the organisation
(pseudonyms, never values) and what the client reads shows the restoration (values again).
"""

from __future__ import annotations

import json
import re

import anthropic
import httpx
import openai
import pytest

from scripts.demo_upstream import reply_header
from tests.conftest import Gateway

pytestmark = pytest.mark.e2e

NAME, EMAIL, PHONE, CARD = "Maria Garcia", "maria.garcia@example.org", "+1 415 555 0132", "4111 1111 1111 1111"
PROMPT = f"Please write to {NAME} at {EMAIL}, phone {PHONE}, about card {CARD}. Thanks!"
VALUES = (NAME, EMAIL, PHONE, CARD)


def received_bodies(upstream, path: str) -> list[str]:
    return [r["body"].decode() for r in upstream.received if r["path"].startswith(path)]


def last_sent(upstream, path: str) -> str:
    """The body the upstream received last on ``path`` (an echo's answer would be restored for the client)."""
    return received_bodies(upstream, path)[-1]


def assert_nothing_leaked(upstream, path: str, values=VALUES) -> str:
    bodies = received_bodies(upstream, path)
    assert bodies, f"the upstream received nothing on {path}"
    for body in bodies:
        for value in values:
            assert value not in body, f"{value!r} reached the upstream: {body}"
    return bodies[-1]


def test_openai_sdk_masks_request_and_restores_answer(proxy_env: Gateway, upstream) -> None:
    client = openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": PROMPT}])
    assert reply.choices[0].message.content == PROMPT  # the caller reads the values again
    sent = json.loads(assert_nothing_leaked(upstream, "/v1/chat/completions"))
    text = sent["messages"][0]["content"]
    assert re.fullmatch(r"Please write to <PERSON_1> at <EMAIL_ADDRESS_1>, phone <PHONE_NUMBER_1>, "
                        r"about card <CREDIT_CARD_1>\. Thanks!", text), text

    flows = proxy_env.flows("--entity", "EMAIL_ADDRESS")
    assert len(flows) == 1 and flows[0]["entities"] == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1, "PERSON": 1,
                                                        "PHONE_NUMBER": 1}
    assert proxy_env.flows("--entity", "US_SSN") == []


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 11])
def test_openai_sdk_streaming_restores_pseudonyms_split_anywhere(proxy_env: Gateway, upstream, chunk: int) -> None:
    client = openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key="unused", max_retries=0,
                           default_headers={"x-demo-chunk-chars": str(chunk)})
    stream = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": PROMPT}], stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == PROMPT
    assert chunks[-1].usage is not None
    assert_nothing_leaked(upstream, "/v1/chat/completions")


def test_a_restored_stream_does_not_keep_the_upstreams_length(gateway: Gateway, upstream) -> None:
    """Restoring pseudonyms makes the stream longer than the upstream's Content-Length: it must not be cut short."""
    with gateway.client(timeout=30) as client:
        r = client.post(f"https://localhost:{upstream.port}/v1/chat/completions", headers={"x-demo-sse-length": "1"},
                        json={"model": "demo", "stream": True, "messages": [{"role": "user", "content": PROMPT}]})
    assert r.status_code == 200 and "content-length" not in r.headers
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == PROMPT
    assert r.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("chunk", [1, 4, 9])
def test_anthropic_sdk_masks_and_restores_streaming_too(proxy_env: Gateway, upstream, chunk: int) -> None:
    client = anthropic.Anthropic(base_url=f"https://127.0.0.1:{upstream.port}", api_key="unused", max_retries=0,
                                 default_headers={"x-demo-chunk-chars": str(chunk)})
    message = client.messages.create(model="demo", max_tokens=100, system=f"The user is {NAME}.",
                                     messages=[{"role": "user", "content": [{"type": "text", "text": PROMPT}]}])
    assert message.content[0].text == PROMPT
    with client.messages.stream(model="demo", max_tokens=100, messages=[{"role": "user", "content": PROMPT}]) as s:
        streamed = "".join(s.text_stream)
    assert streamed == PROMPT
    assert_nothing_leaked(upstream, "/v1/messages")
    assert json.loads(received_bodies(upstream, "/v1/messages")[0])["system"] == "The user is <PERSON_1>."


def test_openai_responses_api_and_embeddings(proxy_env: Gateway, upstream) -> None:
    client = openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key="unused", max_retries=0,
                           default_headers={"x-demo-chunk-chars": "3"})
    response = client.responses.create(model="demo", instructions=f"Address {NAME} formally.", input=PROMPT)
    assert response.output_text == PROMPT
    with client.responses.stream(model="demo", input=PROMPT) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert deltas == PROMPT and final.output_text == PROMPT
    assert_nothing_leaked(upstream, "/v1/responses")

    client.embeddings.create(model="demo", input=[PROMPT, "no pii here"])
    sent = json.loads(assert_nothing_leaked(upstream, "/v1/embeddings"))
    assert sent["input"][1] == "no pii here"


def test_same_value_same_pseudonym_across_turns(proxy_env: Gateway, upstream) -> None:
    client = openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key="unused", max_retries=0)
    turns = [{"role": "user", "content": f"My colleague {NAME} wrote from {EMAIL}."}]
    first = client.chat.completions.create(model="demo", messages=turns).choices[0].message.content
    turns += [{"role": "assistant", "content": first},
              {"role": "user", "content": f"Write to jane.roe@example.com and copy {EMAIL}."}]
    client.chat.completions.create(model="demo", messages=turns)
    sent = [json.loads(b)["messages"] for b in received_bodies(upstream, "/v1/chat/completions")]
    assert sent[0][0]["content"] == sent[1][0]["content"] == "My colleague <PERSON_1> wrote from <EMAIL_ADDRESS_1>."
    assert sent[1][2]["content"] == "Write to <EMAIL_ADDRESS_2> and copy <EMAIL_ADDRESS_1>."


def test_pii_the_upstream_sends_is_masked_streaming_or_not(gateway: Gateway, upstream) -> None:
    leak = "Sure, write to bob.jones@evil.example or call +44 20 7946 0958 today."
    body = {"model": "demo", "messages": [{"role": "user", "content": "who can help?"}]}
    with gateway.client() as client:
        plain = client.post(f"https://localhost:{upstream.port}/v1/chat/completions", json=body,
                            headers=reply_header(leak))
        text = plain.json()["choices"][0]["message"]["content"]
        assert text == "Sure, write to <EMAIL_ADDRESS> or call <PHONE_NUMBER> today."
        for chunk in (1, 3, 6):
            with client.stream("POST", f"https://localhost:{upstream.port}/v1/chat/completions",
                               json={**body, "stream": True},
                               headers={**reply_header(leak), "x-demo-chunk-chars": str(chunk)}) as r:
                raw = r.read().decode()
            events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
            streamed = "".join(c["choices"][0]["delta"].get("content") or "" for e in [events] for c in e
                               if c.get("choices"))
            assert streamed == "Sure, write to <EMAIL_ADDRESS> or call <PHONE_NUMBER> today.", (chunk, raw)
            assert "bob.jones" not in raw and "7946" not in raw
    flows = gateway.flows()
    assert all("evil.example" not in json.dumps(f) for f in flows)


def test_answers_that_are_not_what_they_say_are_read_as_text_or_refused(gateway: Gateway, upstream) -> None:
    url = f"https://localhost:{upstream.port}/raw"
    with gateway.client() as client:
        html = client.get(url, headers={**reply_header("<html>oops, mail bob.jones@evil.example</html>"),
                                        "x-demo-content-type": "application/json"})
        assert html.status_code == 200 and html.text == "<html>oops, mail <EMAIL_ADDRESS></html>"
        garbage = client.get(url, headers={"x-demo-reply": b"\xff\xfe not utf-8",
                                           "x-demo-content-type": "application/json"})
        assert garbage.status_code == 502 and garbage.json()["error"]["type"] == "response_unreadable"
    assert [f["fate"] for f in reversed(gateway.flows())] == ["completed", "response_unreadable"]


def test_compressed_request_bodies_are_masked(gateway: Gateway, upstream) -> None:
    from mitmproxy.net.encoding import encode

    body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": PROMPT}]}).encode()
    with gateway.client() as client:
        for ce in ("gzip", "br", "zstd", "deflate"):
            upstream.clear()
            r = client.post(f"https://localhost:{upstream.port}/echo/compressed", content=encode(body, ce),
                            headers={"content-type": "application/json", "content-encoding": ce})
            assert r.status_code == 200, r.text
            received = upstream.received[-1]
            # intake decoded it once, bounded; the body goes on as identity
            assert "content-encoding" not in dict((k.lower(), v) for k, v in received["headers"])
            sent = received["body"].decode()
            assert json.loads(sent)["messages"][0]["content"].startswith("Please write to <PERSON_1>")
            assert all(v not in sent for v in VALUES)


def test_uninspectable_bodies_are_refused_and_recorded(gateway: Gateway, upstream) -> None:
    with gateway.client() as client:
        r = client.post(f"https://localhost:{upstream.port}/echo/upload", content=b"\x00\x01binary\xff",
                        headers={"content-type": "application/octet-stream"})
        assert r.status_code == 415 and r.json()["error"]["type"] == "unsupported_content"
        form = client.post(f"https://localhost:{upstream.port}/echo/form", content=f"name={NAME}&mail={EMAIL}",
                           headers={"content-type": "application/x-www-form-urlencoded"})
        assert form.status_code == 200
        assert last_sent(upstream, "/echo/form") == "name=%3CPERSON_1%3E&mail=%3CEMAIL_ADDRESS_1%3E"
        text = client.post(f"https://localhost:{upstream.port}/echo/text", content=f"hi {EMAIL}".encode(),
                           headers={"content-type": "text/plain; charset=utf-8"})
        assert text.status_code == 200
        assert last_sent(upstream, "/echo/text") == "hi <EMAIL_ADDRESS_1>"
    assert not [r for r in upstream.received if r["path"] == "/echo/upload"]
    fates = {f["path"]: f["fate"] for f in gateway.flows()}
    assert fates["/echo/upload"] == "unsupported_content"


def test_store_holds_masked_bodies_and_encrypted_originals(gateway: Gateway, upstream) -> None:
    with gateway.client() as client:
        r = client.post(f"https://localhost:{upstream.port}/v1/chat/completions",
                        json={"model": "demo", "messages": [{"role": "user", "content": PROMPT}]})
        assert r.json()["choices"][0]["message"]["content"] == PROMPT
        with client.stream("POST", f"https://localhost:{upstream.port}/v1/chat/completions",
                           json={"model": "demo", "stream": True,
                                 "messages": [{"role": "user", "content": PROMPT}]}) as s:
            assert PROMPT in "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                                     for line in s.read().decode().splitlines()
                                     if line.startswith("data: {") and '"choices": [{' in line)
    flow_id = gateway.flows()[0]["flow_id"]
    shown = gateway.warden("show", flow_id, "--json").stdout
    assert "<EMAIL_ADDRESS_1>" in shown and EMAIL not in shown
    findings = json.loads(shown.splitlines()[0])["detail"]["pii"]["findings"]
    assert ["EMAIL_ADDRESS", "$.messages[0].content", 32, 56] == findings[1][:4]
    gateway.stop()
    store = gateway.db.read_bytes() + (gateway.db.parent / (gateway.db.name + ".journal")).read_bytes()
    for value in VALUES:
        assert value.encode() not in store
    originals = gateway.warden("show", flow_id, "--originals", "--key", str(gateway.originals_key)).stdout
    assert EMAIL in originals


def test_group_profiles_and_rule_profiles(gateway_factory, upstream) -> None:
    from tests.conftest import rules_for

    rules = rules_for(upstream.port, rules="""
  - name: research-unmasked
    filter: "~u /echo/research"
    action: allow
    masking: research
""").replace("rules:", """masking:
  operators:
    CREDIT_CARD: {type: mask, keep_last: 4}
    EMAIL_ADDRESS: hash
  profiles:
    - name: support
      groups: [support]
      operator: replace
    - name: research
      entities: [CREDIT_CARD]
rules:""", 1)
    gw = gateway_factory(rules)
    url = f"https://localhost:{upstream.port}/echo/x"
    with gw.client(token=gw.token("alice", groups=["dev"])) as dev, \
            gw.client(token=gw.token("sam", groups=["support"]), user="sam") as support:
        for client, body in ((dev, PROMPT), (dev, f"again {EMAIL}"), (support, PROMPT)):
            assert client.post(url, json={"t": body}).status_code == 200
        first, again, other = received_bodies(upstream, "/echo/x")
        assert dev.post(f"https://localhost:{upstream.port}/echo/research", json={"t": PROMPT}).status_code == 200
        research = last_sent(upstream, "/echo/research")
    digest = re.search(r"<EMAIL_ADDRESS:[0-9a-f]{16}>", first).group(0)
    assert digest in again  # keyed hash: the same value links across flows
    assert "***************1111" in first and "<PERSON_1>" in first
    assert json.loads(other)["t"] == ("Please write to <PERSON> at <EMAIL_ADDRESS>, phone <PHONE_NUMBER>, "
                                      "about card <CREDIT_CARD>. Thanks!")
    assert NAME in research and EMAIL in research and CARD not in research


def test_custom_recognizers_allow_and_deny_lists(gateway_factory, upstream) -> None:
    from tests.conftest import rules_for

    rules = rules_for(upstream.port).replace("rules:", r"""masking:
  allow_list: [support@acme.example]
  deny_lists: {CODENAME: [Project Falcon]}
  operators: {PRIVATE_KEY: redact}
  recognizers:
    - entity: ACME_ID
      patterns: ['\bACME-\d{6}\b']
    - entity: API_KEY
      patterns: ['\bsk-[A-Za-z0-9_-]{20,}', '\bghp_[A-Za-z0-9]{36}\b', '\bAKIA[0-9A-Z]{16}\b']
    - entity: PRIVATE_KEY
      patterns: ['-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----']
rules:""", 1)
    gw = gateway_factory(rules)
    secrets = ["ACME-123456", "sk-proj-abcdefghijklmnopqrstuvwx", "ghp_" + "a1" * 18, "AKIAIOSFODNN7EXAMPLE",
               "Project Falcon"]
    pem = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n"
           "-----END PRIVATE KEY-----")
    text = " ".join(secrets) + " mail support@acme.example\n" + pem + "\nend"
    with gw.client() as client:
        assert client.post(f"https://localhost:{upstream.port}/echo/x", json={"t": text}).status_code == 200
    sent = json.loads(last_sent(upstream, "/echo/x"))["t"]
    for secret in secrets + ["MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"]:
        assert secret not in sent
    assert "support@acme.example" in sent and "<ACME_ID_1>" in sent and "<CODENAME_1>" in sent
    assert sent.endswith("support@acme.example\n\nend")


def test_masked_body_stays_valid_json_with_tool_calls(gateway: Gateway, upstream) -> None:
    arguments = json.dumps({"to": EMAIL, "note": f"for {NAME}", "count": 3})
    body = {"model": "demo", "messages": [
        {"role": "user", "content": "send it"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                               "function": {"name": "mail", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "c1", "content": f"sent to {EMAIL}"}]}
    with gateway.client() as client:
        r = client.post(f"https://localhost:{upstream.port}/v1/chat/completions", json=body)
    assert r.status_code == 200
    sent = json.loads(received_bodies(upstream, "/v1/chat/completions")[-1])
    args = json.loads(sent["messages"][1]["tool_calls"][0]["function"]["arguments"])
    assert args == {"to": "<EMAIL_ADDRESS_1>", "note": "for <PERSON_1>", "count": 3}
    assert sent["messages"][2]["content"] == "sent to <EMAIL_ADDRESS_1>"
    assert sent["messages"][1]["tool_calls"][0]["id"] == "c1"


def test_malformed_form_is_refused_not_forwarded(gateway: Gateway, upstream) -> None:
    with gateway.client() as client:
        r = client.post(f"https://localhost:{upstream.port}/echo/bad-form", content=b"no-equals-sign&&%zz",
                        headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "malformed_body"
        assert client.get(f"https://localhost:{upstream.port}/echo/still-serving").status_code == 200
    assert not [r for r in upstream.received if r["path"] == "/echo/bad-form"]
    assert {f["path"]: f["fate"] for f in gateway.flows()}["/echo/bad-form"] == "malformed_body"


def test_admin_health_reports_the_analyzer(gateway: Gateway) -> None:
    health = httpx.get(f"{gateway.admin_url}/healthz", trust_env=False).json()
    assert health["status"] == "ok"
    assert health["pii"][0]["state"] == "ready" and len(health["pii"][0]["pids"]) >= 1
