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
from tests.forgery import resign

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
        gw: Gateway = gateway_factory(
            rules_for(upstream.port, f"  - name: witness\n    host: localhost\n    port: {port}\n"))
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
    body, original = con.execute(
        "SELECT body, original_enc FROM events WHERE kind='request' AND record->>'path'='/echo/mask'").fetchone()
    con.close()
    assert b"<EMAIL>" in body and secret_email.encode() not in body
    assert original is not None and secret_email.encode() not in original
    assert secret_email.encode() not in gw.db.read_bytes()

    flow_id = gw.flows()[0]["flow_id"]
    masked = json.loads(gw.warden("show", "--json", flow_id).stdout.splitlines()[0])
    assert secret_email not in masked["body"] and masked["original"] == "encrypted"
    shown = gw.warden("show", "--json", "--originals", "--key", str(gw.originals_key), flow_id)
    clear = json.loads(shown.stdout.splitlines()[0])
    assert secret_email in clear["body"]

    out = tmp_path / "orig.mitm"
    gw.warden("export-flows", "-o", str(out), "--originals", "--key", str(gw.originals_key))
    [flow] = list(io.FlowReader(out.open("rb")).stream())
    assert secret_email.encode() in flow.request.content

    wrong_key = tmp_path / "wrong.key"
    wrong_key.write_text(base64.b64encode(b"k" * 32).decode())
    denied = gw.warden("show", "--originals", "--key", str(wrong_key), flow_id, check=False)
    assert denied.returncode != 0 and "does not decrypt with this key" in denied.stderr


# -- a record that cannot be forged: what someone with write access to the stopped store's files can try ---


def _record_traffic(gw: Gateway, port: int, n: int = 6) -> None:
    with gw.client() as client:
        for i in range(n):
            assert client.post(f"https://localhost:{port}/echo/e{i}", json={"i": i}).status_code == 200


def _rewrite(db: Path, change) -> None:
    """Rewrite the stopped store's events with ``change`` and put the journal's anchor in line with them."""
    import duckdb

    from addons.store.events import journal_line
    from addons.store.journal import journal_path
    from addons.store.queries import iter_events

    con = duckdb.connect(str(db))
    events = change(list(iter_events(con)))
    con.execute("DELETE FROM events")
    appender = con.appender("events")
    appender.append_rows([e.row() for e in events])
    appender.flush()
    con.close()
    journal_path(db).write_bytes(journal_line(events[-1]))


def _rehash(events, renumber: bool = False):
    from addons.store.events import GENESIS, seal

    prev = GENESIS
    for i, event in enumerate(events):
        seal(event, i if renumber else event.seq, prev)
        prev = event.hash
    return events


def test_verify_through_the_gateway_signs_first_and_names_the_heads(gateway_factory, upstream) -> None:
    gw: Gateway = gateway_factory(extra_args=("--set", "warden_checkpoint_every=100000"))
    _record_traffic(gw, upstream.port)
    result = gw.warden("verify", "--json")
    data = json.loads(result.stdout)
    assert data["status"] == "ok" and data["signed_now"]["head_seq"] == data["head_seq"] - 1
    head = data["heads"][-1]
    assert head == {"seq": data["signed_now"]["seq"], "head_seq": data["signed_now"]["head_seq"],
                    "head_hash": data["signed_now"]["head_hash"], "key_id": data["signed_now"]["key_id"]}
    # The external copy an auditor compares with: the gateway's log line for the same head.
    assert (f"warden checkpoint seq={head['seq']} head_seq={head['head_seq']} head_hash={head['head_hash']} "
            f"key_id={head['key_id']}") in gw.log()
    text = gw.warden("verify").stdout
    assert "chain OK" in text and f"head_hash={head['head_hash']}" in text and "signed now by the gateway" in text


def test_a_forged_chain_fails_verify(gateway_factory, upstream) -> None:
    """Old code: early events deleted and the rest re-hashed passed as 'chain OK ... (earlier events purged)'."""
    gw: Gateway = gateway_factory()
    _record_traffic(gw, upstream.port)
    gw.stop()
    pristine = gw.db.read_bytes()
    assert gw.warden("verify", db_only=True).returncode == 0

    # 1. delete the first events, re-hash the rest from the genesis, keep their seqs, drop the checkpoints
    _rewrite(gw.db, lambda events: _rehash([e for e in events if e.seq >= 4 and e.kind != "checkpoint"]))
    result = gw.warden("verify", db_only=True, check=False)
    assert result.returncode == 1 and "does not begin at its genesis" in result.stderr, result

    # 2. the same, renumbered from 0: an intact chain no signature covers is not a verified record
    gw.db.write_bytes(pristine)
    _rewrite(gw.db, lambda events: _rehash([e for e in events if e.seq >= 4 and e.kind != "checkpoint"], renumber=True))
    result = gw.warden("verify", db_only=True, check=False)
    assert result.returncode == 3 and "0 SIGNED CHECKPOINTS" in result.stdout, result
    assert "chain OK" not in result.stdout, result
    as_json = gw.warden("verify", "--json", db_only=True, check=False)
    assert json.loads(as_json.stdout)["status"] == "no_signed_checkpoint"

    # 3. renumbered and re-hashed, the signed checkpoint kept: it vouches for a head that is no longer there
    gw.db.write_bytes(pristine)
    _rewrite(gw.db, lambda events: _rehash([e for e in events if e.seq >= 4], renumber=True))
    result = gw.warden("verify", db_only=True, check=False)
    assert result.returncode == 1 and "checkpoint vouches for" in result.stderr, result


def test_an_edited_tail_laundered_through_a_restart_is_named_signed_late_and_caught_by_the_logged_heads(
    gateway_factory, upstream, tmp_path: Path
) -> None:
    """Old code: delete the final checkpoint, edit and re-hash the events after the previous signed one, rewrite
    the journal's anchor: verify said only "unsigned tail", advised starting the gateway, and the gateway then
    signed the forged tail silently, as if signed in the normal course."""
    from addons.store.events import seal
    from tests.conftest import start_gateway

    gw: Gateway = gateway_factory(extra_args=("--set", "warden_checkpoint_every=100000"))
    _record_traffic(gw, upstream.port, 3)
    assert gw.warden("verify").returncode == 0  # through the gateway: a checkpoint signed mid-way
    with gw.client() as client:
        for i in range(3):
            assert client.post(f"https://localhost:{upstream.port}/echo/exfil{i}", json={"i": i}).status_code == 200
    gw.stop()  # the final checkpoint signs the head
    first_log = gw.log_path

    def launder(events):
        *kept, final = events
        assert final.kind == "checkpoint"  # the shutdown checkpoint, deleted
        signed = max(i for i, e in enumerate(kept) if e.kind == "checkpoint")
        for e in kept[signed + 1:]:
            if e.path and "/exfil" in e.path:
                e.path = e.path.replace("/exfil", "/harmless")
        prev = kept[signed].hash
        for e in kept[signed + 1:]:
            seal(e, e.seq, prev)
            prev = e.hash
        return kept

    _rewrite(gw.db, launder)
    tail = json.loads(gw.warden("verify", "--json", db_only=True, check=False).stdout)
    assert tail["status"] == "unsigned_tail" and tail["signed_late"] == []
    first, last = tail["signed_seq"] + 2, tail["head_seq"]

    restarted = start_gateway(gw.workdir, gw.confdir, (gw.workdir / "rules.yaml").read_text(), upstream.port, db=gw.db)
    try:
        assert f"events no checkpoint signed (seq {first}..{last})" in restarted.log()
        result = restarted.warden("verify", "--json")
        data = json.loads(result.stdout)
        assert result.returncode == 0 and data["status"] == "ok"
        assert data["signed_late"] == [{"first_seq": first, "last_seq": last, "count": last - first + 1,
                                        "startup_seq": last + 1}]
        [startup] = [e for e in restarted.admin_client().get("/api/events", params={"after_seq": last}).json()["events"]
                     if e["kind"] == "startup"]
        record = startup["record"] if isinstance(startup["record"], dict) else json.loads(startup["record"])
        assert record["detail"]["unsigned_tail"] == {"first_seq": first, "last_seq": last, "count": last - first + 1}
        text = restarted.warden("verify").stdout
        assert f"signed late (found unsigned at start-up, seq {first}..{last})" in text
        # the head the first gateway logged at shutdown is not in the laundered chain
        caught = restarted.warden("verify", "--heads", str(first_log), check=False)
        assert caught.returncode == 1, caught
        assert f"event seq={last + 1} of the chain is not a checkpoint" in caught.stderr, caught
        assert "external heads: 1 of 2 matched" in caught.stderr
    finally:
        restarted.stop()


def test_a_history_re_signed_with_the_signing_key_is_caught_by_the_logged_heads(gateway_factory, upstream) -> None:
    """Old code: a history re-hashed and re-signed with the gateway's own key verified, and nothing compared it
    with the heads the gateway had logged."""
    from addons.store.keys import SigningKey

    gw: Gateway = gateway_factory(extra_args=("--set", "warden_checkpoint_every=4"))
    _record_traffic(gw, upstream.port, 6)
    gw.stop()
    logged = [line for line in gw.log().splitlines() if "warden checkpoint seq=" in line]
    assert len(logged) >= 3

    good = gw.warden("verify", "--heads", str(gw.log_path), db_only=True)
    assert f"external heads: {len(logged)} of {len(logged)} matched" in good.stdout
    data = json.loads(gw.warden("verify", "--json", "--heads", str(gw.log_path), db_only=True).stdout)
    assert data["status"] == "ok" and data["external_heads"]["matched"] == len(logged) == data["checkpoints"]

    key = SigningKey.load_or_create(gw.workdir / "warden-signing.key")

    def forge(events):
        [request] = [e for e in events if e.kind == "request" and e.path == "/echo/e1"]
        request.body = b'{"i": 999}'
        return resign(events, key)

    _rewrite(gw.db, forge)
    alone = gw.warden("verify", db_only=True, check=False)
    assert alone.returncode == 0 and "chain OK" in alone.stdout, alone  # the forgery holds by itself
    caught = gw.warden("verify", "--heads", str(gw.log_path), db_only=True, check=False)
    assert caught.returncode == 1 and "external heads are not in the chain" in caught.stderr, caught
    assert f"external heads: 0 of {len(logged)} matched" in caught.stderr
    assert json.loads(gw.warden("verify", "--json", "--heads", str(gw.log_path), db_only=True,
                                check=False).stdout)["external_heads"]["matched"] == 0
    unusable = gw.warden("verify", "--heads", str(gw.workdir / "rules.yaml"), db_only=True, check=False)
    assert unusable.returncode == 2 and "no 'warden checkpoint" in unusable.stderr


def test_truncated_and_reordered_chains_fail_verify(gateway_factory, upstream) -> None:
    import duckdb

    gw: Gateway = gateway_factory()
    _record_traffic(gw, upstream.port)
    gw.stop()
    pristine = gw.db.read_bytes()

    # the last events removed from DuckDB: the journal's anchor (the head the store reached) is missing
    con = duckdb.connect(str(gw.db))
    con.execute("DELETE FROM events WHERE seq > (SELECT max(seq) - 3 FROM events)")
    con.close()
    result = gw.warden("verify", db_only=True, check=False)
    assert result.returncode == 1 and "warden.duckdb.journal: line 1" in result.stderr, result

    # two events swapped
    gw.db.write_bytes(pristine)
    con = duckdb.connect(str(gw.db))
    con.execute("UPDATE events SET seq = CASE seq WHEN 2 THEN 3 ELSE 2 END WHERE seq IN (2, 3)")
    con.close()
    result = gw.warden("verify", db_only=True, check=False)
    assert result.returncode == 1 and "chain BROKEN" in result.stderr, result


def test_the_cli_token_follows_the_rules_identity(gateway_factory, upstream, tmp_path: Path) -> None:
    """Old code: the CLI minted aud=warden, groups=[warden-admin] whatever the rules said, and was refused."""
    identity = "identity:\n  audience: corp-gateway\n  admin_groups: [sec-auditors, soc]\n"
    gw: Gateway = gateway_factory(identity + rules_for(upstream.port))
    with gw.client(token=gw.token("alice", audience="corp-gateway")) as client:
        assert client.get(f"https://localhost:{upstream.port}/echo/alice").status_code == 200
    assert len(gw.flows()) == 1  # WARDEN_RULES points at this gateway's rules file
    refused = gw.warden("--rules", str(tmp_path / "absent.yaml"), "flows", check=False)
    assert refused.returncode == 2 and "HTTP 401" in refused.stderr
    token = gw.warden("token", "bob", "--groups", "dev").stdout.strip()
    with gw.client(token=token, user="bob") as client:  # warden token's aud defaults to the rules' audience too
        assert client.get(f"https://localhost:{upstream.port}/echo/bob").status_code == 200


def test_a_body_masking_never_read_is_kept_only_as_an_encrypted_original(gateway_factory, upstream) -> None:
    """Refused before masking (policy, identity), unparsable, or read two ways: a body masking did not read may carry
    PII, so the record keeps its size and the body only encrypted, never in the clear."""
    gw: Gateway = gateway_factory()
    email = "withheld.PLANTED@example.org"
    url = f"https://localhost:{upstream.port}"
    sent = {
        "/v1/files": json.dumps({"purpose": "batch", "note": f"from {email}"}).encode(),  # blocked by policy
        "/v1/chat/completions": b'{"model": "m", "messages": [{"role": "user", "content": "mail ' + email.encode(),
        "/v1/responses": b'{"model": "m", "input": "' + email.encode() + b'", "input": "hi"}',  # a key twice
    }
    with gw.client() as client:
        for path, body in sent.items():
            status = client.post(url + path, content=body, headers={"content-type": "application/json"}).status_code
            assert status in (400, 403), (path, status)
    refused = httpx.post(f"http://127.0.0.1:{gw.reverse_port}/v1/chat/completions", json={"messages": [email]},
                         headers={"Authorization": "Bearer not-a-token"}, trust_env=False)
    assert refused.status_code == 401
    assert not any(email.encode() in x["body"] for x in upstream.received)
    by_path = {}
    for flow in gw.flows():
        shown = json.loads(gw.warden("show", "--json", flow["flow_id"]).stdout.splitlines()[0])
        by_path.setdefault(shown["path"], []).append(shown)
    for path in sent:
        for shown in by_path[path]:
            assert shown["detail"]["body_withheld"].startswith("not read for PII"), shown["detail"]
            assert shown["original"] == "encrypted" and email not in json.dumps(shown)
    assert len(by_path["/v1/chat/completions"]) == 2  # the malformed body and the unauthenticated one
    flow_id = by_path["/v1/files"][0]["flow_id"]
    clear = json.loads(gw.warden("show", "--json", "--originals", "--key", str(gw.originals_key), flow_id)
                       .stdout.splitlines()[0])
    assert email in clear["body"]
    gw.stop()
    store = gw.db.read_bytes() + (gw.db.parent / (gw.db.name + ".journal")).read_bytes()
    assert email.encode() not in store
