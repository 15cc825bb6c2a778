"""Approval: a request under an ``action: review`` rule waits for people, after masking and before credentials.

Policy decides ``review`` (with a snapshot of the rule's review terms); masking has masked the body; this addon
then lets the request pass if its requester is in one of the rule's ``skip_groups``, holds an active grant for the
rule, or holds an approval of this very request (matched by the digest of its method, target, masked body and
requester). Otherwise it asks for approval: an approval is recorded (requester, rule, the masked preview and its
findings) and, in ``hold`` mode, the request waits (an awaited future: other flows run meanwhile) up to the rule's
timeout; in ``retry`` mode it is answered 403 at once with the approval's id, and the same request sent again
passes once approved. Approvers decide through the admin API (``warden approvals approve ID``).

Every step is an ``approval`` event on the chain (``addons/approvals/ledger.py``) and the state is rebuilt from the
record at start-up: grants survive a restart; a request held when the gateway stopped is abandoned (the client
gets an error, nothing is forwarded). A request that passes names its approval or grant (the ``APPROVAL`` fact,
in its request event). ``on_requested`` is where notifications (webhooks) hook in.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from mitmproxy import ctx, http

from addons.approvals.ledger import APPROVED, KIND, OPEN, Approval, Grant, Ledger, Refused
from addons.approvals.terms import Terms
from addons.flow.answers import fail_closed, refuse
from addons.flow.errors import (
    ApprovalAbandoned,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalNeeded,
    ApprovalTimeout,
    NotConfigured,
)
from addons.flow.meta import APPROVAL, DECISION, IDENTITY, PII, REVIEW, ApprovalNote, Decision, PiiOutcome
from addons.store.events import Event
from addons.store.queries import events_of_kind

log = logging.getLogger("warden.approval")
PREVIEW_CHARS = 4000  # of the masked body, for approvers
SWEEP_SECONDS = 0.5  # how often pending approvals are checked for their TTL


def request_digest(flow: http.HTTPFlow, sub: str) -> str:
    """What makes a request the same request: requester, method, target, (masked) body, and the values its
    pseudonyms stand for (a body naming <PERSON_1> is another request when <PERSON_1> is someone else)."""
    req, masking = flow.request, ctx.master.addons.get("piimasking")
    body = hashlib.sha256(req.raw_content or b"").hexdigest()
    values = masking.values_digest(flow) if masking is not None else ""
    return hashlib.sha256(json.dumps([sub, req.method, req.scheme, req.host, req.port, req.path, body, values])
                          .encode()).hexdigest()


def request_summary(flow: http.HTTPFlow, digest: str, model: str | None = None) -> dict:
    """The approvers' view of the request: target, model, the masked body (clipped) and what masking found; what
    masking did not read (a body passed uninspected, a target refused before masking) is not shown."""
    req, pii, masking = flow.request, PII.of(flow), ctx.master.addons.get("piimasking")
    unread = masking.unread(flow) if masking is not None else None
    text = "" if unread else (req.raw_content or b"").decode("utf-8", "replace")
    summary = {"method": req.method, "host": req.host, "port": req.port,
               "path": masking.shown_target(flow) if masking is not None else req.path,
               "upstream": flow.metadata.get("warden.upstream"), "model": model[:200] if model else None,
               "digest": digest, "body_size": len(req.raw_content or b""), "preview": text[:PREVIEW_CHARS],
               "preview_truncated": len(text) > PREVIEW_CHARS,
               "findings": PiiOutcome.counts(pii.findings) if pii is not None else {}}
    if unread:
        summary["preview_withheld"] = unread
    return summary


def how_to_ask(approval: Approval, admin: str) -> str:
    return (f"ask a member of {', '.join(approval.terms.approvers)} to run `warden approvals approve "
            f"{approval.id}` (admin API: POST {admin}/api/approvals/{approval.id}/approve); see its state with "
            f"`warden approvals show {approval.id}`")


class ApprovalGate:
    """The approval addon; others find it with ``ctx.master.addons.get("approvalgate")``."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.waiters: dict[str, list[asyncio.Future]] = {}  # approval id -> the held flows' futures
        self.holding: dict[str, set[str]] = {}  # approval id -> ids of the flows held on it now
        self.notes: weakref.WeakKeyDictionary[http.HTTPFlow, ApprovalNote] = weakref.WeakKeyDictionary()
        # Notification hook point: each is called with an approval once its request is on the record; a failing one
        # is logged and never stops the approval.
        self.on_requested: list[Callable[[Approval], object]] = []
        self.lock = asyncio.Lock()  # a step is checked, committed and applied before the next is checked
        self.sweeper: asyncio.Task | None = None
        self.started = False

    # -- life cycle ---------------------------------------------------------------------------------

    def running(self) -> None:
        store = self._store()
        if store is not None:
            cursor = store.reader()
            try:
                self.ledger = Ledger().rebuild(events_of_kind(cursor, KIND))
            finally:
                cursor.close()
        self.started = True
        self.sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="warden-approval-sweeper")

    async def done(self) -> None:
        """The gateway stops: every held request is abandoned (recorded; its client gets an error)."""
        if self.sweeper is not None:
            self.sweeper.cancel()
        held = [(approval_id, flow_id) for approval_id, flows in self.holding.items() for flow_id in flows]
        if held:
            await self._abandon(held, time.time())

    async def _sweep(self) -> None:
        await self._abandon([(a.id, a.flow_id or "") for a in self.ledger.approvals.values()
                             if a.state == OPEN and a.terms.mode == "hold"], time.time())  # held when it last stopped
        while True:
            try:
                if self.ledger.due(time.time()):
                    await self.step(lambda: self.ledger.expire(time.time()))
            except Exception as e:  # keep sweeping: the next tick tries again
                log.error("warden: expiring approvals failed: %r", e)
            await asyncio.sleep(SWEEP_SECONDS)

    async def _abandon(self, held: list[tuple[str, str]], now: float) -> None:
        def abandoned(approval_id: str, flow_id: str) -> list[Event]:
            still_open = self.ledger.get(approval_id).state == OPEN
            return [self.ledger.abandon(approval_id, flow_id, now)] if still_open else []

        for approval_id, flow_id in held:
            try:
                await self.step(lambda a=approval_id, f=flow_id: abandoned(a, f))  # type: ignore[misc]
            except Exception as e:
                log.error("warden: recording approval %s as abandoned failed: %r", approval_id, e)

    # -- steps on the record ------------------------------------------------------------------------

    async def step(self, build: Callable[[], Iterable[Event]], caller_secrets: frozenset[str] = frozenset()) \
            -> list[Event]:
        """Check a step against the state (``build`` raises ``Refused`` if it is not allowed), commit its events
        and apply them, one step at a time."""
        recorder = ctx.master.addons.get("recorder")
        if recorder is None:
            raise NotConfigured("the gateway has no recorder; approvals need the record")
        async with self.lock:
            events = list(build())
            for event in events:
                await recorder.commit(event, caller_secrets)
                self._apply(event)
        return events

    async def refused(self, refusal: Refused, actor: str | None, **detail: object) -> None:
        """Record a refused step (a decision on an unknown approval, a self-approval...)."""
        try:
            await self.step(lambda: [self.ledger.refused(refusal, actor, time.time(), **detail)])
        except Exception as e:
            log.error("warden: recording a refused approval step failed: %r", e)

    def _apply(self, event: Event) -> None:
        changed = self.ledger.apply(event)
        if isinstance(changed, Approval):
            if event.fate == "requested":
                self._notify(changed)
            elif changed.state != OPEN:
                for future in self.waiters.pop(changed.id, []):
                    if not future.done():
                        future.set_result(changed.state)
        elif isinstance(changed, Grant) and changed.revoked_at is None:
            for future in self.waiters.pop(changed.approval, []):  # its approval completed with a window
                if not future.done():
                    future.set_result(APPROVED)

    def _notify(self, approval: Approval) -> None:
        for hook in self.on_requested:
            try:
                hook(approval)
            except Exception as e:
                log.error("warden: notifying about approval %s failed: %r", approval.id, e)

    # -- the approver's side (the admin API calls these) ------------------------------------------------

    async def decide(self, approval_id: str, approver: str, groups: list[str], verdict: str, reason: str,
                     window: float | None, **via: object) -> Approval:
        """``verdict`` (approved or denied) by ``approver``; ``Refused`` (recorded) if not allowed. ``via``: how the
        decision came when not through the admin API (``via="slack"``, the Slack user), recorded with it."""
        try:
            await self.step(lambda: self.ledger.vote(approval_id, approver, groups, verdict, reason, window,
                                                     time.time(), **via))
        except Refused as e:
            await self.refused(e, approver, approval=approval_id, asked=verdict, **via)
            raise
        return self.ledger.get(approval_id)

    async def revoke_grant(self, grant_id: str, by: str, reason: str) -> Grant:
        try:
            await self.step(lambda: [self.ledger.revoke_grant(grant_id, by, reason, time.time())])
        except Refused as e:
            await self.refused(e, by, grant=grant_id, asked="revoke")
            raise
        return self.ledger.grants[grant_id]

    async def revoke_access(self, sub: str, by: str, reason: str) -> dict:
        """Deny ``sub``'s pending approvals, revoke their grants, refuse their tokens issued until now (cached ones
        and open tunnels included: identity checks every request against the ledger)."""
        events = await self.step(lambda: self.ledger.revoke_access(sub, by, reason, time.time()))
        identity = ctx.master.addons.get("identitygate")
        tunnels = identity.tunnels.open_for(sub) if identity is not None else 0
        return {"subject": sub, "denied": [e.detail["approval"] for e in events if e.fate == "denied" and e.detail],
                "grants_revoked": [e.detail["grant"] for e in events if e.fate == "grant_revoked" and e.detail],
                "open_tunnels": tunnels}

    # -- the request ----------------------------------------------------------------------------------

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        decision = DECISION.of(flow)
        if decision is None or decision.action != REVIEW:
            return
        identity = IDENTITY.of(flow)
        if decision.review is None or identity is None or not self.started:
            refuse(flow, NotConfigured("a review rule decided, but the approval service is not ready"))
            return
        terms, now = Terms.of(decision.rule, decision.review), time.time()
        if terms.skips(identity.groups):
            skipping = ", ".join(sorted(set(identity.groups) & set(terms.skip_groups)))
            self._pass(flow, decision, ApprovalNote(outcome="skipped"),
                       f"review skipped: {identity.sub} is in {skipping}")
            return
        grant = self.ledger.grant_for(identity.sub, terms.rule, now)
        if grant is not None:
            self._pass(flow, decision, ApprovalNote(approval=grant.approval, grant=grant.id, outcome="passed"),
                       f"under grant {grant.id} (approval {grant.approval}) until {_iso(grant.until)}")
            return
        digest = request_digest(flow, identity.sub)
        approval = self.ledger.matching(identity.sub, terms.rule, digest)
        if approval is not None and approval.state == APPROVED:
            await self._use(flow, decision, approval)
            return
        if approval is None:
            requester = {"sub": identity.sub, "email": identity.email, "groups": identity.groups, "kind": identity.kind}
            secrets = self._caller_secrets(flow)
            summary = request_summary(flow, digest, self._model(flow))
            [event] = await self.step(lambda: [self.ledger.request(terms, requester, summary, flow.id, now)], secrets)
            approval = self.ledger.get(event.detail["approval"] if event.detail else "")
        if terms.mode == "retry":
            APPROVAL.set(flow, ApprovalNote(approval=approval.id, outcome="pending"))
            refuse(flow, ApprovalNeeded(
                f"this request needs approval under rule {terms.rule!r}: approval {approval.id} is pending; "
                f"{how_to_ask(approval, self.admin_url())}; then send the same request again: it passes once approved "
                f"(the approval expires at {_iso(approval.expires_at)})", approval=approval.id, state=approval.state))
            return
        await self._hold(flow, decision, approval, min(terms.timeout, approval.expires_at - now))

    async def _hold(self, flow: http.HTTPFlow, decision: Decision, approval: Approval, timeout: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(approval.id, []).append(future)
        held = self.holding.setdefault(approval.id, set())
        held.add(flow.id)
        APPROVAL.set(flow, ApprovalNote(approval=approval.id, outcome="held"))
        try:
            state = await asyncio.wait_for(future, max(timeout, 0.0))
        except TimeoutError:
            state = None
        finally:
            held.discard(flow.id)
            if not held:
                self.holding.pop(approval.id, None)
            waiting = self.waiters.get(approval.id, [])
            if future in waiting:
                waiting.remove(future)
        if state is None:
            APPROVAL.set(flow, ApprovalNote(approval=approval.id, outcome="timed_out"))
            refuse(flow, ApprovalTimeout(
                f"this request waited {timeout:g} s for approval {approval.id} under rule {approval.terms.rule!r} "
                f"without a decision and was not forwarded; {how_to_ask(approval, self.admin_url())}; once approved, "
                f"send the same request again (until {_iso(approval.expires_at)})",
                approval=approval.id, state=approval.state))
            return
        grant = self.ledger.grant_for(approval.sub, approval.terms.rule, time.time())
        if state == APPROVED or approval.state == "used" and grant is not None:
            await self._use(flow, decision, approval)
            return
        self._refuse_ended(flow, approval)

    async def _use(self, flow: http.HTTPFlow, decision: Decision, approval: Approval) -> None:
        """Pass ``flow`` under ``approval`` (once) or its grant."""
        used = await self.step(lambda: [self.ledger.use(approval.id, flow.id, time.time())]
                               if approval.state == APPROVED else [])
        grant = self.ledger.grants.get(approval.grant) if approval.grant else None
        if not used and (grant is None or not grant.active(time.time())):
            self._refuse_ended(flow, approval)
            return
        approvers = ", ".join(v.approver for v in approval.votes if v.verdict == "approved")
        self._pass(flow, decision, ApprovalNote(approval=approval.id, grant=approval.grant, outcome="passed"),
                   f"approved by {approvers} (approval {approval.id}" +
                   (f", grant {approval.grant})" if approval.grant else ")"))

    @staticmethod
    def _pass(flow: http.HTTPFlow, decision: Decision, note: ApprovalNote, reason: str) -> None:
        APPROVAL.set(flow, note)
        DECISION.set(flow, Decision("allow", decision.rule, reason, decision.masking, review=decision.review))

    def _refuse_ended(self, flow: http.HTTPFlow, approval: Approval) -> None:
        APPROVAL.set(flow, ApprovalNote(approval=approval.id, outcome=approval.state))
        state, rule = approval.state, approval.terms.rule
        if state == "denied":
            by = next((v.approver for v in reversed(approval.votes) if v.verdict == "denied"), "an approver")
            refuse(flow, ApprovalDenied(f"approval {approval.id} under rule {rule!r} was denied by {by}"
                                        + (f": {approval.reason}" if approval.reason else ""),
                                        approval=approval.id, state=state))
        elif state == "expired":
            refuse(flow, ApprovalExpired(f"approval {approval.id} under rule {rule!r} expired without a decision; "
                                         "send the request again to ask anew", approval=approval.id, state=state))
        elif state == "abandoned":
            refuse(flow, ApprovalAbandoned(f"the gateway stopped while this request was held for approval "
                                           f"{approval.id}; it was not forwarded: send it again",
                                           approval=approval.id, state=state))
        else:
            refuse(flow, ApprovalNeeded(f"approval {approval.id} under rule {rule!r} was already used by another "
                                        "request; send the request again to ask anew", approval=approval.id,
                                        state=state))

    # -- services of other addons -----------------------------------------------------------------------

    @staticmethod
    def _store():
        return getattr(ctx.master.addons.get("recorder"), "store", None)

    @staticmethod
    def admin_url() -> str:
        """The admin API as approvers reach it: the rules' ``approvals.admin_url``, else the ``warden_admin``
        listener."""
        config = ctx.master.addons.get("config")
        rules = getattr(config, "rules", None)
        if rules is not None and rules.model.approvals.admin_url:
            return rules.model.approvals.admin_url
        spec = getattr(ctx.options, "warden_admin", "") or "127.0.0.1:8081"
        return f"http://{spec}"

    @staticmethod
    def _model(flow: http.HTTPFlow) -> str | None:
        intake = ctx.master.addons.get("intake")
        return intake.shape_of(flow).model if intake is not None else None

    @staticmethod
    def _caller_secrets(flow: http.HTTPFlow) -> frozenset[str]:
        credentials = ctx.master.addons.get("credentials")
        return credentials.secrets_of(flow) if credentials is not None else frozenset()


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")
