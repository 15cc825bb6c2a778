"""Notifications end to end: a real gateway announces each approval to its rule's webhook (a local HTTP server),
a webhook that is down holds up nothing, and Slack's signed button presses decide, on a listener of their own;
forged, stale, replayed and unmapped presses are refused and recorded."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, free_port, rules_for
from tests.e2e.approvals_helpers import approval_events, approver, chat, pending, send
from tests.e2e.notify_helpers import (
    HOOK_PATH,
    SIGNING_SECRET,
    WebhookReceiver,
    click_body,
    notify_rules,
    prepare_workdir,
    press,
    signed,
    slack_args,
)
from tests.e2e.test_bad_input import startup_failure
from tests.e2e.test_secrets import all_cells

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver():
    hook = WebhookReceiver()
    yield hook
    hook.close()


@pytest.fixture
def slack_gw(gateway_factory, upstream, receiver: WebhookReceiver, tmp_path: Path) -> tuple[Gateway, str]:
    """A gateway whose review rules post to ``receiver``, with its Slack listener on: (gateway, listener)."""
    prepare_workdir(tmp_path / "gw")
    listen, args = slack_args()
    gw = gateway_factory(notify_rules(upstream.port, receiver, free_port()), extra_args=args,
                         env={"WARDEN_TEST_HOOK_PATH": HOOK_PATH})
    return gw, listen


def _events(gw: Gateway, fate: str) -> list[dict[str, Any]]:
    return [{**e, "detail": json.loads(e["record"])["detail"], "reason": json.loads(e["record"])["reason"]}
            for e in approval_events(gw) if e["fate"] == fate]


def _wait_for(gw: Gateway, fate: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not (found := _events(gw, fate)):
        assert time.monotonic() < deadline, f"no {fate} event after {timeout}s: {_events(gw, 'requested')}"
        time.sleep(0.1)
    return found[0]


def _chats(upstream, model: str) -> list[dict]:
    return [r for r in upstream.received if r["path"] == "/v1/chat/completions" and model.encode() in r["body"]]


def _refusals(gw: Gateway) -> list[tuple[str, str | None]]:
    return [(e["detail"]["type"], e["user"]) for e in _events(gw, "refused") if e["detail"].get("via") == "slack"]


def test_the_webhook_says_who_what_findings_rule_and_how_to_decide_and_never_a_secret(
        slack_gw: tuple[Gateway, str], upstream, receiver: WebhookReceiver) -> None:
    gw, _ = slack_gw
    sent = send(gw, upstream.port, chat("notify-hold", "Write to jan.devries@example.nl about the <!channel> audit"))
    [waiting] = pending(gw)
    [post] = receiver.wait(1)
    assert post.path == f"/hook/{HOOK_PATH}" and post.headers["Content-Type"] == "application/json"
    message, shown = post.body, json.dumps(post.body)
    approval_id = waiting["id"]
    assert approval_id in message["text"] and "announced-hold" in message["text"]
    findings = ", ".join(f"{k}: {v}" for k, v in sorted(waiting["request"]["findings"].items()))
    assert "EMAIL_ADDRESS: 1" in findings
    for part in ("alice", "staff", "POST localhost/v1/chat/completions", "notify-hold", findings, "announced-hold",
                 f"warden approvals approve {approval_id}", f"warden approvals deny {approval_id}",
                 f"https://warden-admin.corp.example/api/approvals/{approval_id}/approve", "&lt;EMAIL_ADDRESS_1&gt;",
                 "&lt;!channel&gt;"):
        assert part in shown, part
    assert "jan.devries@example.nl" not in shown and "<!channel>" not in shown  # masked; escaped
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]  # the listener is on: buttons
    assert {(b["action_id"], b["value"]) for b in actions["elements"]} == \
        {("warden_approve", approval_id), ("warden_deny", approval_id)}

    with approver(gw) as bob:
        assert bob.post(f"/api/approvals/{approval_id}/approve", json={}).status_code == 200
    assert sent.result().status_code == 200
    notified = _wait_for(gw, "notified")
    assert notified["detail"]["approval"] == approval_id and notified["user"] == "alice"
    assert (notified["detail"]["target"], notified["detail"]["attempts"], notified["detail"]["status"]) == \
        (f"http://127.0.0.1:{receiver.port}/…", 1, 200)
    with gw.admin_client() as admin:
        [notice] = admin.get(f"/api/approvals/{approval_id}").json()["notices"]
    assert notice["fate"] == "notified"
    listed = gw.warden("--token", gw.token("bob", groups=["security"]), "approvals", "show", approval_id).stdout
    assert f"notified http://127.0.0.1:{receiver.port}/… at " in listed and "accepted with HTTP 200" in listed

    gw.stop()
    cells = all_cells(gw.db)
    assert "notified" in cells
    for secret in (HOOK_PATH, SIGNING_SECRET):
        assert secret not in cells and secret not in gw.log()
        for path in [p for p in gw.db.parent.iterdir() if p.name.startswith(gw.db.name)]:
            assert secret.encode() not in path.read_bytes(), f"{secret} is in {path.name}"


@pytest.mark.parametrize("down", ["answers 500", "refuses connections", "never answers"])
def test_a_webhook_that_is_down_holds_up_nothing_and_its_failure_is_recorded(
        slack_gw: tuple[Gateway, str], upstream, receiver: WebhookReceiver, down: str) -> None:
    gw, _ = slack_gw
    model = "notify-dead" if down == "refuses connections" else "notify-hold"
    receiver.answer = {"answers 500": 500, "never answers": "hang"}.get(down, 200)
    sent = send(gw, upstream.port, chat(model))
    [waiting] = pending(gw)
    with approver(gw) as bob:
        assert bob.post(f"/api/approvals/{waiting['id']}/approve", json={}).status_code == 200
    assert sent.result().status_code == 200  # the approval and the held request went on
    assert len(_chats(upstream, model)) == 1
    if down == "never answers":  # its first attempt still waits for an answer (up to 20 s): nothing recorded yet
        assert receiver.wait(1) and not _events(gw, "notify_failed") and not _events(gw, "notified")
        return
    failed = _wait_for(gw, "notify_failed")
    detail = failed["detail"]
    assert detail["approval"] == waiting["id"] and detail["attempts"] == 3 and detail["channel"] == "webhook"
    assert "gave up after 3 attempt(s)" in failed["reason"]
    if down == "answers 500":
        assert detail["status"] == 500 and detail["tries"] == ["500", "500", "500"] and len(receiver.received) == 3
        assert detail["target"] == f"http://127.0.0.1:{receiver.port}/…"
    else:
        assert detail["status"] is None and "connection failed" in failed["reason"]
    assert HOOK_PATH not in json.dumps(approval_events(gw)) and HOOK_PATH not in gw.log()


def test_a_signed_slack_click_approves_a_held_request(slack_gw: tuple[Gateway, str], upstream,
                                                      receiver: WebhookReceiver) -> None:
    gw, slack = slack_gw
    sent = send(gw, upstream.port, chat("notify-hold", "Summarise the board minutes"))
    [waiting] = pending(gw)
    body = click_body(waiting["id"], "U0BOB")
    r = press(slack, body, signed(body))
    assert r.status_code == 200, r.text
    assert r.json()["text"].startswith(f"bob approved {waiting['id']} (rule announced-hold, requested by alice)")
    assert sent.result().status_code == 200
    assert len(_chats(upstream, "notify-hold")) == 1
    [approved] = _events(gw, "approved")
    assert approved["user"] == "bob" and approved["reason"] == "approved in Slack"
    assert (approved["detail"]["via"], approved["detail"]["slack_user"], approved["detail"]["groups"]) == \
        ("slack", "U0BOB", ["security"])

    deny = click_body(waiting["id"], "U0BOB", "warden_deny")  # decided already: the ledger says so
    late = press(slack, deny, signed(deny))
    assert late.status_code == 409 and late.json()["error"]["type"] == "already_decided"
    assert "Refused" in late.json()["text"]
    assert _refusals(gw) == [("already_decided", "bob")]

    # The listener serves Slack's callbacks and nothing else
    with httpx.Client(base_url=f"http://{slack}", trust_env=False) as client:
        for path in ("/healthz", "/metrics", "/api/approvals", f"/api/approvals/{waiting['id']}/approve", "/",
                     "/jwks", "/slack/actions/../../api/approvals", "/slack"):
            got = client.get(path)
            assert got.status_code == 404, path
            assert client.post(path, json={}).status_code == 404, path
        assert client.get("/slack/actions").status_code == 405
        assert "server" not in client.get("/slack/actions").headers


def test_forged_stale_unsigned_and_replayed_clicks_are_refused_and_recorded(
        slack_gw: tuple[Gateway, str], upstream) -> None:
    gw, slack = slack_gw
    sent = send(gw, upstream.port, chat("notify-hold", "Export the customer table"))
    [waiting] = pending(gw)
    body = click_body(waiting["id"], "U0BOB")
    attempts = {
        "forged_callback": signed(body, secret="a-guess-at-the-secret"),
        "stale_callback": signed(body, at=time.time() - 600),
        "unsigned_callback": {"Content-Type": "application/x-www-form-urlencoded"},
    }
    for kind, headers in attempts.items():
        r = press(slack, body, headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == kind, r.text
    tampered = click_body(waiting["id"], "U0BOB")  # signed for one body, sent with another
    assert press(slack, tampered.replace(b"U0BOB", b"U0EVE"), signed(tampered)).status_code == 401
    with gw.admin_client() as admin:
        assert admin.get(f"/api/approvals/{waiting['id']}").json()["state"] == "pending"
    assert not _chats(upstream, "notify-hold")

    headers = signed(body)
    assert press(slack, body, headers).status_code == 200
    replayed = press(slack, body, headers)  # the very same callback again
    assert replayed.status_code == 401 and replayed.json()["error"]["type"] == "replayed_callback"
    assert sent.result().status_code == 200 and len(_chats(upstream, "notify-hold")) == 1
    assert _refusals(gw) == [("forged_callback", None), ("stale_callback", None), ("unsigned_callback", None),
                             ("forged_callback", None), ("replayed_callback", None)]
    assert [e["user"] for e in _events(gw, "approved")] == ["bob"]
    assert SIGNING_SECRET not in gw.log() and SIGNING_SECRET not in json.dumps(approval_events(gw))


def test_an_unmapped_slack_user_a_self_approval_an_outsider_and_a_revoked_approver_are_refused(
        slack_gw: tuple[Gateway, str], upstream) -> None:
    gw, slack = slack_gw
    sent = send(gw, upstream.port, chat("notify-hold", "Send the payroll file"), groups=["security"])
    [waiting] = pending(gw)
    clicks = [("U0MALLORY", "T0ACME", 403, "unmapped_slack_user"),  # a Slack user the rules do not map
              ("U0BOB", "T0OTHER", 403, "other_workspace"),  # the same id, from another workspace
              ("U0ALICE", "T0ACME", 403, "own_request"),  # the requester, although in security
              ("U0DAVE", "T0ACME", 403, "not_an_approver")]  # legal approves other rules, not this one
    for user, team, status, kind in clicks:
        body = click_body(waiting["id"], user, team=team)
        r = press(slack, body, signed(body))
        assert (r.status_code, r.json()["error"]["type"]) == (status, kind), r.text
    with gw.admin_client() as admin:
        assert admin.get(f"/api/approvals/{waiting['id']}").json()["state"] == "pending"
    assert not sent.done.is_set() and not _chats(upstream, "notify-hold")
    assert _refusals(gw) == [("unmapped_slack_user", None), ("other_workspace", None), ("own_request", "alice"),
                             ("not_an_approver", "dave")]
    unmapped = _events(gw, "refused")[0]
    assert (unmapped["detail"]["slack_user"], unmapped["detail"]["approval"]) == ("U0MALLORY", waiting["id"])

    with gw.admin_client() as admin:  # bob's access is revoked: his Slack clicks are refused from now on
        assert admin.post("/api/revoke", json={"user": "bob", "reason": "left"}).status_code == 200
    body = click_body(waiting["id"], "U0BOB")
    r = press(slack, body, signed(body))
    assert (r.status_code, r.json()["error"]["type"]) == (403, "revoked")
    assert _refusals(gw)[-1] == ("revoked", "bob")
    with approver(gw, "carol") as carol:
        assert carol.post(f"/api/approvals/{waiting['id']}/deny", json={"reason": "no"}).status_code == 200
    assert sent.result().status_code == 403


def test_notification_settings_that_cannot_work_stop_start_up_naming_them(
        tmp_path: Path, confdir: Path, upstream) -> None:
    listen = ("--set", f"warden_slack_listen=127.0.0.1:{free_port()}")
    plain = rules_for(upstream.port)
    log = startup_failure(tmp_path / "a", confdir, upstream, plain, *listen)
    assert "warden_slack_listen: the rules file has no approvals.slack" in log

    receiver = WebhookReceiver()
    try:
        text = notify_rules(upstream.port, receiver, free_port())
    finally:
        receiver.close()
    log = startup_failure(tmp_path / "b", confdir, upstream, text, env={"WARDEN_TEST_HOOK_PATH": HOOK_PATH})
    assert "rules.yaml: approvals.slack.signing_secret_file: file " in log and "cannot be read" in log

    prepare_workdir(tmp_path / "c")
    log = startup_failure(tmp_path / "c", confdir, upstream, text)  # the webhook's secret path is not set
    assert "rules.yaml: rules[1].review.webhook.url (rule 'announced-hold'): environment variable " \
           "WARDEN_TEST_HOOK_PATH is not set" in log

    prepare_workdir(tmp_path / "d")
    log = startup_failure(tmp_path / "d", confdir, upstream, text.replace("http://127.0.0.1", "http://hooks.example"),
                          env={"WARDEN_TEST_HOOK_PATH": HOOK_PATH})
    assert "rules.yaml: rules[1].review.webhook.url (rule 'announced-hold'): Value error, the webhook URL must use " \
           "https (plain http only to a loopback address" in log
    assert HOOK_PATH not in log and SIGNING_SECRET not in log
