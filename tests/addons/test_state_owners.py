"""What an addon holds for a flow or a connection stays with it, keyed by that flow or connection, and other
addons ask the owner for it: the tunnel's identity (identity), the caller's secrets (credentials), the pseudonym
vault and the bodies masking changed (pii), read by the recorder."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mitmproxy.test import taddons, tflow, tutils

from addons.credentials import Credentials
from addons.flow.meta import PII, Identity, Originals, PiiOutcome
from addons.identity import Tunnels
from addons.pii import PiiMasking
from addons.recorder import Recorder
from addons.store.database import connect
from addons.store.queries import flow_events

CALLER_TOKEN = "caller-token-0123456789abcdef"


def _connect(status: int | None) -> tflow.HTTPFlow:
    connect = tflow.tflow(req=tutils.treq(method=b"CONNECT", path=b"", authority=b"example.com:443"))
    if status is not None:
        connect.response = tutils.tresp(status_code=status)
    return connect


def test_a_tunnel_identity_is_bound_looked_up_and_forgotten() -> None:
    tunnels, client, other = Tunnels(), tflow.tclient_conn(), tflow.tclient_conn()
    alice = Identity("alice")
    assert tunnels.lookup(client) is None
    tunnels.bind(client, alice, _connect(200))
    assert tunnels.lookup(client) is alice and tunnels.lookup(other) is None
    tunnels.forget(client)
    assert tunnels.lookup(client) is None
    tunnels.forget(client)  # forgetting twice is harmless


def test_a_tunnel_holds_its_identity_only_while_its_connect_stands_accepted() -> None:
    tunnels, client = Tunnels(), tflow.tclient_conn()
    connect = _connect(None)  # identity runs before policy: the CONNECT is not answered yet
    tunnels.bind(client, Identity("alice"), connect)
    assert tunnels.lookup(client) is not None
    connect.response = tutils.tresp(status_code=403)  # policy refused its host
    assert tunnels.lookup(client) is None
    connect.response = tutils.tresp(status_code=200)
    assert tunnels.lookup(client) is None  # forgotten when found refused, not merely hidden


def test_the_callers_secrets_stay_with_credentials_per_flow() -> None:
    credentials = Credentials()
    flow, other = tflow.tflow(), tflow.tflow()
    flow.request.headers["authorization"] = f"Bearer {CALLER_TOKEN}"
    credentials.requestheaders(flow)
    credentials.requestheaders(other)
    assert CALLER_TOKEN in credentials.secrets_of(flow)
    assert credentials.secrets_of(other) == frozenset() and credentials.secrets_of(tflow.tflow()) == frozenset()
    assert CALLER_TOKEN not in repr(flow.metadata)


def test_masking_answers_for_a_flow_it_never_masked_without_keeping_anything() -> None:
    pii, flow = PiiMasking(), tflow.tflow()
    assert pii.vault_of(flow) is None
    assert pii.originals_of(flow) == Originals()
    assert flow not in pii.originals


def test_the_recorder_asks_the_owners_for_originals_and_caller_secrets(tmp_path: Path) -> None:
    pii, credentials, recorder = PiiMasking(), Credentials(), Recorder()
    with taddons.context(pii, credentials, recorder) as tctx:
        tctx.configure(recorder, warden_db=str(tmp_path / "w.duckdb"),
                       warden_signing_key=str(tmp_path / "s.key"), warden_originals_key=str(tmp_path / "o.key"))
        recorder.running()
        flow = tflow.tflow()
        flow.request.headers["authorization"] = f"Bearer {CALLER_TOKEN}"
        flow.request.content = f'{{"text": "<EMAIL_ADDRESS_1> says {CALLER_TOKEN}"}}'.encode()
        credentials.requestheaders(flow)
        pii.originals[flow] = Originals(request=b'{"text": "ann@example.org says hi"}')
        PII.set(flow, PiiOutcome(profile="default", read=True))  # the body as masking rendered it
        asyncio.run(recorder.request(flow))
        assert flow.response is None
        recorder.done()
    [event] = flow_events(connect(tmp_path / "w.duckdb", read_only=True), flow.id)
    assert event.detail["original"] == "encrypted" and event.original_enc is not None
    assert b"ann@example.org" not in event.original_enc
    assert CALLER_TOKEN.encode() not in event.body and b"<EMAIL_ADDRESS_1>" in event.body
