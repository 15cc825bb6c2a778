"""The admin API: one loopback listener inside the gateway process.

``GET /healthz``, ``GET /metrics`` (Prometheus), ``GET /api/flows`` (search), ``GET /api/flows/ID``
(a flow's events), ``GET /api/events?after_seq=N`` (the chain, paged, for export) and
``GET /api/verify`` (``POST``: sign a checkpoint first, so the whole chain is covered); the approver's
side (``/api/approvals[/ID[/approve|/deny]]``, ``/api/grants[/ID/revoke]``, ``POST /api/revoke``), where the
caller's own token decides what they see and may decide (approver groups, not the admin group); with the
embedded issuer also ``/.well-known/openid-configuration`` and ``/jwks``. The CLI uses it while the
gateway holds the DuckDB file; queries are the same functions the CLI runs on the file when the
gateway is stopped. Bodies travel as stored (masked; originals only encrypted), so the API never
decrypts anything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.web
from mitmproxy import ctx, exceptions
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from addons.approvals.ledger import Approval, Refused
from addons.auth.issuer import EmbeddedIssuer, discovery, validator_for
from addons.auth.tokens import IssuerUnavailable, TokenError, TokenValidator, claim_at, token_from_authorization
from addons.flow import metrics
from addons.flow.listeners import parse_listen, serve
from addons.rules.durations import DurationError, parse_duration
from addons.rules.model import IdentityConfig, current_rules
from addons.store.database import Store, StoreError
from addons.store.events import event_to_json
from addons.store.keys import KeyFileError, load_public_key
from addons.store.queries import (
    FlowFilter,
    flow_events,
    iter_events,
    iter_events_until,
    parse_when,
    search_flows,
    verify_chain,
    verify_events,
)

log = logging.getLogger("warden.admin")
EVENTS_PAGE = 500


class _Handler(tornado.web.RequestHandler):
    protected = False  # True: needs a token of one of identity.admin_groups

    def initialize(self, admin: Admin) -> None:
        self.admin = admin

    async def prepare(self) -> None:
        if self.protected:
            await self.admin.authorize(self)

    def send_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = str(exc.log_message if isinstance(exc, tornado.web.HTTPError) and exc.log_message else self._reason)
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="warden-admin"')
        self.send_json({"error": {"status": status_code, "message": message}}, status_code)

    async def query(self, fn: Callable, *args: Any) -> Any:
        store = self.admin.store()
        if store is None:
            raise tornado.web.HTTPError(503, "the store is not open")

        def run() -> Any:
            store.sync()  # what is committed but still in the journal must show too
            cursor = store.reader()
            try:
                return fn(cursor, *args)
            finally:
                cursor.close()

        return await asyncio.to_thread(run)


class Health(_Handler):
    """200 when the gateway can serve; 503 while the PII analyzer starts, or when the store or analyzer is down.
    A refused edit of the rules file leaves it serving the rules in force: 200, status ``degraded``."""

    async def get(self) -> None:
        store = self.admin.store()
        pii = self.admin.pii_health()
        rules = self.admin.rules_health()
        if store is None:
            self.send_json({"status": "unavailable", "store": None, "pii": pii, "rules": rules}, 503)
            return
        degraded = store.last_error is not None or (rules is not None and rules["refused"] is not None)
        body = {
            "status": "degraded" if degraded else "ok",
            "store": {"path": str(store.path), "head_seq": store.head.seq, "queue_depth": store.queue_depth,
                      "commits": store.commits, "failures": store.failures, "last_error": store.last_error},
            "pii": pii,
            "rules": rules,
        }
        if any(p["state"] != "ready" for p in pii):
            body["status"] = "starting" if all(p["state"] in ("starting", "ready") for p in pii) else "unavailable"
            self.send_json(body, 503)
            return
        self.send_json(body)


class Metrics(_Handler):
    async def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(metrics.REGISTRY))


class Flows(_Handler):
    protected = True

    async def get(self) -> None:
        try:
            f = FlowFilter(
                user=self.get_query_argument("user", None), host=self.get_query_argument("host", None),
                decision=self.get_query_argument("decision", None), fate=self.get_query_argument("fate", None),
                entity=self.get_query_argument("entity", None),
                since=self._when("since"), until=self._when("until"),
                limit=int(self.get_query_argument("limit", "100")),
            )
        except ValueError as e:
            raise tornado.web.HTTPError(400, str(e)) from None
        self.send_json({"flows": await self.query(search_flows, f)})

    def _when(self, name: str):
        value = self.get_query_argument(name, None)
        return parse_when(value) if value else None


class FlowEvents(_Handler):
    protected = True

    async def get(self, flow_id: str) -> None:
        events = await self.query(flow_events, flow_id)
        if not events:
            raise tornado.web.HTTPError(404, f"no flow {flow_id}")
        self.send_json({"events": [event_to_json(e) for e in events]})


class Events(_Handler):
    protected = True

    async def get(self) -> None:
        try:
            after = int(self.get_query_argument("after_seq", "-1"))
        except ValueError:
            raise tornado.web.HTTPError(400, "after_seq must be an integer") from None

        def page(cursor) -> list:
            out = []
            for event in iter_events(cursor, after):
                out.append(event_to_json(event))
                if len(out) >= EVENTS_PAGE:
                    break
            return out

        events = await self.query(page)
        self.send_json({"events": events, "more": len(events) >= EVENTS_PAGE})


class Verify(_Handler):
    protected = True

    async def get(self) -> None:
        result = await self.query(verify_chain, self.admin.public_key())
        self.send_json(result.as_dict(), 200 if result.ok else 409)

    async def post(self) -> None:
        """Sign the current head, then verify the chain up to that checkpoint (later events are not waited for)."""
        store = self.admin.store()
        if store is None:
            raise tornado.web.HTTPError(503, "the store is not open")
        try:
            checkpoint = await asyncio.to_thread(store.checkpoint_now)
        except (StoreError, TimeoutError) as e:
            raise tornado.web.HTTPError(503, f"the gateway could not sign a checkpoint: {e}") from None
        last = checkpoint["seq"] if checkpoint else -1
        public_key = self.admin.public_key()
        result = await self.query(
            lambda cursor: verify_events(iter_events_until(iter_events(cursor), last), public_key))
        self.send_json({"checkpoint": checkpoint, **result.as_dict()}, 200 if result.ok else 409)


class Discovery(_Handler):
    async def get(self) -> None:
        if self.admin.embedded_issuer() is None:
            raise tornado.web.HTTPError(404, "this gateway does not run the embedded issuer")
        self.send_json(discovery(f"{self.request.protocol}://{self.request.host}"))


class Jwks(_Handler):
    async def get(self) -> None:
        issuer = self.admin.embedded_issuer()
        if issuer is None:
            raise tornado.web.HTTPError(404, "this gateway does not run the embedded issuer")
        self.send_json(issuer.jwks())


class _ApprovalHandler(_Handler):
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


class Admin:
    def __init__(self) -> None:
        self.server: tornado.httpserver.HTTPServer | None = None
        self.identity: IdentityConfig | None = None
        self.validator: TokenValidator | None = None

    async def identify(self, handler: _Handler) -> tuple[str, list[str]]:
        """The caller's subject and groups from their own token: 401 without a valid one (or one issued before
        their access was revoked)."""
        if self.validator is None or self.identity is None:
            raise tornado.web.HTTPError(503, "identity is not configured; see the operator log")
        token = token_from_authorization(handler.request.headers.get("Authorization"))
        if token is None:
            raise tornado.web.HTTPError(401, "send Authorization: Bearer TOKEN (the CLI does: see warden --help)")
        try:
            claims = await self.validator.validate(token)
        except TokenError as e:
            raise tornado.web.HTTPError(401, f"{e.reason}: {e.message}") from None
        except IssuerUnavailable as e:
            raise tornado.web.HTTPError(503, str(e)) from None
        gate = self.gate()
        iat = claims.get("iat")
        if gate is not None and gate.ledger.revoked(claims["sub"], iat if isinstance(iat, int | float) else None):
            raise tornado.web.HTTPError(401, f"revoked: access of {claims['sub']!r} was revoked")
        groups = claim_at(claims, self.identity.groups_claim)
        groups = [groups] if isinstance(groups, str) else groups if isinstance(groups, list) else []
        return claims["sub"], [g for g in groups if isinstance(g, str)]

    def is_admin(self, groups: list[str]) -> bool:
        return self.identity is not None and bool(set(groups) & set(self.identity.admin_groups))

    async def authorize(self, handler: _Handler) -> None:
        """401 without a valid token, 403 without one of ``identity.admin_groups``: the admin API serves flows."""
        sub, groups = await self.identify(handler)
        if not self.is_admin(groups):
            assert self.identity is not None
            raise tornado.web.HTTPError(
                403, f"{sub} is in none of the admin groups ({', '.join(self.identity.admin_groups)})"
            )

    def gate(self) -> Any:
        """The approval addon (it owns approvals, grants and revocations), or None; an addon, so not imported."""
        return ctx.master.addons.get("approvalgate")

    def load(self, loader) -> None:
        loader.add_option(
            "warden_admin", str, "127.0.0.1:8081",
            "Admin API listener as host:port (loopback by default); empty to disable.",
        )

    def configure(self, updated: set[str]) -> None:
        identity = current_rules().identity if updated & {"warden_rules", "warden_issuer_key"} else None
        if identity is not None and (identity != self.identity or "warden_issuer_key" in updated):
            self.identity = identity
            try:
                self.validator = validator_for(self.identity, ctx.options.warden_issuer_key)
            except KeyFileError as e:
                raise exceptions.OptionsError(f"warden_issuer_key: {e}") from None
        if "warden_admin" in updated and ctx.options.warden_admin:
            try:
                parse_listen(ctx.options.warden_admin)
            except ValueError as e:
                raise exceptions.OptionsError(f"warden_admin: {e}") from None
            if self.server is not None:
                self._restart()

    def store(self) -> Store | None:
        """The recorder's store (the recorder owns it)."""
        recorder = ctx.master.addons.get("recorder")
        return getattr(recorder, "store", None)

    def pii_health(self) -> list[dict]:
        """The PII addon's analyzer pool, as health reports it (the PII addon owns it)."""
        masking = ctx.master.addons.get("piimasking")
        pool = masking.engine.pool if masking is not None else None
        return [] if pool is None else [pool.health()]

    def rules_health(self) -> dict | None:
        """The rules in force and the last refused edit, as health reports them (the Config addon owns them)."""
        config = ctx.master.addons.get("config")
        return None if config is None else config.health()

    def embedded_issuer(self) -> EmbeddedIssuer | None:
        if self.identity is None or self.identity.issuer != "embedded":
            return None
        try:
            return EmbeddedIssuer.load_or_create(ctx.options.warden_issuer_key)
        except KeyFileError:
            return None

    def public_key(self):
        try:
            return load_public_key(Path(ctx.options.warden_signing_key).with_suffix(".pub"))
        except KeyFileError:
            return None

    def running(self) -> None:
        self._restart()

    def done(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _restart(self) -> None:
        self.done()
        if not ctx.options.warden_admin:
            return
        app = tornado.web.Application([
            (r"/healthz", Health, {"admin": self}),
            (r"/metrics", Metrics, {"admin": self}),
            (r"/api/flows", Flows, {"admin": self}),
            (r"/api/flows/([A-Za-z0-9-]+)", FlowEvents, {"admin": self}),
            (r"/api/events", Events, {"admin": self}),
            (r"/api/verify", Verify, {"admin": self}),
            (r"/api/approvals", Approvals, {"admin": self}),
            (r"/api/approvals/([a-z0-9-]+)", ApprovalOne, {"admin": self}),
            (r"/api/approvals/([a-z0-9-]+)/(approve|deny)", ApprovalDecision, {"admin": self}),
            (r"/api/grants", Grants, {"admin": self}),
            (r"/api/grants/([a-z0-9-]+)/revoke", GrantRevoke, {"admin": self}),
            (r"/api/revoke", AccessRevoke, {"admin": self}),
            (r"/\.well-known/openid-configuration", Discovery, {"admin": self}),
            (r"/jwks", Jwks, {"admin": self}),
        ])
        self.server = serve(app, "warden_admin", ctx.options.warden_admin)
        if self.server is not None:
            log.info("warden admin API listening at http://%s", ctx.options.warden_admin)
