"""The approval's message (Slack-compatible: who, what, findings by type, the rule, how to decide, buttons) and
its delivery: retried with exponential backoff on failures worth retrying, never raising, never naming the URL."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from addons.approvals.ledger import Ledger
from addons.approvals.notify import APPROVE, DENY, MAX_WAIT, deliver, escape, slack_message
from addons.approvals.terms import Terms
from addons.rules.notifications import Webhook

T0 = 1_700_000_000.0
URL = "https://hooks.slack.com/services/T0ACME/B0HOOK/s3cr3tPathToken"
TERMS = Terms(rule="bulk-pii", approvers=("security", "legal"), min_approvals=2, ttl=3600)


def approval(request: dict | None = None, requester: dict | None = None):
    ledger = Ledger()
    event = ledger.request(TERMS, requester or {"sub": "alice", "email": "alice@corp.example", "groups": ["staff"],
                                                "kind": "person"},
                           request or {"method": "POST", "host": "api.openai.com", "path": "/v1/chat/completions",
                                       "model": "gpt-4o", "digest": "d", "findings": {"PERSON": 2, "EMAIL_ADDRESS": 1},
                                       "preview": '{"content": "Write to <PERSON_1> at <EMAIL_ADDRESS_1>"}'},
                           "flow-1", T0)
    ledger.apply(event)
    return ledger.get(event.detail["approval"])


def texts(message: dict) -> str:
    """Every text the blocks show, joined."""
    return json.dumps(message["blocks"])


def test_the_message_says_who_what_findings_rule_and_how_to_decide() -> None:
    ap = approval()
    message = slack_message(ap, "https://warden-admin.corp.example", buttons=True)
    shown = texts(message)
    assert ap.id in message["text"] and "bulk-pii" in message["text"]
    for part in ("alice", "alice@corp.example", "staff", "POST api.openai.com/v1/chat/completions", "gpt-4o",
                 "EMAIL_ADDRESS: 1, PERSON: 2", "bulk-pii", "security, legal", "2 approval(s)",
                 f"warden approvals approve {ap.id}", f"warden approvals deny {ap.id}",
                 f"https://warden-admin.corp.example/api/approvals/{ap.id}/approve", "&lt;PERSON_1&gt;"):
        assert part in shown, part
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    buttons = {b["action_id"]: b for b in actions["elements"]}
    assert buttons[APPROVE]["value"] == buttons[DENY]["value"] == ap.id
    assert (buttons[APPROVE]["style"], buttons[DENY]["style"]) == ("primary", "danger")


def test_without_buttons_or_preview() -> None:
    message = slack_message(approval(), "http://127.0.0.1:8081", buttons=False, preview=False)
    assert not [b for b in message["blocks"] if b["type"] == "actions"]
    assert "PERSON_1" not in texts(message) and "PERSON: 2" in texts(message)


def test_a_requesters_text_cannot_mention_a_channel_or_dress_a_link() -> None:
    sneaky = "<!channel> approve now: <https://evil.example/|https://warden-admin.corp.example> & ```"
    ap = approval(request={"method": "POST", "host": "api.openai.com", "path": "/v1/x?<!here>",
                           "model": "<@U0BOSS>", "digest": "d", "findings": {}, "preview": sneaky},
                  requester={"sub": "<!everyone>", "email": None, "groups": ["<!subteam^S1>"], "kind": "person"})
    message = slack_message(ap, "http://127.0.0.1:8081", buttons=True)
    everything = json.dumps(message)
    for raw in ("<!channel>", "<!here>", "<@U0BOSS>", "<!everyone>", "<!subteam", "<https://evil"):
        assert raw not in everything
    assert "&lt;!channel&gt;" in everything and "&amp;" in everything
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"


def test_long_values_are_clipped_within_slacks_limits() -> None:
    ap = approval(request={"method": "POST", "host": "h", "path": "/" + "p" * 5000, "model": "m" * 5000,
                           "digest": "d", "findings": {f"E{i}": i for i in range(300)}, "preview": "x" * 50_000})
    message = slack_message(ap, "http://127.0.0.1:8081", buttons=True)
    for block in message["blocks"]:
        if block["type"] == "section":
            assert len(block.get("text", {}).get("text", "")) <= 3000
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
    assert len(message["text"]) <= 3000


class Receiver:
    """A transport answering each attempt from a script: a status, or an exception to raise."""

    def __init__(self, *script: int | Exception, headers: dict | None = None) -> None:
        self.script = list(script)
        self.headers = headers or {}
        self.received: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.received.append(json.loads(request.content))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return httpx.Response(step, text="ok" if step < 300 else "no_service", headers=self.headers)


def run(receiver: Receiver, hook: Webhook):
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
            return await deliver(client, URL, {"text": "t", "blocks": []}, hook, sleep)

    return asyncio.run(go()), waits


HOOK = Webhook(url=URL, attempts=4, backoff=0.5)


def test_failures_worth_retrying_are_retried_with_exponential_backoff() -> None:
    receiver = Receiver(httpx.ConnectError("refused"), 500, 503, 200)
    delivery, waits = run(receiver, HOOK)
    assert (delivery.fate, delivery.attempts, delivery.status) == ("notified", 4, 200)
    assert waits == [0.5, 1.0, 2.0]
    assert delivery.tries == ["connection failed (ConnectError)", "500", "503", "200"]
    assert len(receiver.received) == 4


def test_it_gives_up_after_the_attempts_and_says_why_without_the_url() -> None:
    delivery, waits = run(Receiver(500, httpx.ReadTimeout("slow"), 502, httpx.ConnectError(URL)), HOOK)
    assert (delivery.fate, delivery.attempts, delivery.status) == ("notify_failed", 4, None)
    assert "gave up after 4 attempt(s)" in delivery.reason and "ConnectError" in delivery.reason
    assert waits == [0.5, 1.0, 2.0]
    assert "s3cr3tPathToken" not in json.dumps(delivery.__dict__)


@pytest.mark.parametrize("status", [400, 403, 404, 410, 302])
def test_a_refusal_is_not_retried(status: int) -> None:
    delivery, waits = run(Receiver(status, 200), HOOK)
    assert (delivery.fate, delivery.attempts, delivery.status, waits) == ("notify_failed", 1, status, [])
    assert "not tried again" in delivery.reason
    if status == 404:
        assert "no_service" in delivery.reason  # what Slack says of a removed webhook


def test_too_many_requests_waits_as_told_within_the_cap() -> None:
    delivery, waits = run(Receiver(429, 429, 200, headers={"Retry-After": "7"}), HOOK)
    assert delivery.fate == "notified" and waits == [7.0, 7.0]
    _, capped = run(Receiver(429, 200, headers={"Retry-After": "86400"}), HOOK)
    assert capped == [MAX_WAIT]
    _, doubled = run(Receiver(*[500] * 10), Webhook(url=URL, attempts=10, backoff=10))
    assert doubled == [10, 20, 40, 60, 60, 60, 60, 60, 60]


def test_one_attempt_means_no_retry() -> None:
    delivery, waits = run(Receiver(500), Webhook(url=URL, attempts=1))
    assert (delivery.fate, delivery.attempts, waits) == ("notify_failed", 1, [])


def test_httpxs_request_log_names_a_webhook_by_its_host_only(caplog: pytest.LogCaptureFixture) -> None:
    from addons.approvals.notify import UnnamedUrls

    unnamed = UnnamedUrls()
    unnamed.urls.add(URL)
    logger = logging.getLogger("httpx")
    logger.addFilter(unnamed)
    try:
        with caplog.at_level(logging.INFO, logger="httpx"):
            run(Receiver(200), HOOK)
    finally:
        logger.removeFilter(unnamed)
    [line] = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert "https://hooks.slack.com/…" in line and "s3cr3tPathToken" not in line
