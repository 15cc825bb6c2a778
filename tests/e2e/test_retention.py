"""Retention, incident holds and key rotation on a real gateway: a purge through the admin API leaves the chain
verifiable from its genesis, removes the content from the store's rows and spares held flows and users; keys
rotate while it serves, and what the old keys signed and encrypted still verifies and decrypts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import Gateway, rules_for

pytestmark = pytest.mark.e2e

PURGED = "PURGE-MARKER-5d1e"
HELD = "HELD-MARKER-a7c3"
EMAIL = "jane.doe@example.com"


def _chat(gateway: Gateway, user: str, text: str) -> None:
    with gateway.client(user=user, token=gateway.token(user)) as client:
        r = client.post(f"https://localhost:{gateway_upstream_port(gateway)}/v1/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": text}]})
        assert r.status_code == 200, r.text


def gateway_upstream_port(gateway: Gateway) -> int:
    return int(next(a for a in gateway.args if a.startswith("reverse:")).rsplit(":", 1)[1].split("@")[0])


def _rows_holding(db: Path, marker: str) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM events WHERE contains(CAST(body AS VARCHAR), ?) OR "
                           "contains(CAST(record AS VARCHAR), ?)", [marker, marker]).fetchall()[0][0]
    finally:
        con.close()


def _json(result) -> dict:
    return json.loads(result.stdout)


def test_purge_holds_and_rotation_through_a_running_gateway(gateway_factory, upstream) -> None:
    gateway = gateway_factory(rules_for(upstream.port))  # no retention: a purge by hand may take any period
    _chat(gateway, "alice", f"old news {PURGED}")
    _chat(gateway, "bob", f"evidence {HELD}")
    _chat(gateway, "mallory", f"more evidence {HELD}")
    bob_flow = gateway.flows("--user", "bob")[0]["flow_id"]
    hold = _json(gateway.warden("hold", "add", "--flow", bob_flow, "--reason", "incident 7", "--json"))
    gateway.warden("hold", "add", "--user", "mallory", "--reason", "incident 8")
    assert {h["hold_id"] for h in map(json.loads, gateway.warden("hold", "list", "--json").stdout.splitlines())} >= {
        hold["hold_id"]}
    time.sleep(1.5)  # the flows are older than the period below

    dry = _json(gateway.warden("purge", "--older-than", "1s", "--dry-run", "--json"))
    report = _json(gateway.warden("purge", "--older-than", "1s", "--json"))
    # (the dry run's own access event is old enough by the second call: one more)
    assert 0 < dry["purged"] <= report["purged"] and report["purge_events"]
    assert bob_flow in report["held_flows"] and report["held_users"] == ["mallory"]
    verified = gateway.warden("verify", "--json")  # through the gateway, from the genesis
    result = _json(verified)
    assert result["status"] == "ok" and result["tombstones"] == report["purged"] and result["purges"] == 1

    # Originals encrypted before a rotation of every key, read after it.
    _chat(gateway, "alice", f"write to {EMAIL} please")
    masked_flow = gateway.flows("--user", "alice", "--entity", "EMAIL_ADDRESS")[0]["flow_id"]
    rotated = _json(gateway.warden("keys", "rotate", "--reason", "yearly", "--json"))
    assert set(rotated["rotated"]) == {"signing", "originals", "hash"}
    assert rotated["checkpoint_before"]["key_id"] == rotated["rotated"]["signing"]["from"]
    assert rotated["checkpoint_after"]["key_id"] == rotated["rotated"]["signing"]["to"]
    _chat(gateway, "alice", "after the rotation")  # signed with the new key from now on
    assert gateway.warden("verify").returncode == 0
    gateway.stop()

    # The stopped store: the keyring verifies both keys' checkpoints; the old originals key still decrypts.
    assert len(list((gateway.workdir / "warden-signing.keys").glob("*.pub"))) == 2
    offline = _json(gateway.warden("verify", "--json"))
    assert offline["status"] == "ok" and {h["key_id"] for h in offline["heads"]} == {
        rotated["rotated"]["signing"]["from"], rotated["rotated"]["signing"]["to"]}
    shown = gateway.warden("show", masked_flow, "--originals", "--key", str(gateway.originals_key))
    assert EMAIL in shown.stdout
    assert _rows_holding(gateway.db, PURGED) == 0
    assert _rows_holding(gateway.db, HELD) >= 4  # both held flows, request and response each

    # On the stopped file: release a hold, purge again, rotate the hash key; verify still passes from the genesis.
    signing = ["--signing-key", str(gateway.workdir / "warden-signing.key")]
    gateway.warden("hold", "release", hold["hold_id"], "--reason", "closed", *signing)
    again = _json(gateway.warden("purge", "--older-than", "1s", "--json", *signing))
    assert again["purged"] >= 2 and again["held_users"] == ["mallory"]
    gateway.warden("keys", "rotate", "--hash", *signing, "--pii-hash-key",
                   str(gateway.workdir / "warden-pii-hash.key"))
    final = _json(gateway.warden("verify", "--json"))
    assert final["status"] == "ok" and final["purges"] == 2, final
    assert _rows_holding(gateway.db, HELD) == 2  # mallory's flow only


def test_a_tombstone_changed_in_the_file_is_named_by_verify(gateway_factory, upstream) -> None:
    gateway = gateway_factory()
    _chat(gateway, "alice", f"to be purged {PURGED}")
    time.sleep(1.5)
    gateway.warden("purge", "--older-than", "1s")
    gateway.stop()
    con = duckdb.connect(str(gateway.db))
    seq, record = con.execute("SELECT seq, record FROM events WHERE (record->'tombstone') IS NOT NULL "
                              "ORDER BY seq LIMIT 1").fetchall()[0]
    changed = json.loads(record)
    changed["tombstone"]["digest"] = "f" * 64
    con.execute("UPDATE events SET record = ? WHERE seq = ?", [json.dumps(changed), seq])
    con.close()
    result = gateway.warden("verify", check=False)
    assert result.returncode == 1
    assert f"event seq={seq}" in result.stderr and "tombstone's digest does not link" in result.stderr
