"""Obfuscated values, end to end (issue 11): full-width digits, invisible characters inside an address, the at/dot
spellings, percent-encoding, card digits grouped anyhow and values split across the text parts of one message are
masked whole through a real gateway, in requests and in streamed answers; benign text that looks a little like them
leaves as it was written."""

from __future__ import annotations

import base64
import json

import anthropic
import openai
import pytest

from scripts.demo_upstream import reply_header
from tests.conftest import Gateway, rules_for

pytestmark = pytest.mark.e2e

CARD, EMAIL = "4111 1111 1111 1111", "jane@acme.com"
# (how it is written, the entity, the words around it): each must leave as exactly one pseudonym
OBFUSCATED = [
    ("４１１１ １１１１ １１１１ １１１１", "CREDIT_CARD", "card"),
    ("+１ ４１５ ５５５ ０１３２", "PHONE_NUMBER", "phone"),
    ("５３６-２２-１２３４", "US_SSN", "SSN"),
    *[(f"ja{mark}ne@ac{mark}me.com", "EMAIL_ADDRESS", "mail") for mark in "\u200b\u200c\u200d\u2060\ufeff\u00ad"],
    ("ｊａｎｅ＠ａｃｍｅ．ｃｏｍ", "EMAIL_ADDRESS", "mail"),
    ("jane[at]acme[dot]com", "EMAIL_ADDRESS", "mail"),
    ("jane (at) acme (dot) com", "EMAIL_ADDRESS", "mail"),
    ("jane at acme dot com", "EMAIL_ADDRESS", "mail"),
    ("jane%40acme.com", "EMAIL_ADDRESS", "mail"),
    ("4111 11 1111 111 111", "CREDIT_CARD", "card"),
    ("4111.1111.1111.1111", "CREDIT_CARD", "card"),
]
BENIGN = ("Meet me at the office at noon. Look at the dot product of a and b, not the polka dot. "
          "Sales rose 5% (from 3%) to 100%, 50 % of them online. 你好，世界！（テスト）「こんにちは」。"
          "Version 1.2.3 shipped on 2024-01-05, 05.01.2024 and 1/5/2024; build 10.4.22; pi is 3.14159265358979. "
          "Use a[i] (at most) and x [dot] notation in the docs.")


def chat(content) -> dict:
    return {"model": "demo", "messages": [{"role": "user", "content": content}]}


def sent(upstream, path: str) -> dict:
    return json.loads([r["body"] for r in upstream.received if r["path"].startswith(path)][-1])


def test_obfuscated_values_are_masked_whole_and_restored_as_written(gateway: Gateway, upstream) -> None:
    url = f"https://localhost:{upstream.port}/v1/chat/completions"
    with gateway.client() as client:
        for value, entity, word in OBFUSCATED:
            prompt = f"Please note my {word} {value} for later."
            reply = client.post(url, json=chat(prompt))
            assert reply.status_code == 200, reply.text
            assert sent(upstream, "/v1/chat/completions")["messages"][0]["content"] == \
                f"Please note my {word} <{entity}_1> for later.", value
            assert reply.json()["choices"][0]["message"]["content"] == prompt  # the caller reads it as written


def test_benign_text_like_obfuscations_leaves_unaltered(gateway: Gateway, upstream) -> None:
    with gateway.client() as client:
        reply = client.post(f"https://localhost:{upstream.port}/v1/chat/completions", json=chat(BENIGN))
    assert reply.status_code == 200
    assert sent(upstream, "/v1/chat/completions")["messages"][0]["content"] == BENIGN


def test_base64_text_is_read(gateway: Gateway, upstream) -> None:
    """A text document sent as base64 (``encoded.py``) is decoded and masked, obfuscated or not."""
    document = base64.b64encode(f"write to {EMAIL} or jane[at]acme[dot]com".encode()).decode()
    body = {"model": "demo", "max_tokens": 50, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": document}},
        {"type": "text", "text": "summarise"}]}]}
    with gateway.client() as client:
        assert client.post(f"https://127.0.0.1:{upstream.port}/v1/messages", json=body).status_code == 200
    data = sent(upstream, "/v1/messages")["messages"][0]["content"][0]["source"]["data"]
    assert base64.b64decode(data).decode() == "write to <EMAIL_ADDRESS_1> or <EMAIL_ADDRESS_2>"


def test_a_value_split_across_text_parts_is_masked_and_restored_whole(proxy_env: Gateway, upstream) -> None:
    client = openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key="unused", max_retries=0)
    parts = [{"type": "text", "text": "card 4111 1111"}, {"type": "text", "text": " 1111 1111 and mail jane@ac"},
             {"type": "text", "text": "me.com, thanks"}]
    reply = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": parts}])  # type: ignore[misc,list-item]
    texts = [p["text"] for p in sent(upstream, "/v1/chat/completions")["messages"][0]["content"]]
    assert texts == ["card <CREDIT_CARD_1>", " and mail <EMAIL_ADDRESS_1>", ", thanks"]
    assert reply.choices[0].message.content == "card 4111 1111 1111 1111 and mail jane@acme.com, thanks"

    anthropic_client = anthropic.Anthropic(base_url=f"https://127.0.0.1:{upstream.port}", api_key="unused",
                                           max_retries=0)
    message = anthropic_client.messages.create(model="demo", max_tokens=50, messages=[{"role": "user", "content": [
        {"type": "text", "text": "my SSN is 536-22"}, {"type": "text", "text": "-1234, card 4111 1111 1111"},
        {"type": "text", "text": " 1111."}]}])
    blocks = [b["text"] for b in sent(upstream, "/v1/messages")["messages"][0]["content"]]
    assert blocks == ["my SSN is <US_SSN_1>", ", card <CREDIT_CARD_1>", "."]
    assert message.content[0].text == "my SSN is 536-22-1234, card 4111 1111 1111 1111."  # type: ignore[union-attr]


def test_split_values_masked_by_other_operators(gateway_factory, upstream) -> None:
    operators = "masking:\n  operators:\n    CREDIT_CARD: {type: mask, keep_last: 4}\n    EMAIL_ADDRESS: replace\n"
    rules = rules_for(upstream.port).replace("rules:", operators + "rules:", 1)
    gateway = gateway_factory(rules, name="operators")
    parts = [{"type": "text", "text": "card 4111 1111"}, {"type": "text", "text": " 1111 1111, mail jane@ac"},
             {"type": "text", "text": "me.com"}]
    with gateway.client() as client:
        assert client.post(f"https://localhost:{upstream.port}/v1/chat/completions",
                           json=chat(parts)).status_code == 200
    texts = [p["text"] for p in sent(upstream, "/v1/chat/completions")["messages"][0]["content"]]
    assert texts == ["card *********", "******1111, mail <EMAIL_ADDRESS>", ""]


def test_streamed_obfuscated_values_are_masked(gateway: Gateway, upstream) -> None:
    """PII the upstream streams obfuscated never reaches the client, however the stream is cut: the stream scanner
    reads text normalised as the analyzer does (spelled-out addresses with spaces: tests/addons/masking/test_stream.py,
    as model tokens cut them)."""
    leaks = {"jane[at]acme[dot]com": "<EMAIL_ADDRESS>", "ja\u200bne@acme.com": "<EMAIL_ADDRESS>",
             "４１１１ １１１１ １１１１ １１１１": "<CREDIT_CARD>", "jane%40acme.com": "<EMAIL_ADDRESS>"}
    for leak, expected in leaks.items():
        for size in (1, 3, 7):
            headers = {**reply_header(f"Write to {leak} today."), "x-demo-chunk-chars": str(size)}
            with gateway.client() as client, client.stream(
                    "POST", f"https://localhost:{upstream.port}/v1/chat/completions", headers=headers,
                    json={**chat("hi"), "stream": True}) as response:
                text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                               for line in response.iter_lines() if line.startswith("data: {"))
            assert text == f"Write to {expected} today.", (leak, size, text)
