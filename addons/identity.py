"""Identity: no request passes without a verified OIDC identity, first in the chain.

Forward mode reads ``Proxy-Authorization`` (``Bearer TOKEN``, or ``Basic`` with the token as the
password, which ``HTTPS_PROXY=http://alice:TOKEN@host:port`` makes clients send) on the CONNECT
and binds the identity to the client connection for every request in the tunnel; a plain-HTTP
proxy request carries it itself. Reverse mode reads ``Authorization: Bearer TOKEN``. Missing or
invalid: 407 (forward) or 401 (reverse) with a JSON reason, recorded. The token never travels on.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
import weakref

from mitmproxy import connection, ctx, exceptions, http

from addons.auth.issuer import validator_for
from addons.auth.tokens import (
    IssuerUnavailable,
    JwksKeys,
    TokenError,
    TokenValidator,
    claim_at,
    token_from_authorization,
)
from addons.flow.answers import fail_closed, refuse
from addons.flow.errors import IdentityUnavailable, NotConfigured, Unauthenticated
from addons.flow.meta import CLAIMED_SUB, IDENTITY, Identity
from addons.rules.model import IdentityConfig, current_rules
from addons.store.keys import KeyFileError

log = logging.getLogger("warden.identity")
HOW_TO = "send Proxy-Authorization: Bearer TOKEN, or set HTTPS_PROXY=http://USER:TOKEN@HOST:PORT"


def token_from_proxy_authorization(value: str | None) -> tuple[str | None, str | None]:
    """(token, method) from a Proxy-Authorization value: Bearer, or Basic with the token as password."""
    if not value:
        return None, None
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None, "proxy-bearer"
    if scheme.lower() == "basic":
        try:
            _, _, password = base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return "", "proxy-basic"
        return password or None, "proxy-basic"
    return "", None


def identity_from_claims(claims: dict, config: IdentityConfig, method: str | None) -> Identity:
    groups = claim_at(claims, config.groups_claim)
    if isinstance(groups, str):
        groups = [groups]
    client_id = claims.get("client_id") or claims.get("azp")
    client_id = client_id if isinstance(client_id, str) else None
    groups = [g for g in groups if isinstance(g, str)] if isinstance(groups, list) else []
    service = config.service_accounts
    is_service = (client_id is not None and client_id in service.clients) or bool(set(groups) & set(service.groups)) \
        or (service.claim is not None and bool(claim_at(claims, service.claim)))
    zone, iat = claims.get("zoneinfo"), claims.get("iat")
    return Identity(
        sub=claims["sub"], email=claims.get("email") or claims.get("preferred_username"), groups=groups,
        client_id=client_id, token_id=claims.get("jti"), expires=claims.get("exp"), method=method,
        kind="service" if is_service else "person", zoneinfo=zone if isinstance(zone, str) else None,
        issued_at=int(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None,
    )


class Tunnels:
    """The identity each client connection proved on its CONNECT, held only while that CONNECT stands accepted
    (a CONNECT refused for its host leaves nothing bound). In by ``bind``, read by ``lookup``, out by ``forget``,
    which ``client_disconnected`` calls (the bound CONNECT flow refers to its connection, so the weak key alone
    would not let the entry go)."""

    def __init__(self) -> None:
        self._bound: weakref.WeakKeyDictionary[connection.Client, tuple[Identity, http.HTTPFlow]] = \
            weakref.WeakKeyDictionary()

    def bind(self, client: connection.Client, identity: Identity, connect: http.HTTPFlow) -> None:
        """Bind ``identity``, proven on the CONNECT ``connect``, to ``client``'s tunnel."""
        self._bound[client] = (identity, connect)

    def lookup(self, client: connection.Client) -> Identity | None:
        """The identity bound to ``client``'s tunnel, if its CONNECT was accepted (a refused one is forgotten)."""
        found = self._bound.get(client)
        if found is None:
            return None
        identity, connect = found
        if connect.response is not None and not 200 <= connect.response.status_code < 300 or connect.error:
            self.forget(client)
            return None
        return identity

    def forget(self, client: connection.Client) -> None:
        """Unbind whatever identity ``client``'s tunnel held."""
        self._bound.pop(client, None)

    def open_for(self, sub: str) -> int:
        """How many open tunnels ``sub``'s identity holds."""
        return sum(1 for identity, _ in list(self._bound.values()) if identity.sub == sub)


class IdentityGate:
    def __init__(self) -> None:
        self.config: IdentityConfig | None = None
        self.validator: TokenValidator | None = None
        self.tunnels = Tunnels()

    def configure(self, updated: set[str]) -> None:
        if not updated & {"warden_rules", "warden_issuer_key"}:
            return
        config = current_rules().identity
        if config == self.config and "warden_issuer_key" not in updated:
            return  # a reload that left identity as it was keeps the validator (and the issuer's keys it fetched)
        try:
            self.validator = validator_for(config, ctx.options.warden_issuer_key)
        except KeyFileError as e:
            raise exceptions.OptionsError(f"warden_issuer_key: {e}") from None
        self.config = config

    async def running(self) -> None:
        if self.validator is not None and isinstance(self.validator.source, JwksKeys):
            try:
                await self.validator.source.keys(None)
            except IssuerUnavailable as e:
                # A warning, not an error: mitmdump exits on start-up errors, and the gateway must
                # keep running (refusing with 503) so it recovers when the issuer is back.
                log.warning("warden: %s; requests are refused (503) until it answers", e)

    def client_disconnected(self, client: connection.Client) -> None:
        self.tunnels.forget(client)

    @fail_closed
    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        token, method = token_from_proxy_authorization(flow.request.headers.pop("proxy-authorization", None))
        self.tunnels.forget(flow.client_conn)  # a new CONNECT on this connection replaces what was bound
        identity = await self._check(flow, token, method, proxy=True)
        if identity is not None:
            self.tunnels.bind(flow.client_conn, identity, flow)

    @fail_closed
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        proxy_auth = flow.request.headers.pop("proxy-authorization", None)
        bound = self.tunnels.lookup(flow.client_conn)
        if bound is not None:
            IDENTITY.set(flow, bound)
            if self._refuse_revoked(flow, bound, proxy=True):
                self.tunnels.forget(flow.client_conn)  # closed for good: a new CONNECT needs a newer token
                return
            if bound.expires is not None and bound.expires + (self.config.leeway if self.config else 0) < time.time():
                refuse(flow, Unauthenticated("expired", "the tunnel's token has expired; reconnect with a new one",
                                             proxy=True))
            return
        mode = getattr(flow.client_conn, "proxy_mode", None)
        if mode is not None and mode.type_name == "reverse":
            await self._check(flow, token_from_authorization(flow.request.headers.get("authorization")), "bearer",
                              proxy=False)
        else:
            token, method = token_from_proxy_authorization(proxy_auth)
            await self._check(flow, token, method, proxy=True)

    async def _check(self, flow: http.HTTPFlow, token: str | None, method: str | None, proxy: bool) -> Identity | None:
        if self.validator is None or self.config is None:
            refuse(flow, NotConfigured("identity is not configured; see the operator log"))
            return None
        if token is None:
            refuse(flow, Unauthenticated("missing", f"no identity token; {HOW_TO}" if proxy else
                                         "no identity token; send Authorization: Bearer TOKEN", proxy=proxy))
            return None
        if token == "":
            refuse(flow, Unauthenticated("malformed", "the credentials are neither Bearer TOKEN nor Basic with "
                                         "the token as password", proxy=proxy))
            return None
        try:
            claims = await self.validator.validate(token)
        except TokenError as e:
            if e.claimed_sub is not None:
                CLAIMED_SUB.set(flow, e.claimed_sub)
            refuse(flow, Unauthenticated(e.reason, e.message, proxy=proxy))
            return None
        except IssuerUnavailable as e:
            refuse(flow, IdentityUnavailable(f"{e}; try again when it is back"))
            return None
        identity = identity_from_claims(claims, self.config, method)
        IDENTITY.set(flow, identity)
        if self._refuse_revoked(flow, identity, proxy=proxy):
            return None
        return identity

    @staticmethod
    def _refuse_revoked(flow: http.HTTPFlow, identity: Identity, *, proxy: bool) -> bool:
        """Refuse a token issued before its subject's access was revoked (``warden revoke``): cached ones too."""
        approval = ctx.master.addons.get("approvalgate")
        if approval is None or not approval.ledger.revoked(identity.sub, identity.issued_at):
            return False
        refuse(flow, Unauthenticated("revoked", f"access of {identity.sub!r} was revoked; tokens issued before the "
                                     "revocation are refused; ask an administrator", proxy=proxy))
        return True
