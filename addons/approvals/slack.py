"""Slack's Approve and Deny buttons: the callback endpoint (``callback_app``: ``POST /slack/actions`` and nothing
else), the request signature it checks (``verify``), and what a click asks (``parse_click``).

Slack signs each callback: ``X-Slack-Signature`` is ``v0=`` and the HMAC-SHA256, keyed with the app's signing
secret, of ``v0:{X-Slack-Request-Timestamp}:{raw body}``. A callback is refused (401, and recorded by the owner)
unsigned, signed otherwise, with a timestamp more than ``WINDOW`` seconds from now, or carrying a signature
already seen (a replay: signatures are remembered for twice the window, so a replay cannot outlive the timestamp
check). The signed click then names a Slack user, whom the owner maps to an approver through the rules file's
table, and the decision goes the admin API's way through the ledger (own request, approver groups, already
decided...). Every answer is JSON Slack can show: ``text`` says the outcome; a refusal also carries ``error``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs

import tornado.web
from cachetools import TTLCache

from addons.approvals.ledger import Approval, Refused
from addons.approvals.notify import APPROVE, DENY

PATH = "/slack/actions"
WINDOW = 300.0  # seconds a callback's timestamp may be from now (Slack's own advice: five minutes)
MAX_BODY = 256 * 1024  # a click's payload carries the message it was on; larger is no Slack callback
_SEEN = 100_000  # signatures remembered at most (only validly signed ones are: an attacker cannot fill it)
_APPROVAL_ID = re.compile(r"^[a-z]{2}-[0-9a-f]{1,32}$")


class ReplayGuard:
    """The signatures of accepted callbacks, each remembered for twice ``window``."""

    def __init__(self, window: float = WINDOW, timer: Callable[[], float] = time.time) -> None:
        self.seen: TTLCache[str, bool] = TTLCache(maxsize=_SEEN, ttl=2 * window, timer=timer)

    def first_time(self, signature: str) -> bool:
        """True the first time ``signature`` is seen within the window (and remembers it), False after."""
        if signature in self.seen:
            return False
        self.seen[signature] = True
        return True


def signature_of(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature of a callback: what ``X-Slack-Signature`` must say."""
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return f"v0={digest}"


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float,
           replays: ReplayGuard, window: float = WINDOW) -> None:
    """Accept a callback signed with ``secret`` within ``window`` of ``now`` and never seen before; ``Refused``
    (401: ``unsigned_callback``, ``stale_callback``, ``forged_callback``, ``replayed_callback``) otherwise."""
    if not timestamp or not signature:
        raise Refused(401, "unsigned_callback", "a Slack callback carries X-Slack-Signature and "
                                                "X-Slack-Request-Timestamp; this one does not")
    if not re.fullmatch(r"\d{1,12}", timestamp) or abs(now - int(timestamp)) > window:
        raise Refused(401, "stale_callback", f"the callback's timestamp is not within {window:g} s of the gateway's "
                                             "clock (a late or replayed callback, or a clock to fix)")
    expected = signature_of(secret, timestamp, body).encode()
    if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        raise Refused(401, "forged_callback", "the callback's signature does not match the signing secret "
                                              "(approvals.slack.signing_secret_*)")
    if not replays.first_time(signature):
        raise Refused(401, "replayed_callback", "this callback was received before (the same signature); a "
                                                "decision is taken once")


@dataclass(frozen=True)
class Click:
    """What a signed button press asks: who (a Slack user, of a workspace), approve or deny, which approval."""

    user: str
    team: str | None
    verdict: str  # approved or denied
    approval: str


def parse_click(body: bytes, team_id: str | None = None) -> Click:
    """The click in a ``block_actions`` callback (``payload=`` JSON, form-encoded); ``Refused`` 400 for anything
    else, 403 from another workspace than ``team_id``."""
    def bad(why: str) -> Refused:
        return Refused(400, "bad_callback", f"not a Warden button press: {why}")

    try:
        payload = json.loads(parse_qs(body.decode("utf-8"), strict_parsing=True)["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError):
        raise bad("the body must be form-encoded with a JSON 'payload'") from None
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        raise bad("the payload's type must be block_actions")
    user, team = payload.get("user"), payload.get("team")
    user_id = user.get("id") if isinstance(user, dict) else None
    team = team.get("id") if isinstance(team, dict) else None
    if not isinstance(user_id, str) or not user_id:
        raise bad("the payload names no user")
    if team_id is not None and team != team_id:
        raise Refused(403, "other_workspace", f"the callback comes from workspace {team!r}; this gateway accepts "
                                              f"{team_id!r} only (approvals.slack.team_id)")
    actions = payload.get("actions")
    ours = [a for a in actions if isinstance(a, dict) and a.get("action_id") in (APPROVE, DENY)] \
        if isinstance(actions, list) else []
    if len(ours) != 1 or not isinstance(ours[0].get("value"), str) or not _APPROVAL_ID.match(ours[0]["value"]):
        raise bad("it must carry one approve or deny action whose value is an approval id")
    verdict = "approved" if ours[0]["action_id"] == APPROVE else "denied"
    return Click(user_id, team if isinstance(team, str) else None, verdict, ours[0]["value"])


class Owner(Protocol):
    """What the endpoint needs from the addon serving it."""

    replays: ReplayGuard

    def signing_secret(self) -> tuple[str, str | None]:
        """The signing secret and the accepted workspace (None: any); ``Refused`` 503 if Slack is not set up."""

    async def decide(self, click: Click) -> tuple[str, Approval]:
        """Take the click as its approver's decision: who they are (their subject) and the approval as it stands
        now; ``Refused`` (recorded) if not allowed."""

    async def refused(self, refusal: Refused, **detail: Any) -> None:
        """Record a refused callback."""


def outcome_text(click: Click, approval: Approval, approver: str) -> str:
    verb = "approved" if click.verdict == "approved" else "denied"
    state = f"; it is {approval.state}" if approval.state != click.verdict else ""
    return f"{approver} {verb} {approval.id} (rule {approval.terms.rule}, requested by {approval.sub}){state}"


class _Json(tornado.web.RequestHandler):
    def set_default_headers(self) -> None:
        self.clear_header("Server")  # what runs here is nobody's business outside

    def answer(self, status: int, text: str, error: Refused | None = None) -> None:
        body: dict[str, Any] = {"response_type": "ephemeral", "replace_original": False, "text": text}
        if error is not None:
            body["error"] = {"status": error.status, "type": error.type, "message": error.message}
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.answer(status_code, self._reason, Refused(status_code, "not_served", self._reason))


class SlackActions(_Json):
    """``POST /slack/actions``: a signed button press, decided as its mapped approver."""

    def initialize(self, owner: Owner) -> None:
        self.owner = owner

    async def post(self) -> None:
        body = self.request.body
        try:
            secret, team_id = self.owner.signing_secret()
            verify(secret, self.request.headers.get("X-Slack-Request-Timestamp"),
                   self.request.headers.get("X-Slack-Signature"), body, time.time(), self.owner.replays)
            click = parse_click(body, team_id)
        except Refused as e:
            await self.owner.refused(e, via="slack", asked="slack_callback")
            self.answer(e.status, f"Refused: {e.message}", e)
            return
        try:
            approver, approval = await self.owner.decide(click)
        except Refused as e:  # recorded by the owner
            self.answer(e.status, f"Refused: {e.message}", e)
            return
        self.answer(200, outcome_text(click, approval, approver))


class NotServed(_Json):
    """Everything else: the listener serves Slack's callbacks and nothing more."""

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


def callback_app(owner: Owner) -> tornado.web.Application:
    return tornado.web.Application([(PATH, SlackActions, {"owner": owner})], default_handler_class=NotServed)
