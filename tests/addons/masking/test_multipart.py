"""Multipart forms and JSON Lines: every text part, file name and line analysed; binary parts uninspected; the body
rendered again part for part, line for line (issue 11, item 9)."""

from __future__ import annotations

import json

import httpx
import pytest

from addons.flow.errors import DuplicateJsonKey, MalformedBody
from addons.masking.payloads import body_kind, parse_body
from addons.masking.payloads.base import Payload

EMAIL, NAME = "jane@acme.com", "Maria Garcia"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"
BATCH = [
    {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"Email {EMAIL}"}],
              "metadata": {"who": NAME}}},
    {"custom_id": "req-2", "method": "POST", "url": "/v1/responses", "body": {"model": "gpt-4o", "input": NAME}},
    {"messages": [{"role": "user", "content": f"fine-tune me, {EMAIL}"}]},
]


def jsonl(lines: list) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def form(files: dict, data: dict | None = None) -> tuple[str, bytes]:
    request = httpx.Request("POST", "https://api.openai.com/v1/files", files=files, data=data)
    return request.headers["content-type"], request.read()


def masked(payload: Payload, *values: str) -> bytes:
    """The payload rendered with every value replaced where a slot holds it (as masking would)."""
    for slot in payload.slots:
        text = slot.text
        for i, value in enumerate(values, 1):
            text = text.replace(value, f"<V_{i}>")
        if text != slot.text:
            slot.set(text)
    return payload.render()


def test_a_batch_upload_is_masked_line_by_line_and_stays_jsonl() -> None:
    content_type, body = form({"file": ("batch.jsonl", jsonl(BATCH))}, {"purpose": "batch"})
    payload, adapter = parse_body("/v1/files", content_type, body)
    assert adapter == "multipart" and not payload.uninspected
    paths = {slot.path for slot in payload.slots}
    assert {"multipart[1]<jsonl>[0].body.messages[0].content", "multipart[1]<jsonl>[0].body.metadata.who",
            "multipart[1]<jsonl>[1].body.input", "multipart[1]<jsonl>[2].messages[0].content",
            "multipart[1]<filename>", "multipart[0]"} <= paths
    assert "multipart[1]<jsonl>[0].custom_id" not in paths and "multipart[1]<jsonl>[0].url" not in paths
    out = masked(payload, EMAIL, NAME)
    assert EMAIL.encode() not in out and NAME.encode() not in out
    assert out.startswith(body.split(b"\r\n", 1)[0])  # the same boundary
    assert parse_body("/v1/files", content_type, out)[1] == "multipart"  # still a form
    file_part = out.split(b'filename="batch.jsonl"\r\nContent-Type: application/octet-stream\r\n\r\n')[1]
    lines = file_part.split(b"\r\n--")[0].decode().splitlines()
    assert [json.loads(line)["custom_id"] for line in lines[:2]] == ["req-1", "req-2"]
    assert json.loads(lines[0])["body"]["messages"][0]["content"] == "Email <V_1>"
    assert json.loads(lines[1])["body"] == {"model": "gpt-4o", "input": "<V_2>"}


def test_an_unchanged_form_renders_byte_for_byte() -> None:
    content_type, body = form({"file": ("notes.txt", b"plain words\r\nsecond line"), "image": ("a.png", PNG)},
                              {"purpose": "assistants", "model": "whisper-1"})
    payload, _ = parse_body("/v1/files", content_type, body)
    assert payload.render() == body


def test_binary_parts_are_uninspected_and_passed_untouched() -> None:
    content_type, body = form({"file": ("speech.wav", PNG, "audio/wav")}, {"model": "whisper-1",
                                                                           "prompt": f"names: {NAME}"})
    payload, _ = parse_body("/v1/audio/transcriptions", content_type, body, inert=lambda v: v in ("file", "model"))
    assert [(u.path, u.media_type) for u in payload.uninspected] == [("multipart[2].file", "audio/wav")]
    out = masked(payload, NAME)
    assert PNG in out and NAME.encode() not in out and b"names: <V_1>" in out


def test_file_names_and_part_names_are_analysed() -> None:
    content_type, body = form({"file": (f"{EMAIL}.txt", b"hello"), f"note {NAME}": (None, b"x")})
    payload, _ = parse_body("/v1/files", content_type, body)
    assert {slot.text for slot in payload.slots} >= {f"{EMAIL}.txt", f"note {NAME}"}
    out = masked(payload, EMAIL, NAME)
    assert b'name="file"; filename="<V_1>.txt"' in out and b'name="note <V_2>"' in out
    assert EMAIL.encode() not in out and NAME.encode() not in out


@pytest.mark.parametrize(("files", "kind"), [
    ({"file": ("data.json", json.dumps({"to": EMAIL}).encode(), "application/json")}, "json"),
    ({"file": ("a.csv", f"name,email\n{NAME},{EMAIL}\n".encode(), "text/csv")}, "csv"),
    ({"file": ("a.bin", f"undeclared text {EMAIL}".encode())}, "sniffed"),
    ({"file": ("latin.txt", f"caf\xe9 {EMAIL}".encode("latin-1"), "text/plain; charset=latin-1")}, "charset"),
])
def test_text_parts_by_type_or_content(files: dict, kind: str) -> None:
    content_type, body = form(files)
    payload, _ = parse_body("/v1/files", content_type, body)
    assert not payload.uninspected, kind
    out = masked(payload, EMAIL)
    assert EMAIL.encode() not in out and b"<V_1>" in out, kind


def test_a_malformed_jsonl_line_is_named() -> None:
    content_type, body = form({"file": ("batch.jsonl", jsonl(BATCH[:1]) + b'{"custom_id": \n')})
    with pytest.raises(MalformedBody, match=r"line 2 of the JSONL part multipart\[0\]"):
        parse_body("/v1/files", content_type, body)
    twice = b'{"a": "x"}\n{"content": "' + EMAIL.encode() + b'", "content": "hi"}\n'
    with pytest.raises(DuplicateJsonKey, match="line 2 of the JSONL body"):
        parse_body("/v1/batches/input", "application/x-ndjson", twice)


@pytest.mark.parametrize("body", [b"not a form", b"--b\r\nno disposition\r\n\r\nx\r\n--b--\r\n"])
def test_a_form_that_does_not_parse_is_refused(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        parse_body("/v1/files", "multipart/form-data; boundary=b", body)
    with pytest.raises(MalformedBody, match="no boundary"):
        parse_body("/v1/files", "multipart/form-data", body)


def test_a_jsonl_body_is_read_line_by_line_with_its_line_ends() -> None:
    lines = b'{"text": "mail ' + EMAIL.encode() + b'"}\r\n\n{"text": "a\xe2\x80\xa8b ' + NAME.encode() + b'"}'
    assert body_kind("application/jsonl", lines) == "jsonl"
    payload, adapter = parse_body("/v1/anything", "application/jsonl; charset=utf-8", lines)
    assert adapter == "jsonl"
    assert payload.render() == lines  # unchanged: byte for byte
    out = masked(payload, EMAIL, NAME)
    assert out == b'{"text": "mail <V_1>"}\r\n\n{"text": "a\xe2\x80\xa8b <V_2>"}'
    response, _ = parse_body("/v1/anything", "application/x-ndjson", out, response=True)
    assert [slot.text for slot in response.slots] == ["mail <V_1>", "a\u2028b <V_2>"]
