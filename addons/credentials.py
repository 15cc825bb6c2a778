"""Credentials: callers never hold the provider key.

Last before the recorder. Strips every credential the caller sent (Authorization,
Proxy-Authorization, API-key headers) and injects the upstream's own from the rules file.
"""

from __future__ import annotations

from mitmproxy import ctx, http

from addons.errors import CredentialMissing, InternalError
from addons.flowmeta import fail_closed, meta, refuse
from addons.rules import CALLER_CREDENTIAL_HEADERS, Rules, current_rules


class Credentials:
    def __init__(self) -> None:
        self.rules: Rules | None = None

    def configure(self, updated: set[str]) -> None:
        if "warden_rules" in updated:
            self.rules = current_rules()

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        upstream_name = meta(flow).upstream
        if self.rules is None or upstream_name is None:
            refuse(flow, InternalError("no upstream was resolved for this request; it was stopped"))
            return
        upstream = next(u for u in self.rules.upstreams if u.name == upstream_name)
        for name in CALLER_CREDENTIAL_HEADERS:
            flow.request.headers.pop(name, None)
        if upstream.credential is None:
            return
        flow.request.headers.pop(upstream.credential.header, None)
        secret = self.rules.credential(upstream.name)
        if secret is None:
            why = self.rules.missing.get(upstream.name, "not configured")
            refuse(flow, CredentialMissing(
                f"upstream {upstream.name!r} has no credential: {why}; an operator must set it and restart"
            ))
            return
        flow.request.headers[upstream.credential.header] = secret.get_secret_value()
