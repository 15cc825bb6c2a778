"""Notifications: approvers hear of each approval, and may decide it with Slack's buttons.

When the approval addon records a request for approval (its ``on_requested`` hook), the review rule's
``webhook`` (if it has one) is sent a Slack-compatible message (``addons/approvals/notify.py``) in a task of its
own, retried with exponential backoff; its final outcome is an ``approval`` event (``notified`` or
``notify_failed``: the webhook's host, attempts, last status; never its URL). A webhook that is down never holds
up the approval or the held request.

With ``warden_slack_listen`` set (and ``approvals.slack`` in the rules file), the messages carry Approve and Deny
buttons, and Slack's callbacks are served on that listener alone (``addons/approvals/slack.py``: nothing else is
served there, since Slack must reach it): a signed, fresh, first-seen click by a Slack user the rules map to an
approver is that approver's decision, through the same ledger step as the admin API. Refused callbacks are
recorded (``refused`` events, ``via: slack``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import tornado.httpserver
from mitmproxy import ctx, exceptions

from addons.approvals.ledger import Approval, Refused
from addons.approvals.notify import Delivery, UnnamedUrls, deliver, slack_message
from addons.approvals.slack import MAX_BODY, Click, ReplayGuard, callback_app
from addons.flow.listeners import parse_listen, serve
from addons.rules.model import Rules, current_rules
from addons.rules.notifications import Webhook, redacted

log = logging.getLogger("warden.notifications")


class Notifications:
    def __init__(self) -> None:
        self.client: httpx.AsyncClient | None = None
        self.sending: set[asyncio.Task] = set()  # notifications under way (kept: a task nobody holds may vanish)
        self.listener: tornado.httpserver.HTTPServer | None = None
        self.replays = ReplayGuard()
        self.unnamed = UnnamedUrls()  # httpx logs each request's URL: a webhook's path is a secret
        logging.getLogger("httpx").addFilter(self.unnamed)

    def load(self, loader) -> None:
        loader.add_option(
            "warden_slack_listen", str, "",
            "Listener (host:port) for Slack's Approve/Deny callbacks, POST /slack/actions and nothing else; needs "
            "approvals.slack in the rules file. Empty (the default): off, and messages carry no buttons.",
        )

    def configure(self, updated: set[str]) -> None:
        if "warden_rules" in updated:
            self.unnamed.urls |= {u.get_secret_value() for u in current_rules().reachable.webhooks.values()}
        spec = ctx.options.warden_slack_listen
        if updated & {"warden_slack_listen", "warden_rules"} and spec:
            try:
                parse_listen(spec)
            except ValueError as e:
                raise exceptions.OptionsError(f"warden_slack_listen: {e}") from None
            if current_rules().model.approvals.slack is None:
                raise exceptions.OptionsError(
                    "warden_slack_listen: the rules file has no approvals.slack (the signing secret and who the Slack "
                    "users are); add it, or leave warden_slack_listen empty")
        if "warden_slack_listen" in updated and self.client is not None:  # changed while running
            self._listen()

    def running(self) -> None:
        gate = self._gate()
        if gate is None:
            log.error("warden: no approval addon in the chain: approvals are never notified")
            return
        self.client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        gate.on_requested.append(self.notify)
        self._listen()

    async def done(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        for task in list(self.sending):
            task.cancel()
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        logging.getLogger("httpx").removeFilter(self.unnamed)

    def _listen(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        spec = ctx.options.warden_slack_listen
        if spec:
            self.listener = serve(callback_app(self), "warden_slack_listen", spec, max_body_size=MAX_BODY)
            if self.listener is not None:
                log.info("warden: Slack callbacks at http://%s/slack/actions", spec)

    # -- the webhook ----------------------------------------------------------------------------------

    def notify(self, approval: Approval) -> None:
        """The approval addon's ``on_requested`` hook: send the rule's webhook a message, in a task of its own."""
        rules = current_rules()
        hook = next((r.review.webhook for r in rules.rules if r.name == approval.terms.rule and r.review), None)
        url = rules.reachable.webhooks.get(approval.terms.rule)
        if hook is None or url is None or self.client is None:
            return
        message = slack_message(approval, self._gate().admin_url(), buttons=self._buttons(rules), preview=hook.preview)
        task = asyncio.get_running_loop().create_task(
            self._send(approval.id, url.get_secret_value(), message, hook), name=f"warden-notify-{approval.id}")
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    def _buttons(self, rules: Rules) -> bool:
        return self.listener is not None and rules.model.approvals.slack is not None

    async def _send(self, approval_id: str, url: str, message: dict, hook: Webhook) -> None:
        assert self.client is not None
        delivery: Delivery = await deliver(self.client, url, message, hook)
        target = redacted(url)
        (log.info if delivery.fate == "notified" else log.warning)(
            "warden: approval %s: webhook %s %s", approval_id, target, delivery.reason)
        gate = self._gate()
        try:
            await gate.step(lambda: [gate.ledger.notice(
                approval_id, delivery.fate, delivery.reason, time.time(), channel="webhook", target=target,
                attempts=delivery.attempts, status=delivery.status, tries=delivery.tries)])
        except Exception as e:  # the approval goes on; the log keeps what the record could not
            log.error("warden: recording the notification of approval %s failed: %r", approval_id, e)

    # -- Slack's callbacks (addons/approvals/slack.py calls these) ------------------------------------------

    def signing_secret(self) -> tuple[str, str | None]:
        rules = current_rules()
        slack, secret = rules.model.approvals.slack, rules.reachable.signing_secret
        if slack is None or secret is None or self._gate() is None:
            raise Refused(503, "slack_not_configured", "this gateway takes no Slack decisions now (the rules file "
                                                       "has no approvals.slack)")
        return secret.get_secret_value(), slack.team_id

    async def decide(self, click: Click) -> tuple[str, Approval]:
        slack, gate = current_rules().model.approvals.slack, self._gate()
        person = slack.users.get(click.user) if slack is not None else None
        via: dict[str, Any] = {"via": "slack", "slack_user": click.user}
        if person is None:
            refusal = Refused(403, "unmapped_slack_user", f"Slack user {click.user} is not in the rules file's "
                                                          "approvals.slack.users; ask an operator to map them")
            await self.refused(refusal, approval=click.approval, asked=click.verdict, **via)
            raise refusal
        if gate.ledger.revoked(person.sub, None):
            refusal = Refused(403, "revoked", f"access of {person.sub} was revoked; Slack decisions stay refused "
                                              "(decide through the admin API with a newly issued token)")
            await gate.refused(refusal, person.sub, approval=click.approval, asked=click.verdict, **via)
            raise refusal
        approval = await gate.decide(click.approval, person.sub, list(person.groups), click.verdict,
                                     f"{click.verdict} in Slack", None, **via)
        return person.sub, approval

    async def refused(self, refusal: Refused, **detail: Any) -> None:
        gate = self._gate()
        if gate is not None:
            await gate.refused(refusal, None, **detail)

    @staticmethod
    def _gate() -> Any:
        """The approval addon (it owns the ledger); an addon, so found, not imported."""
        return ctx.master.addons.get("approvalgate")
