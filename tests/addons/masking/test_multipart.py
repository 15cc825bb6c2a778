"""Multipart forms and JSON Lines: every text part, file name and line analysed; binary parts uninspected; the body
rendered again part for part, line for line (issue 11, item 9)."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

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


def raw_form(*parts: bytes) -> tuple[str, bytes]:
    """A form written by hand, each part its header lines, a blank line and its content."""
    return "multipart/form-data; boundary=b", b"".join(b"--b\r\n" + part + b"\r\n" for part in parts) + b"--b--\r\n"


MAIL = EMAIL.encode()


@pytest.mark.parametrize("part", [
    b'Content-Disposition: form-data; name="purpose"; note="' + MAIL + b'"\r\n\r\nbatch',
    b'Content-Disposition: form-data; name="purpose"\r\nX-Note: ' + MAIL + b'\r\n\r\nbatch',
    b'Content-Disposition: form-data; name="purpose"\r\nX-Note: first line\r\n  ' + MAIL + b'\r\n\r\nbatch',
    b'Content-Disposition: form-data; name="file";\r\n filename="' + MAIL + b'.txt"\r\n\r\nhello',
    b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'
    b'Content-Type: text/plain; charset=utf-8; note="' + MAIL + b'"\r\n\r\nhello',
    b'Content-Disposition: form-data; name="file"; filename="' + MAIL + b'.txt"; filename*=UTF-8\'\'' +
    quote(EMAIL).encode() + b'.txt\r\n\r\nhello',
    b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n' + MAIL + b': x\r\n\r\nhello',
], ids=["disposition parameter", "part header", "folded header", "folded disposition", "content-type parameter",
        "filename and filename* that agree", "header name"])
def test_part_headers_leave_only_as_read(part: bytes) -> None:
    content_type, body = raw_form(part)
    payload, _ = parse_body("/v1/files", content_type, body)
    out = masked(payload, EMAIL)
    assert MAIL not in out
    [again] = parse_body("/v1/files", content_type, out)[0].document
    assert again.name in ("purpose", "file")
    headers = out.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    assert [line.split(b":")[0] for line in headers] in ([b"Content-Disposition"],
                                                         [b"Content-Disposition", b"Content-Type"])
    if again.content_type:
        assert again.content_type == "text/plain; charset=utf-8"


@pytest.mark.parametrize(("part", "problem"), [
    (b'Content-Disposition: form-data; name="file"; filename="' + MAIL + b'.txt"; filename*=UTF-8\'\'notes.txt'
     b'\r\n\r\nhello', "two different filenames"),
    (b'Content-Disposition: form-data; name="' + MAIL + b'"; name="purpose"\r\n\r\nbatch', "names its name twice"),
    (b'Content-Disposition: form-data; name="file"; filename="a.txt"; filename="' + MAIL + b'"\r\n\r\nhello',
     "names its filename twice"),
    (b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
     + base64.b64encode(b"mail " + MAIL), "Content-Transfer-Encoding"),
    (b'Content-Disposition: form-data; name="file"\r\nContent-Type: text/plain\r\nContent-Type: image/png\r\n\r\nx',
     "has Content-Type twice"),
    (b'Content-Disposition: form-data; name="a"\r\nContent-Disposition: form-data; name="' + MAIL + b'"\r\n\r\nx',
     "has Content-Disposition twice"),
    (b'Content-Disposition: form-data; name="file"; filename="' + MAIL + b'\r\n\r\nx', "do not parse"),
    (b'Content-Disposition: form-data; name="file"\r\nContent-Type: text/' + MAIL + b' x\r\n\r\nx',
     "not a media type"),
    (b'Content-Disposition: form-data; name="file"\r\nContent-Type: text/plain; charset=' + MAIL + b'\r\n\r\nx',
     "charset"),
], ids=["filename and filename* disagree", "name twice", "filename twice", "base64 transfer encoding",
        "content-type twice", "disposition twice", "unclosed quote", "bad media type", "unknown charset"])
def test_a_part_that_reads_two_ways_is_refused_naming_it(part: bytes, problem: str) -> None:
    content_type, body = raw_form(b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch', part)
    with pytest.raises(MalformedBody, match=r"multipart\[1\]") as refused:
        parse_body("/v1/files", content_type, body)
    assert problem in refused.value.message and EMAIL not in refused.value.message
