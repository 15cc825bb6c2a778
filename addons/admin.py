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

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tornado.httpserver
import tornado.web
from mitmproxy import ctx, exceptions

from addons.adminapi import approvals, evidence, records, retention, service
from addons.auth.issuer import EmbeddedIssuer, validator_for
from addons.auth.tokens import IssuerUnavailable, TokenError, TokenValidator, claim_at, token_from_authorization
from addons.flow.listeners import parse_listen, serve
from addons.rules.model import IdentityConfig, current_rules
from addons.store.database import Store, StoreError
from addons.store.events import Event
from addons.store.keys import KeyFileError, signing_keyring
from addons.store.redaction import REDACTED, is_secret_param

if TYPE_CHECKING:
    from addons.adminapi.base import Handler
    from addons.store.rotation import Rotated

log = logging.getLogger("warden.admin")


def _kept_argument(name: str, value: str) -> str:
    """What an access event keeps of a query argument: credential-like ones redacted, the words of a full-text
    search as their SHA-256 (a search for a card number must not put the number on the record; whoever suspects a
    search for a value can hash it and compare), the rest as given."""
    if is_secret_param(name, value):
        return REDACTED
    if name == "text":
        return "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return value


class Admin:
    def __init__(self) -> None:
        self.server: tornado.httpserver.HTTPServer | None = None
        self.identity: IdentityConfig | None = None
        self.validator: TokenValidator | None = None

    async def identify(self, handler: Handler) -> tuple[str, list[str]]:
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

    async def authorize(self, handler: Handler) -> str:
        """The caller's subject; 401 without a valid token, 403 without one of ``identity.admin_groups``: the admin
        API serves flows."""
        sub, groups = await self.identify(handler)
        handler.sub = sub
        if not self.is_admin(groups):
            assert self.identity is not None
            raise tornado.web.HTTPError(
                403, f"{sub} is in none of the admin groups ({', '.join(self.identity.admin_groups)})"
            )
        return sub

    async def record_access(self, handler: Handler, fate: str, **detail: Any) -> None:
        """An ``access`` event for a call on the record: who (``user``), what (method, path, query arguments), its
        fate (``read``, ``asked``, ``refused``) and when. Committed before the call is served: 503 if it cannot be."""
        store = self.store()
        request = handler.request
        query = {k: [_kept_argument(k, v.decode("utf-8", "replace")) for v in vs]
                 for k, vs in request.query_arguments.items()}
        what = {"method": request.method, "path": request.path, "query": query,
                **{k: v for k, v in detail.items() if v is not None}}
        event = Event(kind="access", user=handler.sub, client=request.remote_ip, fate=fate, detail=what)
        if store is None:
            raise tornado.web.HTTPError(503, "the store is not open: a read of the record must be on the record")
        try:
            await store.commit(event)
        except StoreError as e:
            raise tornado.web.HTTPError(503, f"this read could not be recorded, so it is refused: {e}") from None

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
        """The signing keyring: the current public key and every one a rotation retired (older checkpoints)."""
        try:
            return signing_keyring(Path(ctx.options.warden_signing_key).with_suffix(".pub"))
        except KeyFileError:
            return None

    def take_up_keys(self, rotated: Rotated) -> None:
        """A rotation's new keys, taken up at once by the addons that use them: the recorder (encrypts originals;
        its store signs with the new key from the rotation's own checkpoint on) and the PII addon (hashes)."""
        recorder = ctx.master.addons.get("recorder")
        if recorder is not None and rotated.signing is not None:
            recorder.signing_key = rotated.signing
        if recorder is not None and rotated.originals is not None:
            recorder.originals_key = rotated.originals
        masking = ctx.master.addons.get("piimasking")
        if masking is not None and rotated.hash is not None:
            masking.hash_key = rotated.hash

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
        app = tornado.web.Application([(pattern, handler, {"admin": self}) for pattern, handler in (
            (r"/healthz", service.Health),
            (r"/metrics", service.Metrics),
            (r"/api/flows", records.Flows),
            (r"/api/flows/([A-Za-z0-9-]+)", records.FlowEvents),
            (r"/api/events", records.Events),
            (r"/api/verify", records.Verify),
            (r"/api/evidence", evidence.Evidence),
            (r"/api/proof", records.Proof),
            (r"/api/purge", retention.Purge),
            (r"/api/holds", retention.Holds),
            (r"/api/holds/(hold-[a-f0-9]+)/release", retention.HoldRelease),
            (r"/api/keys/rotate", retention.KeysRotate),
            (r"/api/approvals", approvals.Approvals),
            (r"/api/approvals/([a-z0-9-]+)", approvals.ApprovalOne),
            (r"/api/approvals/([a-z0-9-]+)/(approve|deny)", approvals.ApprovalDecision),
            (r"/api/grants", approvals.Grants),
            (r"/api/grants/([a-z0-9-]+)/revoke", approvals.GrantRevoke),
            (r"/api/revoke", approvals.AccessRevoke),
            (r"/\.well-known/openid-configuration", service.Discovery),
            (r"/jwks", service.Jwks),
        )])
        self.server = serve(app, "warden_admin", ctx.options.warden_admin)
        if self.server is not None:
            log.info("warden admin API listening at http://%s", ctx.options.warden_admin)
