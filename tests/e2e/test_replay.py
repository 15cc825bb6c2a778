"""Search, proof, export and replay end to end: a real gateway, the real ``warden`` CLI, real mitmweb and Chromium.

- ``warden flows`` filters through the admin API and on the stopped file alike; text search reads masked bodies only.
- ``warden export-flows`` applies the same filters; mitmproxy's FlowReader reads identity, decision and findings.
- mitmweb serves the exported flows beside the running gateway (the README's options), seen in headless Chromium.
- ``warden replay ID --to URL`` sends the masked request, without credentials, and diffs the answers.
- ``warden show`` proves each event up to a signed checkpoint; an event changed in the stopped store fails it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import re
import shlex
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import httpx
import pytest
from mitmproxy import io as mitmio

from tests.conftest import BIN, ROOT, Gateway, free_port

pytestmark = pytest.mark.e2e

NAME, EMAIL = "Maria Garcia", "maria.garcia@example.org"
CHROMIUM = "/usr/bin/chromium"


def chat(gateway: Gateway, upstream, user: str, groups: list[str], text: str) -> None:
    with gateway.client(gateway.token(user, groups=groups), user=user) as client:
        response = client.post(f"https://localhost:{upstream.port}/v1/chat/completions",
                               json={"model": "demo-model", "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text


def traffic(gateway: Gateway, upstream) -> None:
    """alice (dev) masked and blocked, bob (ops) plain."""
    chat(gateway, upstream, "alice", ["dev"], f"Write to {NAME} at {EMAIL} about the invoice")
    chat(gateway, upstream, "bob", ["ops"], "Summarise the deployment runbook")
    with gateway.client(gateway.token("alice", groups=["dev"])) as client:
        assert client.post(f"https://localhost:{upstream.port}/v1/files", content=b"upload").status_code == 403


def read_flows(path: Path) -> dict:
    """The flows of a flow file by path and user."""
    with path.open("rb") as f:
        flows = list(mitmio.FlowReader(f).stream())
    return {f"{flow.request.path} {flow.metadata['warden']['user']}": flow for flow in flows}


def artifacts(tmp_path: Path) -> Path:
    where = Path(os.environ.get("WARDEN_ARTIFACTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def test_filters_and_export_carry_identity_decision_and_findings(gateway: Gateway, upstream, tmp_path: Path) -> None:
    traffic(gateway, upstream)
    live = {name: [f["flow_id"] for f in gateway.flows(*args)] for name, args in {
        "alice": ("--user", "alice"), "block": ("--decision", "block", "--rule", "no-files", "--status", "403"),
        "masked": ("--text", "EMAIL_ADDRESS_1 invoice", "--model", "demo-model"),
        "original": ("--text", "maria.garcia"),
    }.items()}
    assert len(live["alice"]) == 2 and len(live["block"]) == 1 and set(live["block"]) < set(live["alice"])
    assert len(live["masked"]) == 1 and live["original"] == []  # the search reads masked bodies, never an original
    table = list(csv.DictReader(io.StringIO(gateway.warden("flows", "--csv", "--limit", "1", "--offset", "1").stdout)))
    assert [row["flow_id"] for row in table] == [f["flow_id"] for f in gateway.flows("--limit", "1", "--before-seq",
                                                                                      str(gateway.flows()[0]["seq"]))]

    exported = tmp_path / "alice.mitm"
    gateway.warden("export-flows", "--user", "alice", "-o", str(exported))  # through the admin API
    flows = read_flows(exported)
    assert {f.id for f in flows.values()} == set(live["alice"])
    masked, blocked = flows["/v1/chat/completions alice"], flows["/v1/files alice"]
    assert masked.metadata["warden"]["groups"] == ["dev"] and masked.metadata["warden"]["decision"] == "allow"
    assert masked.metadata["warden"]["findings"]["request"].get("EMAIL_ADDRESS") == 1
    assert EMAIL not in masked.request.get_text() and "EMAIL_ADDRESS_1" in masked.request.get_text()
    assert re.match(r"alice \(dev\) · allow by default · completed · masked .*EMAIL_ADDRESS", masked.comment)
    assert (blocked.metadata["warden"]["decision"], blocked.metadata["warden"]["rule"]) == ("block", "no-files")
    assert blocked.comment.startswith("alice (dev) · block by no-files · ") and blocked.response.status_code == 403

    gateway.stop()
    assert [f["flow_id"] for f in gateway.flows("--decision", "block")] == live["block"]  # the file, same query
    offline = tmp_path / "blocked.mitm"
    gateway.warden("export-flows", "--decision", "block", "-o", str(offline))
    assert [f.id for f in read_flows(offline).values()] == live["block"]


class Sandbox:
    """A tiny upstream that answers what the test sets and keeps what it received."""

    def __init__(self) -> None:
        self.status, self.body = 200, b"{}"
        self.received: list[tuple[str, str, dict[str, str], bytes]] = []
        sandbox = self

        class Handle(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                sandbox.received.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                         body))
                self.send_response(sandbox.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(sandbox.body)))
                self.end_headers()
                self.wfile.write(sandbox.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_replay_diffs_the_answer_and_show_proves_the_flow(gateway: Gateway, upstream) -> None:
    """Replay sends the masked request, without credentials, and diffs the answers; show proves every event."""
    chat(gateway, upstream, "alice", ["dev"], f"Write to {NAME} at {EMAIL} about the invoice")
    [flow] = gateway.flows()
    events = [json.loads(line) for line in gateway.warden("show", "--json", flow["flow_id"]).stdout.splitlines()]
    [request] = [e for e in events if e["kind"] == "request"]
    [answer] = [e for e in events if e["kind"] == "response"]
    sandbox = Sandbox()
    try:
        sandbox.status, sandbox.body = answer["status"], answer["body"].encode()
        same = gateway.warden("replay", flow["flow_id"], "--to", sandbox.url)
        assert "body: the same" in same.stdout and f"status: recorded {answer['status']}" in same.stdout

        changed = json.loads(answer["body"])
        changed["choices"][0]["message"]["content"] = "a different answer"
        sandbox.body = json.dumps(changed).encode()
        different = gateway.warden("replay", flow["flow_id"][:12], "--to", sandbox.url, check=False)
        assert different.returncode == 1, different
        assert '+        "content": "a different answer",' in different.stdout
        assert re.search(r'^-        "content": ".*",$', different.stdout, re.M), different.stdout

        sandbox.status = 500
        assert "replayed 500  DIFFERENT" in gateway.warden("replay", flow["flow_id"], "--to", sandbox.url,
                                                          check=False).stdout
    finally:
        sandbox.server.shutdown()
    method, path, headers, body = sandbox.received[0]
    assert (method, path) == ("POST", "/v1/chat/completions") and body == request["body"].encode()
    assert EMAIL.encode() not in body and b"EMAIL_ADDRESS" in body
    assert not {"authorization", "proxy-authorization", "x-api-key", "cookie"} & set(headers), headers
    assert all("redacted" not in value for value in headers.values()), headers

    # warden show proves the same flow; an event changed in the stopped store fails the proof
    shown = gateway.warden("show", flow["flow_id"])  # through the gateway: it signs a checkpoint first
    assert "PROVEN: each of the" in shown.stdout and "key_id=" in shown.stdout
    lines = [json.loads(line) for line in gateway.warden("show", "--json", flow["flow_id"]).stdout.splitlines()]
    assert lines and all(e["proof"]["verified"] is True and e["proof"]["head_seq"] >= e["seq"] for e in lines)
    assert all(re.fullmatch(r"[0-9a-f]{64}", e["hash"]) and e["proof"]["prev_hash"] == e["prev_hash"] for e in lines)

    gateway.stop()
    assert "PROVEN" in gateway.warden("show", flow["flow_id"]).stdout  # the stopped file, same proof
    con = duckdb.connect(str(gateway.db))
    con.execute("UPDATE events SET body = ? WHERE flow_id = ? AND kind = 'response'",
                [b'{"edited": true}', flow["flow_id"]])
    con.close()
    broken = gateway.warden("show", flow["flow_id"], check=False)
    assert broken.returncode == 1, broken
    [response_seq] = [e["seq"] for e in lines if e["kind"] == "response"]
    failing = ", ".join(str(e["seq"]) for e in lines if e["seq"] <= response_seq)  # it, and those linking through it
    assert f"PROOF FAILS for seq={failing}: the links do not lead" in broken.stdout, broken.stdout


# -- mitmweb beside a running gateway --------------------------------------------------------------------


def readme_mitmweb_options() -> list[str]:
    """The options of the README's ``mitmweb --rfile`` command (the file and the command itself left out)."""
    [line] = {m for m in re.findall(r"mitmweb --rfile \S+ ([^\n`]*)", (ROOT / "README.md").read_text())}
    return shlex.split(line)


@contextmanager
def running(args: list[str], ready: str, timeout: float = 60) -> Iterator[tuple[subprocess.Popen, str]]:
    """A process whose output has a line matching ``ready`` (that line too), stopped at the end."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()], daemon=True).start()
    seen = []
    try:
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"{args}: no line matching {ready!r} in {timeout}s:\n{''.join(seen)}") from None
            seen.append(line)
            if re.search(ready, line):
                break
        yield proc, line
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_mitmweb_serves_the_exported_flows_beside_the_running_gateway(
    gateway: Gateway, upstream, tmp_path: Path
) -> None:
    traffic(gateway, upstream)
    exported = tmp_path / "flows.mitm"
    gateway.warden("export-flows", "-o", str(exported))
    ids = {f["flow_id"] for f in gateway.flows()}

    # The README's command, its proxy port standing for the gateway's 8080 (taken here by the gateway itself).
    options = readme_mitmweb_options()
    assert "server=false" in options and "--no-web-open-browser" in options
    web_port = free_port()
    options[options.index("--web-port") + 1] = str(web_port)
    readme_cmd = [str(BIN / "mitmweb"), "--rfile", str(exported), *options, "--listen-port", str(gateway.proxy_port)]
    with running(readme_cmd, r"Web server listening at .*token=(\S+)") as (_, line):
        token = re.search(r"token=(\w+)", line).group(1)  # type: ignore[union-attr]
        served = httpx.get(f"http://127.0.0.1:{web_port}/flows", headers={"Authorization": f"Bearer {token}"},
                           trust_env=False).json()
        assert {f["id"] for f in served} == ids
    assert gateway.proc.poll() is None  # the gateway served on meanwhile

    # warden replay --web: the same options, and the URL to open; Chromium shows the flow list with the comments.
    web_port = free_port()
    cmd = [str(BIN / "warden"), "replay", "--web", str(exported), "--port", str(web_port)]
    with running(cmd, r"mitmweb serves .* at (http://\S+)") as (_, line):
        url = re.search(r"at (http://\S+)", line).group(1)  # type: ignore[union-attr]
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 600})
                page.goto(url)
                page.wait_for_function("n => document.querySelectorAll('td.col-comment').length === n", arg=len(ids))
                comments = page.locator("td.col-comment").all_inner_texts()
                page.screenshot(path=str(artifacts(tmp_path) / "mitmweb-flow-list.png"))
            finally:
                browser.close()
    # warden stopped (SIGTERM), its mitmweb stopped with it: nothing serves the port any more.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", web_port), timeout=2).close()
    assert sorted(c.split(" · ")[0] for c in comments) == ["alice (dev)", "alice (dev)", "bob (ops)"]
    assert any("block by no-files" in c for c in comments) and any("EMAIL_ADDRESS" in c for c in comments)
    assert gateway.proc.poll() is None
