"""SIGKILL under load: the chain still verifies and every response a client got has its events."""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import pytest

from addons.store.database import connect
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


def _files(db) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(db.parent.glob(db.name + "*"))}


def _killed_under_load(gateway: Gateway, port: int) -> None:
    stop, got = threading.Event(), []
    threads = [threading.Thread(target=client_loop, args=(gateway, port, stop, got)) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    gateway.kill()
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert len(got) > 5, "the load did not get going"


def _refused_start_up(gw: Gateway, upstream) -> str:
    """Start a gateway on ``gw``'s store that must refuse to start; return what it said."""
    import subprocess

    refused = start_gateway(gw.workdir, gw.confdir, (gw.workdir / "rules.yaml").read_text(), upstream.port,
                            db=gw.db, wait=False)
    try:
        code = refused.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        code = 0
    finally:
        refused.stop()
    assert code != 0, f"the gateway started on a damaged journal:\n{refused.log()}"
    return refused.log()


def test_unsigned_tail_after_sigkill_and_reads_write_nothing(gateway_factory, upstream, tmp_path) -> None:
    """Old code: verify passed a store whose last events no checkpoint signed, and every read-only command
    loaded the journal into the file and emptied it."""
    gw: Gateway = gateway_factory(extra_args=("--set", "warden_checkpoint_every=100000"))
    with gw.client() as client:
        assert client.get(f"https://localhost:{upstream.port}/echo/before").status_code == 200
    assert gw.warden("verify").returncode == 0  # one signed checkpoint, then load and SIGKILL
    _killed_under_load(gw, upstream.port)
    before = _files(gw.db)
    result = gw.warden("verify", db_only=True, check=False)
    assert result.returncode == 3 and "UNSIGNED TAIL" in result.stdout, result
    data = json.loads(gw.warden("verify", "--json", db_only=True, check=False).stdout)
    assert data["status"] == "unsigned_tail" and data["ok"] and data["unsigned_tail"] > 5
    [flow, *_] = gw.flows()
    shown = gw.warden("show", flow["flow_id"], db_only=True, check=False)  # the newest: in the unsigned tail
    assert shown.returncode == 3 and "NOT PROVEN" in shown.stdout, shown
    gw.warden("export-flows", "-o", str(tmp_path / "flows.mitm"))
    assert _files(gw.db) == before  # not a byte written by flows, show, verify or export-flows

    restarted = start_gateway(gw.workdir, gw.confdir, (gw.workdir / "rules.yaml").read_text(), upstream.port, db=gw.db)
    try:
        first, last = data["signed_seq"] + 2, data["head_seq"]  # after the last checkpoint, up to the head
        assert f"events no checkpoint signed (seq {first}..{last})" in restarted.log()
        signed = json.loads(restarted.warden("verify", "--json").stdout)
        assert signed["status"] == "ok"  # the gateway recorded the tail as found unsigned, then signed it
        assert [(r["first_seq"], r["last_seq"]) for r in signed["signed_late"]] == [(first, last)]
    finally:
        restarted.stop()


def test_a_corrupted_journal_line_stops_start_up_and_the_repair_keeps_a_copy(gateway_factory, upstream) -> None:
    """Old code: the gateway dropped the damaged line and every later committed one, and reused their seqs."""
    from addons.store.journal import journal_path

    gw: Gateway = gateway_factory()
    _killed_under_load(gw, upstream.port)
    journal = journal_path(gw.db)
    lines = journal.read_bytes().split(b"\n")
    assert len(lines) >= 3, "expected the anchor and at least one committed event in the journal"
    lines[0] = lines[0].replace(b'"request"', b'"requesT"', 1).replace(b'"response"', b'"responsE"', 1)
    damaged = b"\n".join(lines)
    journal.write_bytes(damaged)

    said = _refused_start_up(gw, upstream)
    assert f"warden_db: {journal}: line 1: seq=" in said and "repair-journal" in said
    assert journal.read_bytes() == damaged
    verdict = gw.warden("verify", db_only=True, check=False)
    assert verdict.returncode == 1 and "line 1" in verdict.stderr

    repaired = gw.warden("repair-journal", db_only=True)
    assert "a copy of the journal as it was is kept as" in repaired.stdout
    [copy] = journal.parent.glob(journal.name + ".damaged-*")
    assert copy.read_bytes() == damaged
    restarted = start_gateway(gw.workdir, gw.confdir, (gw.workdir / "rules.yaml").read_text(), upstream.port, db=gw.db)
    try:
        assert restarted.warden("verify").returncode == 0
        # the damaged line was the anchor (already in DuckDB): every committed event after it was kept
        events = [e for e in restarted.flows() if e["fate"] == "completed"]
        assert len(events) >= 5
    finally:
        restarted.stop()


def test_a_journal_truncated_to_nothing_is_detected(gateway_factory, upstream) -> None:
    """Old code: the events only the journal held were lost and verify passed."""
    from addons.store.journal import journal_path

    gw: Gateway = gateway_factory()
    _killed_under_load(gw, upstream.port)
    journal_path(gw.db).write_bytes(b"")
    result = gw.warden("verify", db_only=True, check=False)
    assert result.returncode == 1 and "the journal is empty or missing" in result.stderr, result
    assert "the journal is empty or missing" in _refused_start_up(gw, upstream)
