"""What the approval end-to-end tests share: a rules file with review rules (chosen by the request's model), a
requester sending in a thread, and an approver reaching the admin API with their own token."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import Gateway, rules_for

REVIEWS = """
  - name: hold-review
    when: 'request.model == "review-hold"'
    action: review
    review: {approvers: [security], skip_groups: [oncall], timeout: 60s, ttl: 2m}
  - name: quick-hold
    when: 'request.model == "review-quick"'
    action: review
    review: {approvers: [security], timeout: 1s, ttl: 3s}
  - name: retry-review
    when: 'request.model == "review-retry"'
    action: review
    review: {approvers: [security], mode: retry, ttl: 10m}
  - name: two-approvers
    when: 'request.model == "review-two"'
    action: review
    review: {approvers: [security], min_approvals: 2, mode: retry}
  - name: each-group
    when: 'request.model == "review-each"'
    action: review
    review: {approvers: [security, legal], one_from_each_group: true, mode: retry}
"""


def review_rules(upstream_port: int, extra: str = "") -> str:
    return rules_for(upstream_port, rules=REVIEWS + extra)


def chat(model: str, text: str = "Summarise the quarterly report") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


@dataclass
class Sent:
    """A request sent in a thread of its own (it may be held): its response, once it came."""

    thread: threading.Thread
    response: httpx.Response | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def result(self, timeout: float = 60) -> httpx.Response:
        assert self.done.wait(timeout), "the request did not finish"
        if self.error is not None:
            raise self.error
        assert self.response is not None
        return self.response


def send(gw: Gateway, upstream_port: int, body: dict, user: str = "alice", groups: list[str] | None = None,
         timeout: float = 90) -> Sent:
    """POST ``body`` to the chat endpoint as ``user`` through the gateway, in a thread."""
    sent = Sent(threading.Thread(daemon=True))

    def run() -> None:
        try:
            with gw.client(token=gw.token(user, groups=groups or ["staff"]), user=user, timeout=timeout) as client:
                sent.response = client.post(f"https://localhost:{upstream_port}/v1/chat/completions", json=body)
        except BaseException as e:  # handed to the test through result()
            sent.error = e
        finally:
            sent.done.set()

    sent.thread = threading.Thread(target=run, daemon=True)
    sent.thread.start()
    return sent


def approver(gw: Gateway, user: str = "bob", groups: tuple[str, ...] = ("security",)) -> httpx.Client:
    """The admin API as ``user`` with their own token."""
    return gw.admin_client(gw.token(user, groups=list(groups)))


def pending(gw: Gateway, requester: str = "alice", count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
    """Wait until ``requester`` has ``count`` pending approvals (seen by an admin); return them."""
    deadline = time.monotonic() + timeout
    with gw.admin_client() as admin:
        while time.monotonic() < deadline:
            found = [a for a in admin.get("/api/approvals", params={"state": "pending"}).json()["approvals"]
                     if a["requester"]["sub"] == requester]
            if len(found) >= count:
                return found
            time.sleep(0.1)
    raise AssertionError(f"{requester} has no {count} pending approval(s) after {timeout}s")


def approval_events(gw: Gateway) -> list[dict[str, Any]]:
    """Every approval event on the chain, as the admin API serves them."""
    with gw.admin_client() as admin:
        events, after = [], -1
        while True:
            page = admin.get("/api/events", params={"after_seq": after}).json()
            events += [e for e in page["events"] if e["kind"] == "approval"]
            if not page["more"]:
                return events
            after = page["events"][-1]["seq"]


def post(gw: Gateway, upstream_port: int, body: dict, user: str = "alice", groups: list[str] | None = None,
         token: str | None = None) -> httpx.Response:
    """POST ``body`` to the chat endpoint as ``user`` and wait for the answer (retry mode answers at once)."""
    with gw.client(token=token or gw.token(user, groups=groups or ["staff"]), user=user, timeout=60) as client:
        return client.post(f"https://localhost:{upstream_port}/v1/chat/completions", json=body)


def cli(gw: Gateway, user: str, groups: str, *args: str, check: bool = True):
    """``warden`` as ``user`` with their own token (what an approver does with WARDEN_TOKEN)."""
    return gw.warden("--token", gw.token(user, groups=groups.split(",")), *args, check=check)
