"""A known mix of traffic written through the store's own write path (``Store.submit``), as the recorder and the
approval ledger shape their events: what the evidence unit tests count."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from addons.store.database import Store
from addons.store.events import Event
from addons.store.keys import SigningKey

T0 = datetime(2026, 3, 2, 9, 0, 0)


def _identity(sub: str, groups: list[str]) -> dict:
    return {"sub": sub, "email": f"{sub}@example.org", "groups": groups, "method": "proxy-bearer", "kind": "person"}


def flow(n: int, sub: str | None, groups: list[str], *, path: str = "/v1/chat/completions", fate: str = "completed",
          status: int = 200, decision: str | None = "allow", rule: str | None = "default", entities=None,
          claimed: str | None = None, minutes: float = 0, approval: dict | None = None) -> list[Event]:
    flow_id = f"flow-{n:03d}"
    ts = T0 + timedelta(minutes=minutes)
    detail: dict = {"identity": _identity(sub, groups)} if sub else {"claimed_sub": claimed}
    if entities:
        detail["pii"] = {"profile": "default", "findings": [{"entity": k, "path": "$.messages[0].content"}
                                                           for k in entities]}
        detail["original"] = "encrypted"
    if approval:
        detail["approval"] = approval
    refused = fate not in ("completed",)
    request = Event(kind="request", flow_id=flow_id, ts=ts, user=sub, client="127.0.0.1:5000", mode="regular",
                    method="POST", scheme="https", host="api.openai.com", port=443, path=path, decision=decision,
                    rule=rule, upstream=None if fate == "unauthenticated" else "openai", model="gpt-4o",
                    fate=fate if refused else "forwarded", body=b'{"model":"gpt-4o","messages":[]}', body_size=33,
                    headers=[["content-type", "application/json"]], detail=detail, entities=entities,
                    reason="File uploads are not allowed" if fate == "blocked_by_policy" else None)
    response = Event(kind="response", flow_id=flow_id, ts=ts + timedelta(seconds=1), user=sub, status=status,
                     fate=fate, body=b'{"choices":[]}', body_size=14, latency_total_ms=12.5,
                     reason="expired: the token has expired" if fate == "unauthenticated" else None)
    return [request, response]


def write_traffic(db: Path, key: SigningKey) -> dict[str, list[str]]:
    """Write the mix; returns the flow ids by kind. Counts: 6 flows (alice 3, of which 1 masked with 2 email and
    1 person, and 1 under an approval; bob 1 blocked; carol 1; 1 refused token), 1 approval (approved by dave,
    with a grant), 1 refused admin API call, 1 refused approval step."""
    store = Store(db, key, checkpoint_every=1000)
    store.start()
    events: list[Event] = []
    events += flow(1, "alice", ["dev"], minutes=0)
    events += flow(2, "alice", ["dev"], minutes=10, entities={"EMAIL_ADDRESS": 2, "PERSON": 1})
    events += flow(3, "bob", ["ops", "dev"], minutes=20, path="/v1/files", fate="blocked_by_policy", status=403,
                    decision="block", rule="no-files")
    events += flow(4, None, [], minutes=30, fate="unauthenticated", status=407, decision=None, rule=None,
                    claimed="mallory")
    events += flow(5, "carol", ["finance"], minutes=40)
    asked = T0 + timedelta(minutes=50)
    events.append(Event(kind="approval", fate="requested", decision="requested", ts=asked, user="alice",
                        rule="hold-review", flow_id="flow-006", detail={
                            "approval": "ap-0001", "terms": {"approvers": ["security"]},
                            "requester": _identity("alice", ["dev"]),
                            "request": {"method": "POST", "host": "api.openai.com", "path": "/v1/chat/completions",
                                        "findings": {"EMAIL_ADDRESS": 1}}, "expires_at": 0}))
    events.append(Event(kind="approval", fate="refused", decision="refused", ts=asked + timedelta(seconds=5),
                        user="alice", reason="alice requested ap-0001 and cannot decide it",
                        detail={"status": 403, "type": "own_request", "approval": "ap-0001"}))
    events.append(Event(kind="approval", fate="approved", decision="approved", ts=asked + timedelta(seconds=30),
                        user="dave", rule="hold-review", flow_id="flow-006", reason="audit is expected",
                        detail={"approval": "ap-0001", "groups": ["security"], "window": 600}))
    events.append(Event(kind="approval", fate="grant_created", decision="grant_created",
                        ts=asked + timedelta(seconds=30), user="dave", rule="hold-review",
                        detail={"grant": "gr-0001", "approval": "ap-0001", "requester": "alice",
                                "approvers": ["security"], "until": (asked - datetime(1970, 1, 1)).total_seconds()
                                + 630}))
    events += flow(6, "alice", ["dev"], minutes=51,
                    approval={"approval": "ap-0001", "grant": None, "outcome": "passed"})
    events.append(Event(kind="approval", fate="used", decision="used", ts=asked + timedelta(minutes=1, seconds=2),
                        user="alice", rule="hold-review", flow_id="flow-006", detail={"approval": "ap-0001"}))
    events.append(Event(kind="access", fate="refused", ts=T0 + timedelta(minutes=55), user="eve",
                        client="127.0.0.1:6000", detail={"method": "GET", "path": "/api/flows", "query": {},
                                                         "status": 403, "why": "eve is in none of the admin groups"}))
    for event in events:
        store.submit(event).result(timeout=10)
    store.close()  # signs the final head
    return {"all": [f"flow-{n:03d}" for n in range(1, 7)]}
