"""Telling approvers that a request waits: a Slack-compatible message per approval (``slack_message``), posted to
the review rule's webhook with exponential backoff (``deliver``). The outcome goes on the record (``Delivery``,
as the ledger's ``notified`` or ``notify_failed``), never the webhook's URL: its path is a secret.

The message holds only what the approver's view holds (requester, target, model, findings by type, the masked
preview, clipped), every value the requester chose escaped so that it cannot mention a channel or dress a link as
something else. Approve and Deny buttons carry the approval's id for Slack's interactive callback
(``addons/approvals/slack.py``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from addons.approvals.ledger import Approval
from addons.rules.notifications import Webhook, redacted

APPROVE, DENY = "warden_approve", "warden_deny"  # the buttons' action ids; their value is the approval's id
PREVIEW_CHARS = 600  # of the masked request, in the message
MAX_WAIT = 60.0  # seconds: the longest wait between two attempts
ANSWER_BYTES = 1024  # of a refusing receiver's answer, kept for the reason
_TEXT = 2900  # a section's text (Slack allows 3000)
_FIELD = 1900  # a field's text (Slack allows 2000)


def escape(text: object) -> str:
    """``text`` as Slack mrkdwn shows it literally: ``&``, ``<`` and ``>`` escaped, so a requester's text can
    neither mention (``<!channel>``) nor link (``<https://...|Approve>``)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _code(text: str, limit: int) -> str:
    """``text`` in a code block that it cannot close."""
    return "```" + _clip(escape(text).replace("```", "`\u200b``"), limit) + "```"


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def findings_line(findings: dict[str, int]) -> str:
    return ", ".join(f"{entity}: {count}" for entity, count in sorted(findings.items())) or "none"


def slack_message(approval: Approval, admin_url: str, *, buttons: bool, preview: bool = True) -> dict[str, Any]:
    """The Slack-compatible message announcing ``approval``: ``text`` (the notification's line) and ``blocks``
    (who, what, findings by type, the rule, how to decide; with ``buttons``, Approve and Deny)."""
    who, req, terms = approval.requester, approval.request, approval.terms
    requester = escape(who.get("sub")) + (f" ({escape(who['email'])})" if who.get("email") else "")
    groups = ", ".join(escape(g) for g in who.get("groups") or []) or "none"
    target = _clip(f"{req.get('method')} {req.get('host')}{req.get('path')}", 300)
    deciders = ", ".join(terms.approvers)
    needs = f"{terms.min_approvals} approval(s)" + (", one from each group" if terms.one_from_each_group else "")
    api = f"{admin_url}/api/approvals/{approval.id}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(f"Approval needed: {terms.rule}", 150)}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": _clip(f"*Requested by*\n{requester}\ngroups: {groups}", _FIELD)},
            {"type": "mrkdwn", "text": _clip(f"*Request*\n`{escape(target)}`", _FIELD)},
            {"type": "mrkdwn", "text": _clip(f"*Model*\n{escape(req.get('model') or 'none')}", _FIELD)},
            {"type": "mrkdwn", "text": f"*Rule*\n{escape(terms.rule)} ({terms.mode})"},
            {"type": "mrkdwn", "text": f"*Approval*\n`{approval.id}`"},
            {"type": "mrkdwn", "text": f"*Expires*\n{_iso(approval.expires_at)}"},
        ]},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(
            f"*Findings (masked)*\n{findings_line(req.get('findings') or {})}", _TEXT)}},
    ]
    if preview and req.get("preview"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "*Masked request*\n" + _code(
            str(req["preview"]), PREVIEW_CHARS)}})
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(
        f"*How to decide* (a member of {escape(deciders)}, never the requester; needs {needs})\n"
        f"`warden approvals approve {approval.id} --reason \"...\"`  or  "
        f"`warden approvals deny {approval.id} --reason \"...\"`\n"
        f"Admin API: `POST {escape(api)}/approve` or `/deny`, with your own token", _TEXT)}})
    if buttons:
        blocks.append({"type": "actions", "block_id": "warden_decision", "elements": [
            {"type": "button", "action_id": APPROVE, "value": approval.id, "style": "primary",
             "text": {"type": "plain_text", "text": "Approve"},
             "confirm": {"title": {"type": "plain_text", "text": "Approve this request?"},
                         "text": {"type": "mrkdwn", "text": _clip(f"{requester}: `{escape(target)}`", 290)},
                         "confirm": {"type": "plain_text", "text": "Approve"},
                         "deny": {"type": "plain_text", "text": "Cancel"}}},
            {"type": "button", "action_id": DENY, "value": approval.id, "style": "danger",
             "text": {"type": "plain_text", "text": "Deny"}},
        ]})
    text = _clip(f"Approval {approval.id} needed under rule {escape(terms.rule)}: {requester} sends "
                 f"{escape(target)} (findings: {findings_line(req.get('findings') or {})})", _TEXT)
    return {"text": text, "blocks": blocks}


class UnnamedUrls(logging.Filter):
    """Put on the ``httpx`` logger: each request it logs (``HTTP Request: POST URL``) names a webhook by its host
    only. A URL once known stays in ``urls``: a reload may rotate it while a notification is under way."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.urls:
            text = record.getMessage()
            if any(url in text for url in self.urls):
                for url in sorted(self.urls, key=len, reverse=True):
                    text = text.replace(url, redacted(url))
                record.msg, record.args = text, None
        return True


@dataclass(frozen=True)
class Delivery:
    """How a notification ended: ``notified`` or ``notify_failed``, after how many attempts, the last HTTP
    status (None: no answer), why, and what each attempt met."""

    fate: str
    attempts: int
    status: int | None
    reason: str
    tries: list[str] = field(default_factory=list)


def _retried(status: int) -> bool:
    """A receiver's answer worth another attempt: it was busy or failing, not refusing the message."""
    return status >= 500 or status in (408, 425, 429)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if re.fullmatch(r"\d{1,6}(\.\d+)?", value.strip()) else None


async def _post(client: httpx.AsyncClient, url: str, message: dict, timeout: float) -> tuple[int, str, float | None]:
    """One attempt: the status, the start of the answer (bounded: the receiver may be anyone) and Retry-After."""
    async with client.stream("POST", url, json=message, timeout=timeout) as response:
        said = b""
        async for chunk in response.aiter_bytes():
            said += chunk
            if len(said) >= ANSWER_BYTES:
                break
        return response.status_code, said[:ANSWER_BYTES].decode("utf-8", "replace"), _retry_after(response)


async def deliver(client: httpx.AsyncClient, url: str, message: dict, hook: Webhook,
                  sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> Delivery:
    """Post ``message`` to ``url`` up to ``hook.attempts`` times: a connection failure, a timeout, a 5xx, 408 or
    429 is tried again after ``hook.backoff``, doubled each time (or the receiver's Retry-After; at most
    ``MAX_WAIT``); any other answer ends it. Never raises; the reasons never hold the URL."""
    tries: list[str] = []
    status: int | None = None
    for attempt in range(1, hook.attempts + 1):
        wait = None
        try:
            status, said, wait = await _post(client, url, message, hook.timeout)
        except httpx.TimeoutException:
            status, outcome = None, f"timed out after {hook.timeout:g} s"
        except httpx.TransportError as e:
            status, outcome = None, f"connection failed ({type(e).__name__})"
        except Exception as e:  # whatever it was, the approval goes on: recorded as a failed attempt
            status, outcome = None, f"failed ({type(e).__name__})"
        else:
            if 200 <= status < 300:
                tries.append(str(status))
                return Delivery("notified", attempt, status, f"accepted with HTTP {status} "
                                                             f"(attempt {attempt} of {hook.attempts})", tries)
            answer = " ".join(said.split())[:200]
            outcome = f"HTTP {status}" + (f": {answer}" if answer else "")
            if not _retried(status):
                tries.append(str(status))
                kind = "redirected (redirects are not followed)" if 300 <= status < 400 else "refused"
                return Delivery("notify_failed", attempt, status, f"{kind}: {outcome}; not tried again", tries)
        tries.append(str(status) if status is not None else outcome)
        if attempt < hook.attempts:
            await sleep(min(wait if wait is not None else hook.backoff * 2 ** (attempt - 1), MAX_WAIT))
    return Delivery("notify_failed", hook.attempts, status,
                    f"gave up after {hook.attempts} attempt(s); the last: {outcome}", tries)
