"""``warden siem`` on a real gateway: the record as OCSF events that validate against the OCSF schema; followers that
stream to a file, an HTTP collector and a syslog server across a gateway restart, a collector that comes up late and
a follower restarted, each delivering every event exactly once (the seqs compared with the store's)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from addons.store.database import connect
from tests.conftest import BIN, Gateway, free_port, start_gateway, wait_ready
from tests.ocsf import ocsf_errors

pytestmark = pytest.mark.e2e

SYSLOG = re.compile(rb"<(\d+)>1 (\S+) (\S+) warden - ocsf(\d+) \[origin software=\"Warden\" swVersion=\"[^\"]+\"\] "
                    rb"\xef\xbb\xbf(.*)", re.S)


def traffic(gateway: Gateway, port: int, tag: str) -> None:
    """An allowed chat, a blocked upload and a refused token."""
    with gateway.client() as client:
        assert client.post(f"https://localhost:{port}/v1/chat/completions",
                           json={"model": "m", "messages": [{"role": "user", "content": tag}]}).status_code == 200
        assert client.post(f"https://localhost:{port}/v1/files", content=b"blocked").status_code == 403
    with httpx.Client(proxy=gateway.proxy_url_for("not-a-token"), trust_env=False,
                      verify=ssl.create_default_context(cafile=str(gateway.ca_cert))) as client:
        with pytest.raises(httpx.ProxyError, match="407"):
            client.get(f"https://localhost:{port}/v1/models")


def store_seqs(db: Path) -> dict[int, str]:
    con = connect(str(db), read_only=True)
    try:
        return dict(con.execute("SELECT seq, kind FROM events ORDER BY seq").fetchall())
    finally:
        con.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def follower(gateway: Gateway, *args: str) -> subprocess.Popen:
    log = (gateway.workdir / f"siem-{time.monotonic_ns()}.log").open("w")
    return subprocess.Popen(
        [str(BIN / "warden"), "--db", str(gateway.db), "--admin", gateway.admin, "siem", "--follow", "--poll", "0.2",
         *args], stdout=log, stderr=subprocess.STDOUT, cwd=gateway.workdir,
        env={**os.environ, "WARDEN_ISSUER_KEY": str(gateway.workdir / "warden-issuer.key"),
             "WARDEN_RULES": str(gateway.workdir / "rules.yaml"), "WARDEN_SIEM_TOKEN": "hec-token-1"})


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


class Collector(ThreadingHTTPServer):
    """A Splunk HEC stand-in: keeps each accepted event and the Authorization it came with."""

    def __init__(self, port: int) -> None:
        self.events: list[dict] = []
        self.auth: set[str] = set()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.auth.add(self.headers.get("Authorization", ""))
                collector.events += [json.loads(line)["event"] for line in body.splitlines()]
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'{"text":"Success","code":0}')

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", port), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class SyslogServer:
    """A TCP syslog receiver reading RFC 6587 octet-counted frames."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            conn, _ = self.server.accept()
            threading.Thread(target=self.read, args=(conn,), daemon=True).start()

    def read(self, conn: socket.socket) -> None:
        buffer = b""
        while chunk := conn.recv(65536):
            buffer += chunk
            while b" " in buffer:
                length, rest = buffer.split(b" ", 1)
                if len(rest) < int(length):
                    break
                self.messages.append(rest[:int(length)])
                buffer = rest[int(length):]

    def events(self) -> list[dict]:
        out = []
        for message in self.messages:
            match = SYSLOG.fullmatch(message)
            assert match, message[:200]
            event = json.loads(match.group(5))
            assert int(match.group(4)) == event["class_uid"] and int(match.group(1)) // 8 == 13  # log audit
            out.append(event)
        return out


def seqs_of(events: list[dict]) -> list[int]:
    return [int(e["metadata"]["uid"]) for e in events]


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def exactly_once(delivered: list[dict], store: dict[int, str], last_traffic: int, name: str) -> None:
    seqs = seqs_of(delivered)
    assert len(seqs) == len(set(seqs)), f"{name}: doubled"
    assert seqs == sorted(store)[:len(seqs)], f"{name}: lost or out of order"
    assert seqs[-1] >= last_traffic, name
    assert [e["unmapped"]["warden"]["kind"] for e in delivered] == [store[s] for s in seqs], name
    for event in delivered:
        assert ocsf_errors(event) == [], (name, event)


def test_siem_jsonl_validates_against_ocsf(gateway: Gateway, upstream) -> None:
    traffic(gateway, upstream.port, "one shot")
    live = [json.loads(line) for line in gateway.warden("siem").stdout.splitlines()]
    gateway.stop()
    offline = [json.loads(line) for line in gateway.warden("siem", "--after-seq", "2").stdout.splitlines()]
    store = store_seqs(gateway.db)
    assert seqs_of(offline) == [s for s in sorted(store) if s > 2]
    assert seqs_of(live) == sorted(store)[:len(live)]
    for event in live + offline:
        assert ocsf_errors(event) == [], event
        assert "PLANTED" not in json.dumps(event) and "one shot" not in json.dumps(event)  # no secret, no body
    classes = {(e["class_uid"], e["unmapped"]["warden"]["kind"], e["status_id"]) for e in live + offline}
    assert (6003, "request", 1) in classes and (6003, "request", 2) in classes  # allowed, blocked
    assert (3002, "request", 2) in classes  # the refused token
    assert (0, "checkpoint", 0) in classes and (6003, "access", 1) in classes
    checkpoint = next(e for e in offline if e["class_uid"] == 0)["unmapped"]["warden"]["detail"]
    assert set(checkpoint) == {"head_seq", "head_hash", "signature", "key_id"}


def test_followers_deliver_every_event_once_across_restarts(gateway: Gateway, upstream, confdir: Path) -> None:
    lines, cursor = gateway.workdir / "siem.jsonl", gateway.workdir / "siem.cursor"
    http_cursor, syslog_cursor = gateway.workdir / "http.cursor", gateway.workdir / "syslog.cursor"
    collector_port, syslog = free_port(), SyslogServer()
    to_file = follower(gateway, "--cursor", str(cursor), "-o", str(lines))
    to_http = follower(gateway, "--cursor", str(http_cursor), "--to-http",
                       f"http://127.0.0.1:{collector_port}/services/collector/event")
    to_syslog = follower(gateway, "--cursor", str(syslog_cursor), "--to-syslog", f"127.0.0.1:{syslog.port}")
    collector: Collector | None = None
    restarted: Gateway | None = None
    try:
        traffic(gateway, upstream.port, "before the restart")
        wait_for(lambda: any(e["class_uid"] == 3002 for e in read_lines(lines)), "the file follower")
        stop(to_file)  # a follower restarted resumes from its cursor
        to_file = follower(gateway, "--cursor", str(cursor), "-o", str(lines))

        gateway.stop()  # the followers wait it out (none holds the store file, or the gateway could not start)
        time.sleep(1)
        rules = (gateway.workdir / "rules.yaml").read_text()
        restarted = start_gateway(gateway.workdir, confdir, rules, upstream.port, db=gateway.db, wait=False,
                                  extra_args=("--set", f"warden_admin={gateway.admin}"))
        restarted.admin = gateway.admin
        wait_ready(restarted)
        traffic(restarted, upstream.port, "after the restart")
        last_flow = restarted.flows()[0]["flow_id"]
        collector = Collector(collector_port)  # up only now: the HTTP follower retried all along

        def delivered(events: Callable[[], list[dict]]) -> Callable[[], bool]:
            return lambda: any(e["metadata"].get("correlation_uid") == last_flow for e in events())

        wait_for(delivered(lambda: read_lines(lines)), "the file follower after the restart")
        wait_for(delivered(lambda: list(collector.events) if collector else []), "the late collector")
        wait_for(delivered(syslog.events), "the syslog follower")
        for proc in (to_file, to_http, to_syslog):
            stop(proc)
        restarted.stop()
        store = store_seqs(gateway.db)
        last_traffic = max(s for s, kind in store.items() if kind in ("request", "response"))
        exactly_once(read_lines(lines), store, last_traffic, "file")
        exactly_once(collector.events, store, last_traffic, "http")
        exactly_once(syslog.events(), store, last_traffic, "syslog")
        assert collector.auth == {"Splunk hec-token-1"}
        assert int(http_cursor.read_text()) == seqs_of(collector.events)[-1]
        assert any("delivery failed" in p.read_text() for p in gateway.workdir.glob("siem-*.log"))
    finally:
        for proc in (to_file, to_http, to_syslog):
            if proc.poll() is None:
                proc.kill()
        if collector is not None:
            collector.shutdown()
        if restarted is not None:
            restarted.stop()
