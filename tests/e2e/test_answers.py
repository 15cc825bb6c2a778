"""Answer rules end to end (issue 12 item 7): a real mitmdump, the demo upstream answering chosen text, the openai
and anthropic SDKs. A blocked answer reaches the SDK as an error naming the rule; a masked one arrives with the
placeholder; a stream whose pattern arrives split across deltas ends with an error event after the earlier deltas;
each decision is on the response event, and the matched text is nowhere in the store in the clear."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import httpx
import openai
import pytest

from scripts.demo_upstream import reply_header
from tests.conftest import Gateway, rules_for
from tests.e2e.test_bad_input import startup_failure
from tests.e2e.test_reload import WATCH, applied, edit, refused
from tests.e2e.test_secrets import all_cells

pytestmark = pytest.mark.e2e

KEY = "AKIAQWERTYUIOPASDFGH"  # shaped like an AWS access key id: masked
WIPE = "rm -rf /"  # blocked
BLOCKED = "Generated commands may not wipe disks (answer rule no-disk-wipes)"
ANSWERS = r"""
answers:
  - name: no-disk-wipes
    match: ['rm\s+-rf\s+/', 'mkfs\.\w+']
    action: block
    reason: Generated commands may not wipe disks
  - name: aws-keys
    match: ['AKIA[0-9A-Z]{16}']
    action: mask
  - name: no-address-lists
    when: 'answer.counts["EMAIL_ADDRESS"] >= 3'
    action: block
    reason: Answers may not list e-mail addresses
"""


class Scripted(BaseHTTPRequestHandler):
    """An upstream that answers every POST with ``answer``: (content type, chunks sent one by one, headers); a
    ``threading.Event`` among the chunks is waited for before the next is sent."""

    protocol_version = "HTTP/1.1"
    answer: tuple[str, list, dict[str, str]] = ("text/event-stream", [], {})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        content_type, chunks, headers = self.answer
        self.send_response(200)
        self.send_header("content-type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for chunk in [*chunks, b""]:
            if isinstance(chunk, threading.Event):
                chunk.wait(60)
                continue
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def rules(port: int, scripted_port: int | None = None, answers: str = ANSWERS) -> str:
    extra = "" if scripted_port is None else f"""  - name: scripted
    host: localhost
    scheme: http
    port: {scripted_port}
"""
    return rules_for(port, extra_upstreams=extra) + answers


@pytest.fixture
def gw(gateway_factory, upstream, scripted) -> Gateway:
    return gateway_factory(rules(upstream.port, scripted.server_address[1]))


def script(content_type: str, chunks: list, **headers: str) -> None:
    Scripted.answer = (content_type, chunks, headers)


def cut(data: bytes, size: int) -> list[bytes]:
    """``data`` in pieces of ``size`` bytes: events, escapes and UTF-8 characters cut anywhere."""
    return [data[i:i + size] for i in range(0, len(data), size)]


def sse(*events: dict, done: bool = True) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + (b"data: [DONE]\n\n" if done else b"")


def chunk(delta: dict, **extra: object) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}], **extra}


def plain(gw: Gateway, port: int) -> tuple[httpx.Client, str]:
    """An httpx client through the gateway, and the scripted upstream's chat URL."""
    return httpx.Client(proxy=gw.proxy_url_for(), trust_env=False, timeout=30), \
        f"http://localhost:{port}/v1/chat/completions"


def sdk(gw: Gateway, upstream, **kwargs) -> openai.OpenAI:
    http_client = httpx.Client(proxy=gw.proxy_url_for(), verify=ssl.create_default_context(cafile=str(gw.ca_cert)),
                               trust_env=False, timeout=30)
    return openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key="unused", http_client=http_client,
                         **kwargs)


def ask(client: openai.OpenAI, reply: str, **kwargs):
    return client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Write a script"}],
                                          extra_headers={**reply_header(reply), **kwargs.pop("headers", {})},
                                          **kwargs)


def response_events(gw: Gateway) -> list[dict]:
    """Every response and error event on the record, as the admin API gives them (the record parsed)."""
    found, after = [], -1
    with gw.admin_client() as admin:
        while True:  # until the API says no more: each read is itself an event on the record, so never empty
            answer = admin.get("/api/events", params={"after_seq": after}).json()
            page = answer["events"]
            found += [{**e, "record": json.loads(e["record"])} for e in page if e["kind"] in ("response", "error")]
            if not answer["more"]:
                return found
            after = page[-1]["seq"]


def test_a_blocked_answer_reaches_the_sdk_as_an_error_naming_the_rule_and_is_not_retried(gw: Gateway,
                                                                                        upstream) -> None:
    client = sdk(gw, upstream)  # the SDK's default retries: a blocked answer must not be fetched again
    with pytest.raises(openai.InternalServerError) as blocked:
        ask(client, f"Clean up with:\n    sudo {WIPE} --no-preserve-root\n")
    error = blocked.value
    assert error.status_code == 502 and error.body["type"] == "answer_blocked"
    assert error.body["message"] == "Generated commands may not wipe disks (answer rule no-disk-wipes)"
    assert error.body["rule"] == "no-disk-wipes" and WIPE not in str(error.body)
    assert len([r for r in upstream.received if r["path"] == "/v1/chat/completions"]) == 1  # x-should-retry: false
    assert ask(client, "Clean up with: rm -rf ./build").choices[0].message.content == "Clean up with: rm -rf ./build"

    blocked_event, passed_event = response_events(gw)
    assert blocked_event["fate"] == "answer_blocked" and blocked_event["status"] == 502
    assert blocked_event["decision"] == "block" and blocked_event["record"]["rule"] == "no-disk-wipes"
    assert blocked_event["record"]["detail"]["answer"]["reason"] == error.body["message"]
    assert blocked_event["record"]["detail"]["original"] == "encrypted"  # the upstream's answer, for responders
    assert passed_event["fate"] == "completed" and passed_event["decision"] is None
    [flow] = [f for f in gw.flows() if f["fate"] == "answer_blocked"]
    assert flow["decision"] == "allow"  # the request's decision; the answer's is on its response event
    assert (flow["answer_decision"], flow["answer_rule"]) == ("block", "no-disk-wipes")
    assert "answer: block (no-disk-wipes): Generated commands" in gw.warden("show", flow["flow_id"]).stdout
    metrics = httpx.get(f"{gw.admin_url}/metrics", trust_env=False).text
    assert 'warden_answer_decisions_total{decision="block",rule="no-disk-wipes"} 1.0' in metrics
    gw.stop()
    assert WIPE not in all_cells(gw.db)


def test_a_masked_answer_arrives_with_the_placeholder_and_the_rest(gw: Gateway, upstream) -> None:
    client = sdk(gw, upstream, max_retries=0)
    answer = ask(client, f"export AWS_ACCESS_KEY_ID={KEY}\nexport REGION=eu-west-1")
    assert answer.choices[0].message.content == "export AWS_ACCESS_KEY_ID=<BLOCKED:aws-keys>\nexport REGION=eu-west-1"
    [event] = response_events(gw)
    assert event["fate"] == "completed" and event["decision"] == "mask"
    assert event["record"]["rule"] == "aws-keys" and event["record"]["detail"]["answer"]["masked"] == {"aws-keys": 1}
    gw.stop()
    assert KEY not in all_cells(gw.db)


def test_a_stream_ends_with_an_error_event_when_the_pattern_arrives_split(gw: Gateway, upstream) -> None:
    client = sdk(gw, upstream, max_retries=0)
    before = "Here is the cleanup script you asked for. First list the files, then "
    deltas: list[str] = []
    with pytest.raises(openai.APIError) as blocked:
        for chunk in ask(client, f"{before}{WIPE} and you are done.", stream=True,
                         headers={"x-demo-chunk-chars": "3", "x-demo-delay-ms": "5"}):
            deltas.append(chunk.choices[0].delta.content or "")
    assert "Generated commands may not wipe disks (answer rule no-disk-wipes)" in str(blocked.value)
    delivered = "".join(deltas)
    assert delivered and before.startswith(delivered) and len(delivered) > len(before) - 10  # earlier deltas came
    [event] = response_events(gw)
    assert event["decision"] == "block" and event["record"]["rule"] == "no-disk-wipes"
    assert event["record"]["detail"]["answer"]["streamed"] is True
    assert event["fate"] == "answer_blocked" and event["status"] == 200  # the stream had begun
    assert event["record"]["reason"] == "Generated commands may not wipe disks (answer rule no-disk-wipes)"
    gw.stop()
    assert WIPE not in all_cells(gw.db)


def test_a_command_split_across_tool_call_arguments_and_escaped_is_caught(gw: Gateway, upstream, scripted) -> None:
    """The arguments a client's tool runs: cut across events, bytes cut anywhere, the slash written ``\\u002f``."""
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "shell", "arguments": ""}}
    pieces = ['{"cmd": "sudo rm -r', 'f \\u00', '2f --no-preserve-root"}']
    events = [chunk({"role": "assistant", "content": None, "tool_calls": [call]})]
    events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}) for piece in pieces]
    script("text/event-stream", cut(sse(*events), 7))
    port = scripted.server_address[1]
    client = openai.OpenAI(base_url=f"http://localhost:{port}/v1", api_key="unused", max_retries=0,
                           http_client=httpx.Client(proxy=gw.proxy_url_for(), trust_env=False, timeout=30))
    arguments = ""
    with pytest.raises(openai.APIError, match=r"answer rule no-disk-wipes"):
        for part in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}],
                                                   stream=True):
            for tool in part.choices[0].delta.tool_calls or []:
                arguments += tool.function.arguments or ""
    assert arguments == '{"cmd": "sudo '  # what may still become the match was held back, then dropped


def test_a_pattern_in_any_string_of_an_event_or_a_header_is_found(gw: Gateway, upstream, scripted) -> None:
    events = [chunk({"content": "Hi"}, id=KEY, x_provider_note=f"key {KEY}"),
              chunk({"content": "!"}, **{f"{KEY}": 1})]
    script("text/event-stream", cut(sse(*events), 5), **{"x-debug": f"issued {KEY}", KEY: "1"})
    client, url = plain(gw, scripted.server_address[1])
    asked = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with client:
        r = client.post(url, json=asked)
        assert r.status_code == 200 and KEY not in r.text and KEY not in str(r.headers)
        assert r.headers["x-debug"] == "issued <BLOCKED:aws-keys>"
        first, second, *_ = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        assert first["id"] == "<BLOCKED:aws-keys>" and first["x_provider_note"] == "key <BLOCKED:aws-keys>"
        assert "<BLOCKED:aws-keys>" in second
        # a header blocks at once; the headers after it are still masked, not sent as they came
        script("text/event-stream", [sse(chunk({"content": "Hi"}))], **{"x-debug": WIPE, "x-later": KEY})
        r = client.post(url, json=asked)
    assert WIPE not in str(r.headers) and r.headers["x-later"] == "<BLOCKED:aws-keys>"
    assert "Hi" not in r.text and BLOCKED in r.text


@pytest.mark.parametrize(("content_type", "body"), [
    ("text/plain; charset=utf-8", f"Step 1: sudo {WIPE} --no-preserve-root\n".encode()),
    ("application/json", b'{"result": {"script": "sudo rm -rf \\u002f"}}'),
    ("application/x-ndjson", b'{"n": 1, "line": "echo ok"}\n{"n": 2, "line": "mkfs.ext4 /dev/sda"}\n'),
    ("application/octet-stream", b"\x00\x01" + WIPE.encode() + b"\xff\xfe"),
    ("application/json", json.dumps({"script": f"sudo {WIPE}"}).encode("utf-16")),  # the SDKs' json.loads reads it
])
def test_an_answer_not_streamed_but_chunked_is_screened_whole(gw: Gateway, upstream, scripted,
                                                              content_type: str, body: bytes) -> None:
    script(content_type, cut(body, 3))
    client, url = plain(gw, scripted.server_address[1])
    with client:
        r = client.post(url, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 502 and r.headers["x-should-retry"] == "false", r.text
    assert r.json()["error"]["type"] == "answer_blocked" and r.json()["error"]["rule"] == "no-disk-wipes"


def test_a_gzip_stream_split_in_two_characters_is_caught(gw: Gateway, upstream) -> None:
    client = sdk(gw, upstream, max_retries=0)
    seen = ""
    with pytest.raises(openai.APIError, match=BLOCKED.replace("(", r"\(").replace(")", r"\)")):
        for part in ask(client, f"Done. Now {WIPE}", stream=True,
                        headers={"x-demo-encoding": "gzip", "x-demo-chunk-chars": "2"}):
            seen += part.choices[0].delta.content or ""
    assert seen == "Done. Now "


def test_anthropic_and_responses_streams_end_in_their_own_error_shapes(gw: Gateway, upstream,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", gw.proxy_url_for())  # the anthropic SDK takes the proxy from the environment
    monkeypatch.setenv("SSL_CERT_FILE", str(gw.ca_cert))
    claude = anthropic.Anthropic(base_url=f"https://127.0.0.1:{upstream.port}", api_key="unused", max_retries=0)
    reply = f"Try: {WIPE}"
    with pytest.raises(anthropic.APIStatusError) as stream_error:
        with claude.messages.stream(model="demo", max_tokens=50, messages=[{"role": "user", "content": "go"}],
                                    extra_headers={**reply_header(reply), "x-demo-chunk-chars": "3"}) as stream:
            stream.get_final_message()
    assert "answer_blocked" in str(stream_error.value) and BLOCKED in str(stream_error.value)
    with pytest.raises(anthropic.InternalServerError, match="answer rule no-disk-wipes"):
        claude.messages.create(model="demo", max_tokens=50, messages=[{"role": "user", "content": "go"}],
                               extra_headers=reply_header(reply))

    client = sdk(gw, upstream, max_retries=0)
    with pytest.raises(openai.APIError, match="answer rule no-disk-wipes"):
        for _ in client.responses.create(model="demo", input="go", stream=True,
                                         extra_headers={**reply_header(reply), "x-demo-chunk-chars": "3"}):
            pass


def test_a_count_of_what_masking_found_in_the_answer_blocks_it(gw: Gateway, upstream) -> None:
    addresses = "a.one@example.org, b.two@example.org and c.three@example.org"
    client = sdk(gw, upstream, max_retries=0)
    with pytest.raises(openai.InternalServerError, match="Answers may not list e-mail addresses"):
        ask(client, f"Write to {addresses}.")
    with pytest.raises(openai.APIError, match="Answers may not list e-mail addresses"):
        for _ in ask(client, f"Write to {addresses}.", stream=True, headers={"x-demo-chunk-chars": "5"}):
            pass
    two = ask(client, "Write to a.one@example.org and b.two@example.org.").choices[0].message.content
    assert two == "Write to <EMAIL_ADDRESS> and <EMAIL_ADDRESS>."  # the upstream's own: masked, and two pass


def test_the_record_of_a_masked_stream_keeps_the_callers_values_concealed(gw: Gateway, upstream) -> None:
    """Masking restored the caller's address in the answer; the record's copy has its pseudonym again, and the key
    the rule masked is in neither (the answer as it came is kept only encrypted)."""
    email = "jane.roe@example.net"
    client = sdk(gw, upstream, max_retries=0)
    parts = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": f"My address is {email}"}], stream=True,
        extra_headers={**reply_header(f"Noted <EMAIL_ADDRESS_1>; your key is {KEY}."), "x-demo-chunk-chars": "3"})
    text = "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
    assert text == f"Noted {email}; your key is <BLOCKED:aws-keys>."
    [event] = response_events(gw)
    assert event["decision"] == "mask" and event["record"]["detail"]["original"] == "encrypted"
    shown = gw.warden("show", event["flow_id"], "--json").stdout
    assert "<EMAIL_ADDRESS_1>" in shown and "<BLOCKED:aws-keys>" in shown
    gw.stop()
    cells = all_cells(gw.db)
    assert KEY not in cells and email not in cells


def test_a_bad_pattern_stops_start_up_naming_file_rule_and_field(tmp_path, confdir, upstream) -> None:
    bad = ANSWERS.replace("'mkfs\\.\\w+'", "'mkfs(\\.\\w+'")
    log = startup_failure(tmp_path, confdir, upstream, rules(upstream.port, answers=bad))
    assert "rules.yaml: answers[0].match[1] (rule 'no-disk-wipes'): Value error, invalid pattern 'mkfs(\\.\\w+': " \
           "missing ) at position 10" in log


def test_answer_rules_reload_and_a_bad_edit_is_refused(gateway_factory, upstream) -> None:
    gw = gateway_factory(rules(upstream.port, answers=""), extra_args=WATCH)
    client = sdk(gw, upstream, max_retries=0)
    assert ask(client, f"Try {WIPE}").choices[0].message.content == f"Try {WIPE}"
    applied(gw, edit(gw, rules(upstream.port)))
    with pytest.raises(openai.InternalServerError, match="answer rule no-disk-wipes"):
        ask(client, f"Try {WIPE}")
    bad = refused(gw, edit(gw, rules(upstream.port, answers=ANSWERS.replace("action: mask", "action: redact"))))
    assert "answers[1].action (rule 'aws-keys')" in bad["rules"]["refused"]["error"]
    with pytest.raises(openai.InternalServerError, match="answer rule no-disk-wipes"):  # the rules in force stay
        ask(client, f"Try {WIPE}")
    assert ask(client, KEY).choices[0].message.content == "<BLOCKED:aws-keys>"


def test_an_answer_streaming_through_a_reload_keeps_the_rules_it_began_under(gateway_factory, upstream,
                                                                           scripted) -> None:
    gw = gateway_factory(rules(upstream.port, scripted.server_address[1]), extra_args=WATCH)
    reloaded = threading.Event()
    script("text/event-stream", [sse(chunk({"content": "Start. "}), done=False), reloaded,
                                 sse(chunk({"content": WIPE}))])
    port = scripted.server_address[1]
    client = openai.OpenAI(base_url=f"http://localhost:{port}/v1", api_key="unused", max_retries=0,
                           http_client=httpx.Client(proxy=gw.proxy_url_for(), trust_env=False, timeout=30))
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}], stream=True)
    parts = iter(stream)
    assert next(parts).choices[0].delta.content == "Start. "
    applied(gw, edit(gw, rules(upstream.port, scripted.server_address[1], answers="")))  # no answer rules now
    reloaded.set()
    rest = ""
    with pytest.raises(openai.APIError, match="answer rule no-disk-wipes"):
        for part in parts:
            rest += part.choices[0].delta.content or ""
    assert rest == ""
    script("text/event-stream", [sse(chunk({"content": WIPE}))])
    after = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}], stream=True)
    assert "".join(p.choices[0].delta.content or "" for p in after if p.choices) == WIPE
