"""``warden export-flows`` writes a mitmproxy flow file that mitmproxy's own tools read."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mitmproxy import io

from tests.conftest import BIN, Gateway

pytestmark = pytest.mark.e2e


def test_export_holds_every_flow_and_mitmproxy_reads_it(gateway: Gateway, upstream, tmp_path: Path) -> None:
    with gateway.client() as client:
        for i in range(4):
            client.post(f"https://localhost:{upstream.port}/v1/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": f"export {i}"}]})
        client.post(f"https://localhost:{upstream.port}/v1/files", content=b"blocked")
    live = tmp_path / "live.mitm"
    gateway.warden("export-flows", "-o", str(live))  # through the admin API: the gateway holds the file
    gateway.stop()
    offline = tmp_path / "offline.mitm"
    gateway.warden("export-flows", "-o", str(offline))

    recorded = {f["flow_id"]: f for f in gateway.flows()}
    for path in (live, offline):
        flows = list(io.FlowReader(path.open("rb")).stream())
        assert {f.id for f in flows} == set(recorded)
        for flow in flows:
            assert flow.request.host == "localhost"
            assert flow.response is not None and flow.response.status_code == recorded[flow.id]["status"]
            assert flow.metadata["warden"]["fate"] == recorded[flow.id]["fate"]
        chat = [f for f in flows if f.request.path == "/v1/chat/completions"]
        assert sorted(f.response.json()["choices"][0]["message"]["content"] for f in chat) == [
            f"export {i}" for i in range(4)
        ]
    # mitmproxy itself opens it (what `mitmweb --rfile` does, without a browser).
    read = subprocess.run([str(BIN / "mitmdump"), "-n", "-r", str(offline), "--set", "flow_detail=1"],
                          capture_output=True, text=True, timeout=60)
    assert read.returncode == 0, read.stderr
    assert read.stdout.count("/v1/chat/completions") == 4
