"""Approvals, grants and revoked access: a state machine whose every step is an event on the store's chain.

The ``Ledger`` is rebuilt from the record: ``apply(event)`` for each ``approval`` event, in chain order, at
start-up and after each live step is committed. The builders (``request``, ``vote``, ``expire``, ...) check a
step against the current state and return the events that make it, raising ``Refused`` (its HTTP status, type
and message) when the step is not allowed; nothing changes until the caller commits the events and applies them.

An approval moves ``pending`` -> ``approved`` (enough approvals) -> ``used`` (the approved request passed once),
or ``pending`` -> ``denied`` | ``expired`` | ``abandoned`` (the gateway stopped while it held the request). An
approval given with a window creates a ``Grant``: the requester's requests under the same rule pass until it ends
or is revoked. ``access_revoked`` denies a person's pending approvals, revokes their grants and refuses every
token issued before it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from addons.approvals.terms import Terms
from addons.store.events import Event

KIND = "approval"  # the events' kind; ``fate`` names the step
STEPS = ("requested", "approved", "denied", "expired", "abandoned", "used", "grant_created", "grant_revoked",
         "access_revoked", "refused", "notified", "notify_failed")
NOTICES = ("notified", "notify_failed")  # a notification's outcome: recorded, no change to the approval's state
OPEN, APPROVED = "pending", "approved"


class Refused(Exception):
    """A step the ledger does not allow: ``status`` and ``type`` for the answer, a message naming cause and fix."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message


@dataclass
class Vote:
    """One approver's decision."""

    approver: str
    groups: list[str]
    verdict: str  # approved or denied
    at: float
    reason: str = ""
    window: float | None = None


@dataclass
class Approval:
    """A request waiting for (or decided by) approvers; never the request's original body, only its masked form."""

    id: str
    terms: Terms
    requester: dict[str, Any]  # sub, email, groups, kind
    request: dict[str, Any]  # method, host, path, upstream, digest, preview (masked), findings (counts)
    flow_id: str | None
    requested_at: float
    expires_at: float
    state: str = OPEN
    votes: list[Vote] = field(default_factory=list)
    reason: str = ""  # why it was denied, expired or abandoned
    decided_at: float | None = None
    used_by: str | None = None  # the flow that passed under it
    grant: str | None = None
    notices: list[dict[str, Any]] = field(default_factory=list)  # each notification's outcome (never its URL)

    @property
    def sub(self) -> str:
        return str(self.requester["sub"])

    def approvers(self) -> list[tuple[str, list[str]]]:
        return [(v.approver, v.groups) for v in self.votes if v.verdict == "approved"]

    def as_json(self) -> dict[str, Any]:
        """The approver's view (``warden approvals show``)."""
        return {
            "id": self.id, "state": self.state, "rule": self.terms.rule, "mode": self.terms.mode,
            "requester": self.requester, "request": self.request, "flow_id": self.flow_id,
            "requested_at": _iso(self.requested_at), "expires_at": _iso(self.expires_at),
            "decided_at": _iso(self.decided_at), "reason": self.reason or None, "used_by": self.used_by,
            "grant": self.grant, "terms": self.terms.as_json(),
            "votes": [{"approver": v.approver, "groups": v.groups, "verdict": v.verdict, "at": _iso(v.at),
                       "reason": v.reason or None, "window": v.window} for v in self.votes],
            "needs": self.terms.missing(self.approvers()) if self.state == OPEN else None,
            "notices": self.notices,
        }


@dataclass
class Grant:
    """A window in which the requester's requests under one rule pass without a new review."""

    id: str
    approval: str
    requester: str
    rule: str
    approvers: tuple[str, ...]  # the rule's approver groups: who may revoke it besides administrators
    created_at: float
    until: float
    revoked_at: float | None = None
    revoked_by: str | None = None
    reason: str = ""

    def active(self, now: float) -> bool:
        return self.revoked_at is None and now < self.until

    def as_json(self, now: float) -> dict[str, Any]:
        return {"id": self.id, "approval": self.approval, "requester": self.requester, "rule": self.rule,
                "created_at": _iso(self.created_at), "until": _iso(self.until), "active": self.active(now),
                "revoked_at": _iso(self.revoked_at), "revoked_by": self.revoked_by, "reason": self.reason or None}


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


def _ts(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC).replace(tzinfo=None)


def _at(event: Event) -> float:
    return event.ts.replace(tzinfo=UTC).timestamp()


def new_id(prefix: str) -> str:
    """A short id a person can type (``ap-3f9c1a2b7d4e``)."""
    return f"{prefix}-{secrets.token_hex(6)}"


def _event(step: str, now: float, *, user: str | None, rule: str | None = None, flow_id: str | None = None,
           reason: str | None = None, **detail: Any) -> Event:
    return Event(kind=KIND, fate=step, ts=_ts(now), user=user, rule=rule, flow_id=flow_id, reason=reason or None,
                 decision=step, detail=detail)


class Ledger:
    """Every approval, grant and revocation, as the record says."""

    def __init__(self) -> None:
        self.approvals: dict[str, Approval] = {}
        self.grants: dict[str, Grant] = {}
        self.revocations: dict[str, float] = {}  # subject -> when their access was revoked

    # -- reading ------------------------------------------------------------------------------------

    def get(self, approval_id: str) -> Approval:
        found = self.approvals.get(approval_id)
        if found is None:
            raise Refused(404, "unknown_approval", f"no approval {approval_id!r}; see `warden approvals list`")
        return found

    def matching(self, sub: str, rule: str, digest: str) -> Approval | None:
        """The latest approval of ``sub``'s request with ``digest`` under ``rule`` that is still open or approved
        and not used: what a repeated request waits on or passes under."""
        for approval in reversed(self.approvals.values()):
            if approval.sub == sub and approval.terms.rule == rule and approval.request.get("digest") == digest \
                    and approval.state in (OPEN, APPROVED):
                return approval
        return None

    def grant_for(self, sub: str, rule: str, now: float) -> Grant | None:
        """An active grant for ``sub`` under ``rule``, the one that lasts longest."""
        found = [g for g in self.grants.values() if g.requester == sub and g.rule == rule and g.active(now)]
        return max(found, key=lambda g: g.until, default=None)

    def revoked(self, sub: str, issued_at: float | None) -> bool:
        """Whether a token of ``sub`` issued at ``issued_at`` (its iat; None: unknown) is refused: issued no later
        than the second their access was revoked."""
        at = self.revocations.get(sub)
        return at is not None and (issued_at is None or issued_at <= at)

    def due(self, now: float) -> list[Approval]:
        """Open approvals whose TTL has passed."""
        return [a for a in self.approvals.values() if a.state == OPEN and a.expires_at <= now]

    # -- the steps (events to commit; nothing changes until they are applied) -------------------------

    def request(self, terms: Terms, requester: Mapping[str, Any], request: Mapping[str, Any], flow_id: str | None,
                now: float) -> Event:
        approval_id = new_id("ap")
        while approval_id in self.approvals:
            approval_id = new_id("ap")
        return _event("requested", now, user=str(requester["sub"]), rule=terms.rule, flow_id=flow_id,
                      approval=approval_id, terms=terms.as_json(), requester=dict(requester), request=dict(request),
                      expires_at=now + terms.ttl)

    def vote(self, approval_id: str, approver: str, groups: Sequence[str], verdict: str, reason: str,
             window: float | None, now: float, **via: Any) -> list[Event]:
        """An approver's decision (``approved`` or ``denied``); if it completes the approval with a window (theirs,
        the smallest any approver gave, or the rule's), the grant too. ``via``: how it came (``via="slack"`` and
        the Slack user), on the record beside it. Raises ``Refused``."""
        approval = self.get(approval_id)
        terms = approval.terms
        if approver == approval.sub:
            raise Refused(403, "own_request", f"{approver} requested {approval_id} and cannot decide it: another "
                                              f"member of {', '.join(terms.approvers)} must")
        if not terms.may_approve(groups):
            raise Refused(403, "not_an_approver", f"{approver} is in none of the approver groups of rule "
                                                  f"{terms.rule!r} ({', '.join(terms.approvers)})")
        if approval.state == "expired" or approval.state == OPEN and approval.expires_at <= now:
            raise Refused(410, "approval_expired", f"{approval_id} expired at {_iso(approval.expires_at)}; the "
                                                   "requester must send the request again")
        if approval.state != OPEN:
            raise Refused(409, "already_decided", f"{approval_id} is already {approval.state}"
                                                  + (f" ({approval.reason})" if approval.reason else ""))
        if any(v.approver == approver for v in approval.votes):
            raise Refused(409, "already_voted", f"{approver} has already approved {approval_id}; it needs "
                                                f"{terms.missing(approval.approvers())}")
        events = [_event(verdict, now, user=approver, rule=terms.rule, flow_id=approval.flow_id, reason=reason,
                         approval=approval_id, groups=list(groups), window=window, **via)]
        voters = [*approval.approvers(), (approver, list(groups))]
        if verdict == "approved" and terms.enough(voters):
            windows = [v.window for v in approval.votes if v.window is not None] + \
                      ([window] if window is not None else [])
            chosen = min(windows) if windows else terms.window
            if chosen is not None:
                events.append(_event("grant_created", now, user=approver, rule=terms.rule, grant=new_id("gr"),
                                     approval=approval_id, requester=approval.sub, approvers=list(terms.approvers),
                                     until=now + chosen))
        return events

    def expire(self, now: float) -> list[Event]:
        return [_event("expired", now, user=None, rule=a.terms.rule, flow_id=a.flow_id, approval=a.id,
                       reason=f"no decision within its ttl ({a.terms.ttl:g} s)") for a in self.due(now)]

    def notice(self, approval_id: str, fate: str, reason: str, now: float, **detail: Any) -> Event:
        """A notification's final outcome (``notified`` or ``notify_failed``): where to (never a secret), attempts,
        the last status; the approval goes on either way."""
        if fate not in NOTICES:
            raise ValueError(f"a notification ends {' or '.join(NOTICES)}, not {fate!r}")
        approval = self.get(approval_id)
        return _event(fate, now, user=approval.sub, rule=approval.terms.rule, flow_id=approval.flow_id, reason=reason,
                      approval=approval_id, **detail)

    def abandon(self, approval_id: str, flow_id: str, now: float) -> Event:
        approval = self.get(approval_id)
        return _event("abandoned", now, user=approval.sub, rule=approval.terms.rule, flow_id=flow_id,
                      approval=approval_id, reason="the gateway stopped while the request was held; nothing was sent")

    def use(self, approval_id: str, flow_id: str, now: float) -> Event:
        approval = self.get(approval_id)
        return _event("used", now, user=approval.sub, rule=approval.terms.rule, flow_id=flow_id, approval=approval_id)

    def revoke_grant(self, grant_id: str, by: str, reason: str, now: float) -> Event:
        grant = self.grants.get(grant_id)
        if grant is None:
            raise Refused(404, "unknown_grant", f"no grant {grant_id!r}; see `warden grants list`")
        if not grant.active(now):
            raise Refused(409, "grant_ended", f"{grant_id} has already " +
                          ("been revoked" if grant.revoked_at is not None else f"ended ({_iso(grant.until)})"))
        return _event("grant_revoked", now, user=by, rule=grant.rule, reason=reason, grant=grant_id)

    def revoke_access(self, sub: str, by: str, reason: str, now: float) -> list[Event]:
        """Deny ``sub``'s open approvals, revoke their active grants, and refuse their tokens issued until now."""
        why = f"access of {sub} revoked by {by}" + (f": {reason}" if reason else "")
        events = [_event("denied", now, user=by, rule=a.terms.rule, flow_id=a.flow_id, reason=why, approval=a.id,
                         groups=[], window=None)
                  for a in self.approvals.values() if a.sub == sub and a.state in (OPEN, APPROVED)]
        events += [_event("grant_revoked", now, user=by, rule=g.rule, reason=why, grant=g.id)
                   for g in self.grants.values() if g.requester == sub and g.active(now)]
        events.append(_event("access_revoked", now, user=by, reason=reason, subject=sub))
        return events

    @staticmethod
    def refused(refusal: Refused, actor: str | None, now: float, **detail: Any) -> Event:
        """The record of a step refused (a self-approval, a decision on an unknown or decided approval...)."""
        return _event("refused", now, user=actor, reason=refusal.message, status=refusal.status, type=refusal.type,
                      **detail)

    # -- applying what was committed ---------------------------------------------------------------------

    def apply(self, event: Event) -> Approval | Grant | None:
        """Take a committed ``approval`` event into the state; returns the approval or grant it changed."""
        if event.kind != KIND:
            return None
        detail, now = event.detail or {}, _at(event)
        step = event.fate
        if step == "requested":
            approval = Approval(detail["approval"], Terms.from_json(detail["terms"]), detail["requester"],
                                detail["request"], event.flow_id, now, float(detail["expires_at"]))
            self.approvals[approval.id] = approval
            return approval
        if step == "access_revoked":
            self.revocations[detail["subject"]] = now
            return None
        if step == "grant_revoked":
            grant = self.grants[detail["grant"]]
            grant.revoked_at, grant.revoked_by, grant.reason = now, event.user, event.reason or ""
            return grant
        if step == "grant_created":
            grant = Grant(detail["grant"], detail["approval"], detail["requester"], event.rule or "",
                          tuple(detail["approvers"]), now, float(detail["until"]))
            self.grants[grant.id] = grant
            self.approvals[grant.approval].grant = grant.id
            return grant
        if step in NOTICES and detail.get("approval") in self.approvals:
            self.approvals[detail["approval"]].notices.append(
                {"fate": step, "at": _iso(now), "channel": detail.get("channel"), "target": detail.get("target"),
                 "attempts": detail.get("attempts"), "status": detail.get("status"), "reason": event.reason})
            return None
        if step in ("refused", *NOTICES) or "approval" not in detail:
            return None
        return self._step(self.approvals[detail["approval"]], step or "", event, now)

    @staticmethod
    def _step(approval: Approval, step: str, event: Event, now: float) -> Approval:
        detail = event.detail or {}
        if step in ("approved", "denied"):
            approval.votes.append(Vote(event.user or "", list(detail.get("groups") or []), step, now,
                                       event.reason or "", detail.get("window")))
            if step == "denied" or approval.terms.enough(approval.approvers()):
                approval.state, approval.decided_at = step, now
                approval.reason = event.reason or "" if step == "denied" else ""
        elif step == "used":
            approval.state, approval.used_by = "used", event.flow_id
        elif step in ("expired", "abandoned"):
            approval.state, approval.decided_at, approval.reason = step, now, event.reason or ""
        return approval

    def rebuild(self, events: Iterable[Event]) -> Ledger:
        for event in events:
            self.apply(event)
        return self
