"""Uploads end to end (issue 11, item 9): the openai SDK's Files API through a real gateway. A Batch JSONL file's lines
are masked and stay JSONL, file names too; a binary part is refused (415, naming it) or, with
``masking.unknown_content: pass``, passed and recorded as not inspected; a malformed line is a 400 naming it; a
JSON Lines body sent directly is masked line by line."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import openai
import pytest

from tests.conftest import Gateway, rules_for

pytestmark = pytest.mark.e2e

NAME, EMAIL, SSN = "Maria Garcia", "maria.garcia@example.org", "536-22-1234"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
NO_FILES_RULE = """  - name: no-files
    filter: "~u /v1/files"
    action: block
    reason: File uploads are not allowed
"""


def uploads_allowed(port: int, masking: str = "") -> str:
    rules = rules_for(port)
    assert NO_FILES_RULE in rules
    return rules.replace(NO_FILES_RULE, "").replace("rules:", f"masking:\n{masking}  entities: [PERSON, "
                                                              "EMAIL_ADDRESS, US_SSN]\nrules:", 1)


def sdk(gateway: Gateway, upstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key="unused", max_retries=0,
                         http_client=gateway.client())


def sent_to(upstream, path: str) -> bytes:
    return [r["body"] for r in upstream.received if r["path"].startswith(path)][-1]


def detail(gateway: Gateway, path: str) -> dict:
    [flow] = [f for f in gateway.flows() if f["path"] == path]
    return json.loads(gateway.warden("show", flow["flow_id"], "--json").stdout.splitlines()[0])["detail"]


def assert_store_clean(gateway: Gateway, *values: str) -> None:
    gateway.stop()
    store = gateway.db.read_bytes() + (gateway.db.parent / (gateway.db.name + ".journal")).read_bytes()
    for value in values:
        assert value.encode() not in store, f"{value!r} is in the store"


def test_a_batch_file_is_masked_line_by_line(gateway_factory, upstream, tmp_path: Path) -> None:
    gateway = gateway_factory(uploads_allowed(upstream.port))
    lines = [{"custom_id": f"task-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": [
                  {"role": "system", "content": "You answer customer mail."},
                  {"role": "user", "content": f"Customer {NAME} ({EMAIL}) asks about SSN {SSN}, ticket {i}."}]}}
             for i in range(3)]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with batch.open("rb") as f:
        uploaded = sdk(gateway, upstream).files.create(file=f, purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.filename == "batch.jsonl"

    body = sent_to(upstream, "/v1/files")
    for value in (NAME, EMAIL, SSN):
        assert value.encode() not in body
    content = body.split(b'filename="batch.jsonl"')[1].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 2)[0]
    sent = [json.loads(line) for line in content.decode().splitlines()]  # still JSONL, one task a line
    assert [line["custom_id"] for line in sent] == ["task-0", "task-1", "task-2"]
    assert sent[2]["body"]["messages"][1]["content"] == \
        "Customer <PERSON_1> (<EMAIL_ADDRESS_1>) asks about SSN <US_SSN_1>, ticket 2."
    assert sent[0]["body"]["messages"][0] == lines[0]["body"]["messages"][0]
    assert b'name="purpose"\r\n\r\nbatch\r\n' in body
    assert detail(gateway, "/v1/files")["pii"]["adapter"] == "multipart"
    assert_store_clean(gateway, NAME, EMAIL, SSN)


def test_a_binary_part_is_refused_or_passed_and_recorded(gateway_factory, upstream, tmp_path: Path) -> None:
    image = tmp_path / f"{NAME}.png"
    image.write_bytes(PNG)
    blocking = gateway_factory(uploads_allowed(upstream.port), name="block")
    with image.open("rb") as f, pytest.raises(openai.APIStatusError) as refused:
        sdk(blocking, upstream).files.create(file=f, purpose="vision")
    assert refused.value.status_code == 415
    message = refused.value.response.json()["error"]["message"]
    assert "multipart[1].file (image/png: binary)" in message and NAME not in message
    assert not [r for r in upstream.received if r["path"] == "/v1/files"]
    blocking.stop()

    passing = gateway_factory(uploads_allowed(upstream.port, "  unknown_content: pass\n"), name="pass")
    with image.open("rb") as f:
        sdk(passing, upstream).files.create(file=f, purpose="vision")
    body = sent_to(upstream, "/v1/files")
    assert PNG in body and NAME.encode() not in body and b'filename="<PERSON_1>.png"' in body
    assert detail(passing, "/v1/files")["pii"]["skipped"] == (
        "content in the body (multipart[1].file (image/png: binary)): not inspected, passed "
        "(masking.unknown_content: pass)")
    assert_store_clean(passing, NAME)


def test_malformed_lines_are_refused_and_jsonl_bodies_masked(gateway_factory, upstream) -> None:
    gateway = gateway_factory(uploads_allowed(upstream.port))
    broken = (json.dumps({"custom_id": "a", "url": "/v1/responses", "body": {"input": "hi"}}) + "\n{oops\n").encode()
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(gateway, upstream).files.create(file=("batch.jsonl", broken), purpose="batch")
    assert "line 2 of the JSONL part multipart[1].file" in refused.value.response.json()["error"]["message"]

    lines = [{"note": f"call {NAME}"}, {"note": f"mail {EMAIL}"}]
    with gateway.client() as client:
        r = client.post(f"https://localhost:{upstream.port}/echo/records", content="".join(
            json.dumps(line) + "\n" for line in lines), headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200
    assert [json.loads(line) for line in r.json()["body"].splitlines()] == lines  # restored for the caller
    assert sent_to(upstream, "/echo/records").decode().splitlines() == [
        json.dumps({"note": "call <PERSON_1>"}), json.dumps({"note": "mail <EMAIL_ADDRESS_1>"})]
    assert_store_clean(gateway, NAME, EMAIL)


def test_part_headers_leave_only_as_read_and_a_part_read_two_ways_is_refused(gateway_factory, upstream) -> None:
    """Review finding 5: a form written by hand, PII wherever a part's headers can carry it."""
    mail = EMAIL.encode()
    parts = [
        b'Content-Disposition: form-data; name="purpose"; note="' + mail + b'"\r\nX-Note: ' + mail +
        b'\r\nX-Folded: first line\r\n  ' + mail + b'\r\n\r\nassistants',
        b'Content-Disposition: form-data; name="file";\r\n filename="' + mail + b'.txt"\r\n'
        b'Content-Type: text/plain; charset=utf-8; note="' + mail + b'"\r\n\r\nhello ' + mail,
    ]

    def post(gateway: Gateway, *form: bytes):
        body = b"".join(b"--b\r\n" + part + b"\r\n" for part in form) + b"--b--\r\n"
        with gateway.client() as client:
            return client.post(f"https://localhost:{upstream.port}/v1/files", content=body,
                               headers={"content-type": "multipart/form-data; boundary=b"})

    gateway = gateway_factory(uploads_allowed(upstream.port), name="read")
    assert post(gateway, *parts).status_code == 200
    body = sent_to(upstream, "/v1/files")
    assert mail not in body and b"X-Note" not in body and b"X-Folded" not in body
    assert re.fullmatch(rb'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
                        rb'--b\r\nContent-Disposition: form-data; name="file"; filename="<EMAIL_ADDRESS_\d>"\r\n'
                        rb'Content-Type: text/plain; charset=utf-8\r\n\r\nhello <EMAIL_ADDRESS_\d>\r\n--b--\r\n', body)

    assert_store_clean(gateway, EMAIL)

    refusing = gateway_factory(uploads_allowed(upstream.port), name="refuse")
    sent = len(upstream.received)
    for part, problem in [
        (b'Content-Disposition: form-data; name="file"; filename="' + mail + b'.txt"; '
         b"filename*=UTF-8''notes.txt\r\n\r\nhello", "two different filenames"),
        (b'Content-Disposition: form-data; name="' + mail + b'"; name="purpose"\r\n\r\nbatch', "name twice"),
        (b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Transfer-Encoding: base64'
         b'\r\n\r\n' + base64.b64encode(b"hello " + mail), "Content-Transfer-Encoding"),
    ]:
        refused = post(refusing, parts[0], part)
        assert refused.status_code == 400, problem
        message = refused.json()["error"]["message"]
        assert "multipart[1]" in message and problem in message and EMAIL not in message
    assert len(upstream.received) == sent  # nothing refused was forwarded
