"""The store's ordering invariants, observed from outside the gateway while it runs."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from mitmproxy import io

from tests.conftest import Gateway, free_port, rules_for

pytestmark = pytest.mark.e2e


class WitnessUpstream(BaseHTTPRequestHandler):
    """On each request, asks the gateway's admin API whether the request's event is already committed."""

    protocol_version = "HTTP/1.1"
    admin: httpx.Client
    seen: dict[str, bool] = {}

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        marker = self.path.rsplit("/", 1)[-1]
        flows = self.admin.get("/api/flows", params={"limit": 10000}).json()["flows"]
        self.seen[marker] = any(f["path"].endswith(marker) for f in flows)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_request_committed_before_it_leaves_and_response_before_client_has_it(
    gateway_factory, upstream, upstream_ca, tmp_path: Path
) -> None:
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), WitnessUpstream)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    upstream_ca.issue_cert("localhost").configure_cert(ctx)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gw: Gateway = gateway_factory(rules_for(upstream.port, f"  - name: witness\n    host: localhost\n    port: {port}\n"))
        WitnessUpstream.admin = gw.admin_client()
        with gw.client() as client:
            for i in range(15):
                marker = f"m{i}"
                assert client.post(f"https://localhost:{port}/w/{marker}", json={}).status_code == 200
                # The client has the whole response: its event must already be there.
                [flow] = [f for f in gw.flows() if f["path"].endswith(f"/{marker}")]
                assert flow["fate"] == "completed" and flow["status"] == 200
        assert WitnessUpstream.seen == {f"m{i}": True for i in range(15)}
    finally:
        server.shutdown()


def test_masked_body_stored_with_original_only_encrypted(gateway_factory, upstream, tmp_path: Path) -> None:
    """Where a masking addon changed the body, the store holds the masked body and the original encrypted."""
    masker = Path(__file__).parent / "masking_double.py"
    gw: Gateway = gateway_factory(scripts_before=(str(masker),))
    secret_email = "jane.doe.PLANTED@example.org"
    with gw.client() as client:
        r = client.post(f"https://localhost:{upstream.port}/echo/mask", json={"text": f"mail {secret_email} now"})
        assert r.status_code == 200
    received = [x for x in upstream.received if x["path"] == "/echo/mask"][-1]
    assert secret_email.encode() not in received["body"] and b"<EMAIL>" in received["body"]
    gw.stop()

    import duckdb

    con = duckdb.connect(str(gw.db), read_only=True)
    body, original = con.execute("SELECT body, original_enc FROM events WHERE kind='request' AND record->>'path'='/echo/mask'").fetchone()
    con.close()
    assert b"<EMAIL>" in body and secret_email.encode() not in body
    assert original is not None and secret_email.encode() not in original
    assert secret_email.encode() not in gw.db.read_bytes()

    flow_id = gw.flows()[0]["flow_id"]
    masked = json.loads(gw.warden("show", "--json", flow_id).stdout.splitlines()[0])
    assert secret_email not in masked["body"] and masked["original"] == "encrypted"
    clear = json.loads(gw.warden("show", "--json", "--originals", "--key", str(gw.originals_key), flow_id).stdout.splitlines()[0])
    assert secret_email in clear["body"]

    out = tmp_path / "orig.mitm"
    gw.warden("export-flows", "-o", str(out), "--originals", "--key", str(gw.originals_key))
    [flow] = list(io.FlowReader(out.open("rb")).stream())
    assert secret_email.encode() in flow.request.content

    wrong_key = tmp_path / "wrong.key"
    wrong_key.write_text(base64.b64encode(b"k" * 32).decode())
    denied = gw.warden("show", "--originals", "--key", str(wrong_key), flow_id, check=False)
    assert denied.returncode != 0 and "does not decrypt with this key" in denied.stderr
