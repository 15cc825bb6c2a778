"""Deny by default, end to end: the fields beside the conversation that used to reach the upstream verbatim are
masked, through the official SDKs and a real gateway; bodies the gateway cannot read one way only are refused;
documents inside strings are read; and what leaves is always rendered from what was analysed (issue 11)."""

from __future__ import annotations

import base64
import itertools
import json
import random
import re

import anthropic
import openai
import pytest

from addons.bodies.jsonlimits import parse_json
from tests.conftest import Gateway, rules_for
from tests.planted import Planter, decoded_strings

pytestmark = pytest.mark.e2e

NAME, EMAIL, CARD, SSN = "Maria Garcia", "maria.garcia@example.org", "4111 1111 1111 1111", "536-22-1234"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def sent_last(upstream, path: str) -> str:
    return [r["body"].decode() for r in upstream.received if r["path"].startswith(path)][-1]


def assert_masked(sent: str, *values: str) -> None:
    """``sent`` is JSON without any of ``values``, read the way a decoding reader would (data URIs, base64)."""
    readable = [sent, *decoded_strings(json.loads(sent))]
    for value in values:
        assert not any(value in text for text in readable), f"{value!r} reached the upstream: {sent}"


def test_openai_chat_fields_beside_the_conversation_are_masked(proxy_env: Gateway, upstream) -> None:
    client = openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key="unused", max_retries=0)
    hello = [{"role": "user", "content": "hello"}]
    leaks = {
        "metadata": ({"metadata": {"customer": EMAIL, EMAIL: "vip"}}, "<EMAIL_ADDRESS_1>"),
        "messages[].name": ({"messages": [{"role": "user", "name": NAME, "content": "hello"}]}, "<PERSON_1>"),
        "tools[].function.description": ({"tools": [{"type": "function", "function": {
            "name": "mail", "description": f"Writes to {EMAIL}", "parameters": {"type": "object", "properties": {}}}}]},
            "Writes to <EMAIL_ADDRESS_1>"),
        "prediction.content": ({"prediction": {"type": "content", "content": f"Dear customer, {EMAIL} is set"}},
                               "Dear customer, <EMAIL_ADDRESS_1> is set"),
        "an unknown top-level key": ({"extra_body": {"x_escalation": f"call {SSN}, card {CARD}"}},
                                     "call <US_SSN_1>, card <CREDIT_CARD_1>"),
    }
    for what, (fields, expected) in leaks.items():
        reply = client.chat.completions.create(model="demo", **{"messages": hello, **fields})
        assert reply.choices[0].message.content == "hello", what
        sent = sent_last(upstream, "/v1/chat/completions")
        assert_masked(sent, EMAIL, NAME, SSN, CARD)
        assert expected in sent, (what, sent)
        assert json.loads(sent)["model"] == "demo" and json.loads(sent)["messages"][0]["role"] == "user"
    findings = {f[1] for flow in proxy_env.flows() for f in json.loads(
        proxy_env.warden("show", flow["flow_id"], "--json").stdout.splitlines()[0])["detail"]["pii"]["findings"]}
    assert {"$.metadata.customer", '$.metadata["<EMAIL_ADDRESS_1>"]<key>', "$.messages[0].name",
            "$.tools[0].function.description", "$.prediction.content", "$.x_escalation"} <= findings
    proxy_env.stop()
    store = proxy_env.db.read_bytes() + (proxy_env.db.parent / (proxy_env.db.name + ".journal")).read_bytes()
    for value in (EMAIL, NAME, SSN, CARD):
        assert value.encode() not in store


def test_anthropic_documents_metadata_and_tools_are_masked(proxy_env: Gateway, upstream) -> None:
    client = anthropic.Anthropic(base_url=f"https://127.0.0.1:{upstream.port}", api_key="unused", max_retries=0)
    question = {"type": "text", "text": "summarise"}
    leaks = {
        "a document with a text source": {"messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": f"Write to {EMAIL}."}},
            question]}]},
        "a base64 text document": {"messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": b64(f"SSN {SSN}")}},
            question]}]},
        "metadata.user_id": {"metadata": {"user_id": EMAIL}},
        "a tool description": {"tools": [{"name": "lookup", "description": f"Looks up {NAME} by {EMAIL}",
                                          "input_schema": {"type": "object", "properties": {}}}]},
    }
    for what, fields in leaks.items():
        message = client.messages.create(model="demo", max_tokens=50,
                                         **{"messages": [{"role": "user", "content": [question]}], **fields})
        assert message.content[0].text == "summarise", what
        sent = sent_last(upstream, "/v1/messages")
        assert_masked(sent, EMAIL, NAME, SSN)
        assert "<EMAIL_ADDRESS_1>" in sent or "<US_SSN_1>" in base64.b64decode(
            json.loads(sent)["messages"][0]["content"][0]["source"]["data"]).decode(), (what, sent)


def test_files_and_data_uris_carrying_text_are_masked(proxy_env: Gateway, upstream) -> None:
    client = openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key="unused", max_retries=0)
    client.responses.create(model="demo", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "read this"},
        {"type": "input_file", "filename": f"notes for {NAME} ({EMAIL}).txt",
         "file_data": f"data:text/plain;base64,{b64(EMAIL)}"}]}])
    sent = sent_last(upstream, "/v1/responses")
    assert_masked(sent, EMAIL, NAME)
    part = json.loads(sent)["input"][0]["content"][1]
    assert part["filename"] == "notes for <PERSON_1> (<EMAIL_ADDRESS_1>).txt"
    assert base64.b64decode(part["file_data"].split(",", 1)[1]) == b"<EMAIL_ADDRESS_1>"
    client.chat.completions.create(model="demo", messages=[{"role": "user", "content": [
        {"type": "text", "text": "see attached"},
        {"type": "file", "file": {"filename": f"from {EMAIL} (1).txt",
                                  "file_data": f"data:text/plain;base64,{b64('hi')}"}},
        {"type": "image_url", "image_url": {"url": f"data:text/plain,card%20{CARD.replace(' ', '%20')}"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64('a note: ' + EMAIL)}"}}]}])
    sent = sent_last(upstream, "/v1/chat/completions")
    assert_masked(sent, EMAIL, CARD)
    parts = json.loads(sent)["messages"][0]["content"]
    assert parts[1]["file"]["filename"] == "from <EMAIL_ADDRESS_1> (1).txt"
    assert parts[2]["image_url"]["url"] == "data:text/plain,card%20%3CCREDIT_CARD_1%3E"


def test_binary_content_inside_a_body_is_refused_or_passed_and_recorded(gateway_factory, upstream) -> None:
    image = {"model": "demo", "messages": [{"role": "user", "content": [
        {"type": "text", "text": f"who is {NAME}?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}]}
    url = f"https://localhost:{upstream.port}/v1/chat/completions"
    blocking = gateway_factory()
    with blocking.client() as client:
        r = client.post(url, json=image)
    assert r.status_code == 415 and r.json()["error"]["type"] == "unsupported_content"
    assert "$.messages[0].content[1].image_url.url (image/png: binary)" in r.json()["error"]["message"]
    assert [f["fate"] for f in blocking.flows()] == ["unsupported_content"]
    shown = blocking.warden("show", blocking.flows()[0]["flow_id"], "--json").stdout
    assert NAME not in shown  # the refused body is on record masked, as it would have left
    blocking.stop()

    passing = gateway_factory(
        rules_for(upstream.port).replace("rules:", "masking:\n  unknown_content: pass\nrules:", 1), name="pass")
    with passing.client() as client:
        assert client.post(url, json=image).status_code == 200
    sent = json.loads(sent_last(upstream, "/v1/chat/completions"))
    assert sent["messages"][0]["content"][0]["text"] == "who is <PERSON_1>?"
    assert sent["messages"][0]["content"][1] == image["messages"][0]["content"][1]  # the image, untouched
    shown = passing.warden("show", passing.flows()[0]["flow_id"], "--json").stdout
    detail = json.loads(shown.splitlines()[0])["detail"]
    assert detail["pii"]["skipped"] == (
        "content in the body ($.messages[0].content[1].image_url.url (image/png: binary)): "
        "not inspected, passed (masking.unknown_content: pass)")


def test_bodies_are_read_one_way_and_rendered_from_what_was_analysed(gateway: Gateway, upstream) -> None:
    upstream.clear()
    url = f"https://localhost:{upstream.port}/v1/chat/completions"
    twice = '{"model": "demo", "messages": [{"role": "user", "content": "' + EMAIL + '", "content": "hi"}]}'
    with gateway.client() as client:
        for content_type in ("application/json", ""):
            r = client.post(url, content=twice, headers={"content-type": content_type})
            assert r.status_code == 400 and r.json()["error"]["type"] == "duplicate_json_key", r.text
            assert 'the key "content" twice' in r.json()["error"]["message"]
        deep = client.post(url, content='{"a": ' + "[" * 200 + "]" * 200 + "}", headers={"content-type": ""})
        assert deep.status_code == 400 and "more than 128 levels deep" in deep.json()["error"]["message"]
        bare = client.post(f"https://localhost:{upstream.port}/echo/string", content=json.dumps(f"mail {EMAIL}"),
                           headers={"content-type": "application/json"})
        assert bare.status_code == 200
        assert json.loads(sent_last(upstream, "/echo/string")) == "mail <EMAIL_ADDRESS_1>"
        spaced = '{"model":"demo",   "messages":[{"role":"user","content":"nothing here \\u00e9"}]}'
        assert client.post(url, content=spaced, headers={"content-type": "application/json"}).status_code == 200
    assert not [r for r in upstream.received if EMAIL.encode() in r["body"]]
    # Nothing was found, and still the body that left is the one rendered from what was analysed.
    assert sent_last(upstream, "/v1/chat/completions") == json.dumps(json.loads(spaced), ensure_ascii=False)
    assert sorted(f["fate"] for f in gateway.flows()) == ["completed", "completed", "duplicate_json_key",
                                                           "duplicate_json_key", "malformed_body"]


def test_a_random_body_with_planted_values_leaves_without_them(gateway: Gateway, upstream) -> None:
    """One sample of the unit property (tests/addons/masking/test_planted_values.py) through the real analyzer."""
    rng = random.Random(20)
    with gateway.client() as client:
        for value, path in itertools.product((EMAIL, CARD, SSN), ("/v1/chat/completions", "/v1/messages", "/echo/x")):
            planter = Planter(rng, value)
            document = planter.body(path)
            r = client.post(f"https://localhost:{upstream.port}{path}", json=document)
            assert "x-warden-error" not in r.headers, r.text  # forwarded (the demo answers 400 to a body not an object)
            sent = sent_last(upstream, path)
            parse_json(sent)  # valid, every key once
            assert_masked(sent, value)
            assert re.search(r"<(EMAIL_ADDRESS|CREDIT_CARD|US_SSN|PHONE_NUMBER)_\d+>", "".join(
                decoded_strings(json.loads(sent)))), sent
