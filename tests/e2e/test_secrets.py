"""No secret is ever stored: caller keys, the upstream key, cookies, key-bearing query strings."""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb
import httpx
import pytest
from mitmproxy import io

from tests.conftest import UPSTREAM_KEY, Gateway

pytestmark = pytest.mark.e2e

CALLER_BEARER = "sk-caller-PLANTED-7d3e1a"
CALLER_API_KEY = "sk-ant-caller-PLANTED-99f0"
COOKIE = "session=PLANTED-cookie-5be2"
QUERY_KEY = "PLANTED-query-key-c0ffee"
VISIBLE_MARKER = "VISIBLE-marker-in-body-31337"  # not a secret: proves the searches can find things
SECRETS = (CALLER_BEARER, CALLER_API_KEY, "PLANTED-cookie-5be2", QUERY_KEY, UPSTREAM_KEY)


def all_cells(db: Path) -> str:
    """Every value of every event, decoded, as one text (DuckDB compresses the file, so grep it via SQL too)."""
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT * FROM events").fetchall()
    con.close()
    parts = []
    for row in rows:
        for cell in row:
            parts.append(cell.decode("latin-1") if isinstance(cell, (bytes, bytearray)) else str(cell))
    return "\n".join(parts)


def test_planted_secrets_are_nowhere(gateway: Gateway, upstream, tmp_path: Path) -> None:
    token = gateway.token("alice")  # the caller's Warden token travels in Proxy-Authorization
    with gateway.client(token=token) as client:
        r = client.post(
            f"https://localhost:{upstream.port}/v1/chat/completions?api_key={QUERY_KEY}&q=1",
            headers={"Authorization": f"Bearer {CALLER_BEARER}", "x-api-key": CALLER_API_KEY, "Cookie": COOKIE},
            json={"model": "m", "messages": [{"role": "user", "content": VISIBLE_MARKER}]},
        )
        assert r.status_code == 200
    received = [x for x in upstream.received if x["path"].startswith("/v1/chat/completions?api_key")][-1]
    assert ["Authorization", f"Bearer {UPSTREAM_KEY}"] in received["headers"]  # it did go out, to the upstream only
    gateway.stop()

    export = tmp_path / "flows.mitm"
    gateway.warden("export-flows", "-o", str(export))
    flows = list(io.FlowReader(export.open("rb")).stream())
    shown = gateway.warden("show", "--json", flows[0].id).stdout
    listed = gateway.warden("flows", "--json").stdout

    cells = all_cells(gateway.db)
    assert VISIBLE_MARKER in cells and VISIBLE_MARKER in export.read_bytes().decode("latin-1")
    files = [p for p in gateway.db.parent.iterdir() if p.name.startswith(gateway.db.name)]
    for secret in (*SECRETS, token):
        assert secret not in cells, f"{secret} is in the store"
        for path in [*files, export]:
            assert secret.encode() not in path.read_bytes(), f"{secret} is in {path.name}"
        assert secret not in shown and secret not in listed
        assert secret not in gateway.log()
    assert "[redacted]" in cells


def test_upstream_key_never_stored_for_normal_traffic(gateway: Gateway, upstream) -> None:
    reverse_token = gateway.token("bob")
    r = httpx.post(f"http://127.0.0.1:{gateway.reverse_port}/v1/chat/completions", trust_env=False,
                   headers={"Authorization": f"Bearer {reverse_token}"},
                   json={"model": "m", "messages": [{"role": "user", "content": "reverse"}]})
    assert r.status_code == 200
    with gateway.client() as client:
        r = client.post(f"https://localhost:{upstream.port}/v1/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                        headers={"Authorization": f"Bearer {CALLER_BEARER}"})
        assert r.status_code == 200
    gateway.stop()
    cells = all_cells(gateway.db)
    for secret in (UPSTREAM_KEY, CALLER_BEARER, reverse_token):
        assert secret not in cells
        assert secret.encode() not in gateway.db.read_bytes()
    assert subprocess.run(["grep", "-r", "-l", UPSTREAM_KEY, str(gateway.workdir)], capture_output=True).returncode == 1
