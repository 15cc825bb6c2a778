"""Credentials: callers never hold the provider key, and never see it.

After masking, before the WebSocket addon and the recorder. Strips every header that carries a
credential (``redaction.is_credential_header``: Authorization, Proxy-*, Cookie, X-Amz-*, *-Key,
*-Token, *Signature*, any ``Bearer ...`` or JWT value, and every upstream's credential header name),
except those the upstream's ``pass_headers`` names, and injects the upstream's own key from the rules
file. An upstream that echoes a key back (in headers,
a body or a stream) has it replaced by ``[redacted-credential]`` before the caller reads it.

The caller's own credential values (its key, its token) are kept per flow, in memory only, so the recorder
can keep them out of the record wherever else they appear (``secrets_of``).
"""

from __future__ import annotations

import weakref

from mitmproxy import http

from addons.flow.answers import fail_closed, refuse
from addons.flow.errors import CredentialMissing, HostNotAllowed, InternalError
from addons.flow.meta import DECISION, UPSTREAM
from addons.flow.streams import compose_stream, unframe
from addons.rules.model import Rules, current_rules
from addons.store.redaction import Secrets, StreamScrubber, credential_values, is_credential_header, path_secret_values


class Credentials:
    def __init__(self) -> None:
        self.rules: Rules | None = None
        self.secrets = Secrets()
        self.credential_headers: frozenset[str] = frozenset()
        self.caller_secrets: weakref.WeakKeyDictionary[http.HTTPFlow, set[str]] = weakref.WeakKeyDictionary()

    def configure(self, updated: set[str]) -> None:
        if "warden_rules" in updated:
            self.rules = current_rules()
            self.secrets = self.secrets | self.rules.secret_values()  # a value a reload rotated out is still secret
            self.credential_headers = self.rules.credential_headers()

    def _is_credential(self, name: str, value: str) -> bool:
        return name.lower() in self.credential_headers or is_credential_header(name, value)

    def secrets_of(self, flow: http.HTTPFlow) -> frozenset[str]:
        """The caller's credential values seen on ``flow`` (its headers, its path): never to be recorded."""
        return frozenset(self.caller_secrets.get(flow, ()))

    def _keep(self, flow: http.HTTPFlow, values: set[str]) -> None:
        self.caller_secrets.setdefault(flow, set()).update(values)

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # Every flow, refused ones too: the recorder keeps these values out of the record.
        self._keep(flow, credential_values((n, v) for n, v in flow.request.headers.items(multi=True)
                                           if self._is_credential(n, v)) | path_secret_values(flow.request.path))

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        upstream_name = UPSTREAM.of(flow)
        if self.rules is None or upstream_name is None:
            refuse(flow, InternalError("no upstream was resolved for this request; it was stopped"))
            return
        upstream = next((u for u in self.rules.upstreams if u.name == upstream_name), None)
        if upstream is None:
            refuse(flow, HostNotAllowed(f"upstream {upstream_name!r} was removed from the rules while this request "
                                        "was on its way; it was not forwarded"))
            return
        headers = flow.request.headers
        # The credential headers' values are known since requestheaders; add what this upstream passes on, and
        # the path as policy normalised it (escapes decoded).
        self._keep(flow, credential_values(
            (n, v) for n, v in headers.items(multi=True) if n.lower() in upstream.pass_headers
        ) | path_secret_values(flow.request.path))
        decision = DECISION.of(flow)
        if decision is None or decision.action != "allow":  # a decision left pending (no analysis ran) never leaves
            refuse(flow, InternalError(f"policy did not allow this request (decision: "
                                       f"{decision.action if decision else 'none'}); it was stopped"))
            return
        for name in {n.lower() for n, v in headers.items(multi=True)
                     if self._is_credential(n, v) and n.lower() not in upstream.pass_headers}:
            headers.pop(name, None)
        if upstream.credential is None:
            return
        headers.pop(upstream.credential.header, None)
        secret = self.rules.credential(upstream.name)
        if secret is None:
            why = self.rules.missing.get(upstream.name, "not configured")
            refuse(flow, CredentialMissing(
                f"upstream {upstream.name!r} has no credential: {why}; an operator must set it and restart"
            ))
            return
        headers[upstream.credential.header] = secret.get_secret_value()

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        if not self.secrets:
            return
        self._clean_headers(flow.response)
        inner = flow.response.stream
        if callable(inner):  # streamed (Intake decides what streams): clean it on the fly
            flow.response.stream = compose_stream(inner, StreamScrubber(self.secrets))
            unframe(flow)  # the markers change the length

    @fail_closed
    def response(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        assert response is not None
        if not self.secrets:
            return
        self._clean_headers(response)
        if response.stream or not response.raw_content:
            return
        try:
            body = response.get_content(strict=True) or b""
        except ValueError:  # not decodable as declared: clean the bytes as they are
            cleaned, found = self.secrets.bytes(response.raw_content)
            if found:
                response.raw_content = cleaned
                response.headers["content-length"] = str(len(cleaned))
            return
        cleaned, found = self.secrets.bytes(body)
        if found:
            response.content = cleaned  # encoded again as declared; Content-Length follows

    def _clean_headers(self, response: http.Response) -> None:
        for name in {n for n, v in response.headers.items(multi=True) if self.secrets.text(v)[1]}:
            response.headers.set_all(name, [self.secrets.text(v)[0] for v in response.headers.get_all(name)])
