"""Every flow is on record whatever its fate, the CLI finds them (API and file), and the chain verifies."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.conftest import Gateway, free_port, rules_for

pytestmark = pytest.mark.e2e


def mixed_traffic(gw: Gateway, upstream_port: int) -> Counter:
    """Requests of every fate; returns how many of each we expect on record."""
    expected: Counter = Counter()
    with gw.client(timeout=10) as client:
        for i in range(3):
            answer = client.post(f"https://localhost:{upstream_port}/v1/chat/completions",
                                 json={"model": "m", "messages": [{"role": "user", "content": f"hi {i}"}]})
            assert answer.status_code == 200
            expected["completed"] += 1
        assert client.post(f"https://localhost:{upstream_port}/v1/files", content=b"x").status_code == 403
        expected["blocked_by_policy"] += 1
        assert client.get(f"https://localhost:{gw.down_port}/anything").status_code == 502
        expected["upstream_error"] += 1
    with httpx.Client(proxy=gw.proxy_url_for(), trust_env=False) as plain:
        r = plain.get("http://example.invalid/")
        assert r.status_code == 403 and r.json()["error"]["type"] == "host_not_allowed"
        expected["host_not_allowed"] += 1
    with gw.client() as client, pytest.raises(httpx.ProxyError):
        client.get("https://example.invalid/")  # refused at the CONNECT
    expected["host_not_allowed"] += 1
    with gw.client(timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
        client.get(f"https://localhost:{upstream_port}/slow?ms=3000")
    expected["client_gone"] += 1
    return expected


def wait_for_flows(gw: Gateway, count: int) -> list[dict]:
    """The client-gone flow is recorded when the gateway notices the disconnect, just after the client gave up."""
    import time

    deadline = time.monotonic() + 10
    while True:
        flows = gw.flows()
        if len(flows) >= count and all(f["fate"] != "incomplete" for f in flows) or time.monotonic() > deadline:
            return flows
        time.sleep(0.2)


@pytest.fixture
def mixed(gateway_factory, upstream):
    down_port = free_port()  # nothing listens here
    rules = rules_for(upstream.port, extra_upstreams=f"  - name: down\n    host: localhost\n    port: {down_port}\n")
    gw = gateway_factory(rules)
    gw.down_port = down_port
    expected = mixed_traffic(gw, upstream.port)
    return gw, expected


def test_every_fate_on_record_via_admin_api_and_file(mixed) -> None:
    gw, expected = mixed
    flows = wait_for_flows(gw, sum(expected.values()))
    assert Counter(f["fate"] for f in flows) == expected
    assert gw.warden("verify").returncode == 0

    gw.stop()
    from_file = gw.flows()
    assert sorted(f["flow_id"] for f in from_file) == sorted(f["flow_id"] for f in flows)
    assert Counter(f["fate"] for f in from_file) == expected
    result = gw.warden("verify", "--json", "--pubkey", str(gw.signing_pub))
    verdict = json.loads(result.stdout)
    assert verdict["ok"] and verdict["checkpoints"] >= 1  # the shutdown signs the final head
    # The external anchor: the signed head is also in the operator's log, outside the store.
    anchors = re.findall(r"warden checkpoint seq=(\d+) head_seq=\d+ head_hash=([0-9a-f]{64})", gw.log())
    assert anchors and int(anchors[-1][0]) == verdict["head_seq"]

    # Time filters: everything is from the last hour, nothing is older than it.
    assert len(gw.flows("--since", "1h")) == len(from_file)
    assert gw.flows("--until", "1h") == []
    bad_time = gw.warden("flows", "--since", "last tuesday", check=False)
    assert bad_time.returncode == 2 and "--since" in bad_time.stderr

    # Filters: by host and by fate.
    assert all(f["host"] == "example.invalid" for f in gw.flows("--host", "example.invalid"))
    assert len(gw.flows("--fate", "completed")) == expected["completed"]
    assert len(gw.flows("--decision", "block")) == expected["blocked_by_policy"] + expected["host_not_allowed"]


def tampered_copy(gw: Gateway, tmp_path: Path, name: str, *sql: str) -> subprocess.CompletedProcess:
    copy = tmp_path / f"{name}.duckdb"
    shutil.copy(gw.db, copy)
    shutil.copy(f"{gw.db}.journal", f"{copy}.journal")  # the store is the file and its journal
    con = duckdb.connect(str(copy))
    for statement in sql:
        con.execute(statement)
    con.close()
    return subprocess.run(
        [str(Path(gw.args[0]).parent / "warden"), "--db", str(copy), "--admin", "127.0.0.1:1", "verify",
         "--pubkey", str(gw.signing_pub)],
        capture_output=True, text=True, timeout=60, env={**gw.env, "COLUMNS": "300"},
    )


def test_tampering_is_found_and_named(mixed, tmp_path: Path) -> None:
    gw, _ = mixed
    wait_for_flows(gw, 1)
    gw.stop()
    assert tampered_copy(gw, tmp_path, "clean").returncode == 0

    edited = tampered_copy(gw, tmp_path, "edited", "UPDATE events SET status = 299 WHERE seq = 5")
    assert edited.returncode == 1 and "seq=5" in edited.stderr and "changed" in edited.stderr

    body = tampered_copy(gw, tmp_path, "body", "UPDATE events SET body = 'x'::BLOB WHERE seq = 2")
    assert body.returncode == 1 and "seq=2" in body.stderr

    deleted = tampered_copy(gw, tmp_path, "deleted", "DELETE FROM events WHERE seq = 4")
    assert deleted.returncode == 1 and "seq=5" in deleted.stderr and "missing" in deleted.stderr

    reordered = tampered_copy(
        gw, tmp_path, "reordered",
        "UPDATE events SET seq = -1 WHERE seq = 3", "UPDATE events SET seq = 3 WHERE seq = 4",
        "UPDATE events SET seq = 4 WHERE seq = -1",
    )
    assert reordered.returncode == 1 and "seq=3" in reordered.stderr

    # Rewriting a checkpoint without the signing key: the signature no longer matches.
    forged = tampered_copy(
        gw, tmp_path, "forged",
        "UPDATE events SET record = replace(record, '\"head_seq\":', '\"head_seq\":1') WHERE kind = 'checkpoint'",
    )
    assert forged.returncode == 1
