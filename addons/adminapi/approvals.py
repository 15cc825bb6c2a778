"""The approver's side of the admin API: the caller's own token decides what they see and may decide (approver
groups, not the admin group)."""

from __future__ import annotations

import json
import time

import tornado.web

from addons.adminapi.base import Handler
from addons.approvals.ledger import Approval, Refused
from addons.rules.durations import DurationError, parse_duration


class _ApprovalHandler(Handler):
    """The approver's side: the caller's own token; what they may see or decide is checked per approval."""

    async def prepare(self) -> None:
        gate = self.admin.gate()
        if gate is None:
            raise tornado.web.HTTPError(503, "this gateway runs no approval addon")
        self.gate = gate
        try:
            self.sub, self.groups = await self.admin.identify(self)
        except tornado.web.HTTPError as e:
            if self.request.method == "POST":  # a refused decision is on the record, forged tokens too
                await gate.refused(Refused(e.status_code, "unauthenticated", e.log_message or ""), None,
                                   path=self.request.path)
            raise
        self.admin_caller = self.admin.is_admin(self.groups)
        if self.request.method == "GET":  # an approval shows the masked request: reading it is on the record
            await self.record_access("read")

    def sees(self, approval: Approval) -> bool:
        return self.admin_caller or approval.sub == self.sub or approval.terms.may_approve(self.groups)

    def body_json(self) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, "the body must be JSON, e.g. {\"reason\": \"...\"}") from None
        if not isinstance(body, dict) or not isinstance(body.get("reason", ""), str):
            raise tornado.web.HTTPError(400, "the body must be a JSON object; 'reason' a string")
        return body

    def refuse(self, e: Refused) -> None:
        self.send_json({"error": {"status": e.status, "type": e.type, "message": e.message}}, e.status)


class Approvals(_ApprovalHandler):
    async def get(self) -> None:
        state = self.get_query_argument("state", None)
        found = [a.as_json() for a in reversed(self.gate.ledger.approvals.values())
                 if self.sees(a) and (state is None or a.state == state)]
        self.send_json({"approvals": found})


class ApprovalOne(_ApprovalHandler):
    async def get(self, approval_id: str) -> None:
        try:
            approval = self.gate.ledger.get(approval_id)
        except Refused as e:
            self.refuse(e)
            return
        if not self.sees(approval):
            raise tornado.web.HTTPError(403, f"{self.sub} is neither the requester of {approval_id} nor in its "
                                             f"approver groups ({', '.join(approval.terms.approvers)})")
        self.send_json(approval.as_json())


class ApprovalDecision(_ApprovalHandler):
    async def post(self, approval_id: str, verdict: str) -> None:
        body = self.body_json()
        window = None
        if body.get("for") is not None:
            try:
                window = parse_duration(str(body["for"])).total_seconds()
            except DurationError as e:
                raise tornado.web.HTTPError(400, f"for: {e}") from None
        try:
            approval = await self.gate.decide(approval_id, self.sub, self.groups,
                                              "approved" if verdict == "approve" else "denied",
                                              body.get("reason", ""), window)
        except Refused as e:
            self.refuse(e)
            return
        self.send_json(approval.as_json())


class Grants(_ApprovalHandler):
    async def get(self) -> None:
        now = time.time()
        found = [g.as_json(now) for g in self.gate.ledger.grants.values()
                 if self.admin_caller or g.requester == self.sub or set(g.approvers) & set(self.groups)]
        if self.get_query_argument("active", None) in ("1", "true"):
            found = [g for g in found if g["active"]]
        self.send_json({"grants": found})


class GrantRevoke(_ApprovalHandler):
    async def post(self, grant_id: str) -> None:
        body = self.body_json()
        grant = self.gate.ledger.grants.get(grant_id)
        if grant is not None and not (self.admin_caller or set(grant.approvers) & set(self.groups)):
            e = Refused(403, "not_an_approver", f"{self.sub} may not revoke {grant_id}: an administrator or a member "
                                                f"of {', '.join(grant.approvers)} may")
            await self.gate.refused(e, self.sub, grant=grant_id, asked="revoke")
            self.refuse(e)
            return
        try:
            revoked = await self.gate.revoke_grant(grant_id, self.sub, body.get("reason", ""))
        except Refused as e:
            self.refuse(e)
            return
        self.send_json(revoked.as_json(time.time()))


class AccessRevoke(_ApprovalHandler):
    async def post(self) -> None:
        body = self.body_json()
        user = body.get("user")
        if not isinstance(user, str) or not user:
            raise tornado.web.HTTPError(400, "name the user whose access to revoke: {\"user\": \"SUB\"}")
        if not self.admin_caller:
            assert self.admin.identity is not None
            groups = ", ".join(self.admin.identity.admin_groups)
            e = Refused(403, "not_an_admin", f"{self.sub} is in none of the admin groups ({groups}) and may not "
                                             "revoke access")
            await self.gate.refused(e, self.sub, subject=user, asked="revoke_access")
            self.refuse(e)
            return
        self.send_json(await self.gate.revoke_access(user, self.sub, body.get("reason", "")))


