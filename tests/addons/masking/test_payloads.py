"""Payload adapters: which text values are analysed, and bodies that stay valid with their shape intact."""

from __future__ import annotations

import json

import pytest

from addons.flow.errors import MalformedBody
from addons.masking.payloads import adapter_for, body_kind, parse_body


def slots(path: str, body: object, content_type: str = "application/json", response: bool = False,
          kind: str = "text") -> dict[str, str]:
    """The body's slots of ``kind``: ``text`` is the conversation text the adapter picks."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    payload, _ = parse_body(path, content_type, raw, response=response)
    return {s.path: s.text for s in payload.slots if s.kind == kind}


def upper(path: str, body: dict, response: bool = False) -> dict:
    payload, _ = parse_body(path, "application/json", json.dumps(body).encode(), response=response)
    for slot in payload.slots:
        if slot.kind == "text":
            slot.set(slot.text.upper())
    return json.loads(payload.render())


def test_openai_chat_request_and_response() -> None:
    body = {"model": "gpt", "user": "ann@x.example", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi Ann"},
                                     {"type": "image_url", "image_url": {"url": "data:x"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "mail", "arguments": '{"to": "ann", "n": 2}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sent"}]}
    assert slots("/v1/chat/completions", body) == {
        "$.messages[0].content": "be brief", "$.messages[1].content[0].text": "hi Ann",
        "$.messages[2].tool_calls[0].function.arguments<json>$.to": "ann", "$.messages[3].content": "sent",
        "$.user": "ann@x.example"}
    out = upper("/v1/chat/completions", body)
    assert out["messages"][1]["content"][1] == body["messages"][1]["content"][1]  # the image part is untouched
    assert json.loads(out["messages"][2]["tool_calls"][0]["function"]["arguments"]) == {"to": "ANN", "n": 2}
    assert out["model"] == "gpt" and out["messages"][0]["role"] == "system"
    response = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok", "refusal": None}}]}
    assert slots("/v1/chat/completions", response, response=True) == {"$.choices[0].message.content": "ok"}


def test_openai_responses_embeddings_and_anthropic() -> None:
    assert slots("/v1/responses", {"instructions": "be kind", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
        {"type": "function_call_output", "call_id": "x", "output": "done"}]}) == {
        "$.instructions": "be kind", "$.input[0].content[0].text": "hello", "$.input[1].output": "done"}
    assert slots("/v1/responses", {"input": "just text"}) == {"$.input": "just text"}
    assert slots("/v1/embeddings", {"input": ["a", "b", [1, 2]]}) == {"$.input[0]": "a", "$.input[1]": "b"}
    assert slots("/v1/messages", {"system": [{"type": "text", "text": "sys"}], "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"q": "Ann"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "r"}]}]}]}) == {
        "$.system[0].text": "sys", "$.messages[0].content": "hi", "$.messages[1].content[0].input.q": "Ann",
        "$.messages[2].content[0].content[0].text": "r"}


def test_generic_json_form_and_text() -> None:
    assert slots("/any/api?x=1", {"a": ["x", {"b": "y", "n": 1, "ok": True}], "weird key": "z"}) == {
        "$.a[0]": "x", "$.a[1].b": "y", '$["weird key"]': "z"}
    assert adapter_for("/openai/deployments/gpt/chat/completions?api-version=1").name == "openai-chat"
    payload, name = parse_body("/f", "application/x-www-form-urlencoded", b"name=Ann+Lee&empty=&x=%3C")
    assert name == "form" and {s.path: s.text for s in payload.slots if s.kind == "text"} == {
        "form.name": "Ann Lee", "form.x": "<"}
    assert [s.text for s in payload.slots if s.kind == "key"] == ["name", "empty", "x"]  # names are analysed too
    payload.slots[0].set("<PERSON_1>")
    assert payload.render() == b"name=%3CPERSON_1%3E&empty=&x=%3C"
    payload, name = parse_body("/t", "text/plain; charset=latin-1", "café Ann".encode("latin-1"))
    payload.slots[0].set(payload.slots[0].text.replace("Ann", "<PERSON_1>"))
    assert payload.render() == "café <PERSON_1>".encode("latin-1")


@pytest.mark.parametrize(("content_type", "body", "kind"), [
    ("application/json", b"{}", "json"), ("application/vnd.api+json", b"[]", "json"), ("", b'{"a": 1}', "json"),
    ("", b"plain words", "text"), ("application/octet-stream", b"\x00\x01", "binary"), ("", b"\xff\xfe", "binary"),
    ("multipart/form-data; boundary=x", b"--x", "multipart"), ("multipart/mixed; boundary=x", b"--x", "binary"),
    ("application/x-ndjson", b"{}\n", "jsonl"), ("text/event-stream", b"data: x\n\n", "sse"),
    ("application/json", b"", "empty"),
])
def test_body_kinds(content_type: str, body: bytes, kind: str) -> None:
    assert body_kind(content_type, body) == kind


def test_malformed_bodies_are_named() -> None:
    with pytest.raises(MalformedBody, match="not valid JSON: Expecting value at line 1, column 7"):
        parse_body("/v1/chat/completions", "application/json", b'{"a": ')
    with pytest.raises(MalformedBody, match="form body does not parse"):
        parse_body("/f", "application/x-www-form-urlencoded", b"no-equals")
    with pytest.raises(MalformedBody, match="unknown charset"):
        parse_body("/t", "text/plain; charset=klingon", b"x")
