"""SIGKILL under load: the chain still verifies and every response a client got has its events."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from addons.store import connect
from tests.conftest import Gateway, start_gateway

pytestmark = pytest.mark.e2e


def client_loop(gw: Gateway, port: int, stop: threading.Event, got: list[str]) -> None:
    try:
        with gw.client(timeout=5) as client:
            while not stop.is_set():
                marker = uuid.uuid4().hex
                try:
                    r = client.post(f"https://localhost:{port}/echo/{marker}", json={"marker": marker})
                except httpx.HTTPError:
                    return  # the gateway is gone
                if r.status_code == 200 and r.json()["path"] == f"/echo/{marker}":
                    got.append(marker)
    except httpx.HTTPError:
        return


def test_sigkill_during_load(gateway: Gateway, upstream) -> None:
    stop = threading.Event()
    got: list[str] = []
    threads = [threading.Thread(target=client_loop, args=(gateway, upstream.port, stop, got)) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.5)
    gateway.kill()  # SIGKILL: no shutdown hook, no final checkpoint
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert len(got) > 20, "the load did not get going"

    con = connect(gateway.db, read_only=True)  # as the CLI opens it: the journal is loaded first
    rows = con.execute(
        "SELECT r.record->>'path', count(x.seq) FROM events r LEFT JOIN events x "
        "ON x.flow_id = r.flow_id AND x.kind = 'response' WHERE r.kind = 'request' GROUP BY r.record->>'path'"
    ).fetchall()
    con.close()
    responded = {path.rsplit("/", 1)[-1] for path, responses in rows if responses == 1}
    missing = [m for m in got if m not in responded]
    assert not missing, f"{len(missing)} responses the clients received have no response event"

    restarted = start_gateway(gateway.workdir, gateway.confdir, (gateway.workdir / "rules.yaml").read_text(),
                              upstream.port, db=gateway.db)
    try:
        assert restarted.warden("verify").returncode == 0
        with restarted.client() as client:
            assert client.get(f"https://localhost:{upstream.port}/echo/after-restart").status_code == 200
        assert restarted.warden("verify").returncode == 0
    finally:
        restarted.stop()
