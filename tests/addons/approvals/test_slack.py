"""Slack's callbacks: the v0 signature checked (signed, fresh, first seen), and what a signed click asks."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlencode

import pytest

from addons.approvals.ledger import Refused
from addons.approvals.slack import WINDOW, ReplayGuard, parse_click, signature_of, verify

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1_700_000_000


def click_body(action: str = "warden_approve", value: str = "ap-3f9c1a2b7d4e", user: str = "U0BOB",
               team: str = "T0ACME", kind: str = "block_actions", **extra: object) -> bytes:
    payload = {"type": kind, "user": {"id": user, "username": "bob"}, "team": {"id": team},
               "actions": [{"action_id": action, "value": value, "type": "button"}], **extra}
    return urlencode({"payload": json.dumps(payload)}).encode()


def test_the_signature_is_slacks_v0_hmac_of_timestamp_and_raw_body() -> None:
    # Slack's documented example (api.slack.com/authentication/verifying-requests-from-slack)
    body = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
            b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
            b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
            b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    assert signature_of(SECRET, "1531420618", body) == \
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    expected = hmac.new(b"s", b"v0:1:x", hashlib.sha256).hexdigest()
    assert signature_of("s", "1", b"x") == f"v0={expected}"


def test_a_valid_callback_is_accepted_once() -> None:
    body, replays = click_body(), ReplayGuard()
    signature = signature_of(SECRET, str(NOW), body)
    verify(SECRET, str(NOW), signature, body, NOW + 10, replays)
    with pytest.raises(Refused) as replayed:
        verify(SECRET, str(NOW), signature, body, NOW + 11, replays)
    assert (replayed.value.status, replayed.value.type) == (401, "replayed_callback")


@pytest.mark.parametrize("forge", [
    lambda body, sig: (body + b"&x=1", sig),  # the body changed after signing
    lambda body, sig: (body, signature_of("another-secret", str(NOW), body)),
    lambda body, sig: (body, sig[:-1] + ("0" if sig[-1] != "0" else "1")),
    lambda body, sig: (body, sig.removeprefix("v0=")),
    lambda body, sig: (body, "v0=" + "é" * 64),  # not even ASCII
])
def test_a_forged_signature_is_refused(forge) -> None:
    body, signature = forge(click_body(), signature_of(SECRET, str(NOW), click_body()))
    replays = ReplayGuard()
    with pytest.raises(Refused) as refused:
        verify(SECRET, str(NOW), signature, body, NOW, replays)
    assert (refused.value.status, refused.value.type) == (401, "forged_callback")
    assert SECRET not in refused.value.message
    assert not replays.seen  # a forged signature is not remembered: forgeries cannot fill the guard


@pytest.mark.parametrize("timestamp", [str(NOW - int(WINDOW) - 1), str(NOW + int(WINDOW) + 1), "soon", "-5", ""])
def test_a_stale_or_malformed_timestamp_is_refused_before_the_signature_is_checked(timestamp: str) -> None:
    body = click_body()
    with pytest.raises(Refused) as refused:
        verify(SECRET, timestamp, signature_of(SECRET, timestamp, body), body, NOW, ReplayGuard())
    assert refused.value.status == 401
    assert refused.value.type == ("unsigned_callback" if not timestamp else "stale_callback")


def test_a_timestamp_at_the_edge_of_the_window_is_accepted() -> None:
    body = click_body()
    for timestamp in (NOW - int(WINDOW), NOW + int(WINDOW)):
        verify(SECRET, str(timestamp), signature_of(SECRET, str(timestamp), body), body, NOW, ReplayGuard())


@pytest.mark.parametrize(("timestamp", "signature"), [(None, "v0=abc"), (str(NOW), None), (None, None)])
def test_an_unsigned_callback_is_refused(timestamp, signature) -> None:
    with pytest.raises(Refused) as refused:
        verify(SECRET, timestamp, signature, click_body(), NOW, ReplayGuard())
    assert (refused.value.status, refused.value.type) == (401, "unsigned_callback")


def test_a_replay_is_refused_for_as_long_as_its_timestamp_could_pass() -> None:
    clock = [float(NOW)]
    replays = ReplayGuard(timer=lambda: clock[0])
    body = click_body()
    timestamp = str(NOW + int(WINDOW))  # signed "in the future", by a clock ahead of ours
    signature = signature_of(SECRET, timestamp, body)
    verify(SECRET, timestamp, signature, body, clock[0], replays)
    clock[0] = NOW + 2 * WINDOW - 1  # the timestamp still passes: the signature is still remembered
    with pytest.raises(Refused) as replayed:
        verify(SECRET, timestamp, signature, body, clock[0], replays)
    assert replayed.value.type == "replayed_callback"
    clock[0] = NOW + 2 * WINDOW + 1  # forgotten, but the timestamp is stale now
    with pytest.raises(Refused) as stale:
        verify(SECRET, timestamp, signature, body, clock[0], replays)
    assert stale.value.type == "stale_callback"


def test_a_click_names_its_user_workspace_verdict_and_approval() -> None:
    approve = parse_click(click_body(), "T0ACME")
    assert (approve.user, approve.team, approve.verdict, approve.approval) == \
        ("U0BOB", "T0ACME", "approved", "ap-3f9c1a2b7d4e")
    assert parse_click(click_body("warden_deny")).verdict == "denied"


@pytest.mark.parametrize(("body", "status", "kind"), [
    (b"payload=%7Bnot-json", 400, "bad_callback"),
    (b"other=1", 400, "bad_callback"),
    (b"\xff\xfe", 400, "bad_callback"),
    (click_body(kind="view_submission"), 400, "bad_callback"),
    (click_body(action="somebody_elses_button"), 400, "bad_callback"),
    (click_body(value="../../api/revoke"), 400, "bad_callback"),
    (click_body(value=""), 400, "bad_callback"),
    (click_body(user=""), 400, "bad_callback"),
    (click_body(team="T0OTHER"), 403, "other_workspace"),
])
def test_what_is_no_warden_button_press_is_refused(body: bytes, status: int, kind: str) -> None:
    with pytest.raises(Refused) as refused:
        parse_click(body, "T0ACME")
    assert (refused.value.status, refused.value.type) == (status, kind)


def test_two_warden_actions_in_one_callback_are_refused() -> None:
    payload = {"type": "block_actions", "user": {"id": "U0BOB"},
               "actions": [{"action_id": "warden_approve", "value": "ap-1"}, {"action_id": "warden_deny",
                                                                               "value": "ap-2"}]}
    with pytest.raises(Refused, match="one approve or deny action"):
        parse_click(urlencode({"payload": json.dumps(payload)}).encode())
