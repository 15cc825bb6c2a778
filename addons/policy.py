"""Policy: which upstreams may be reached, and the rules file's first-match-wins decisions.

A host that is not one of the rules file's upstreams is refused (403), at the CONNECT already in
forward mode. A request reaches its upstream only as that upstream: over the scheme it declares
(a cleartext request to an https upstream is refused, 403), with the upstream's name as the TLS
server name the gateway sends, and, in forward mode, with no other name in the client's SNI or in
Host/:authority (421: a CONNECT to an allowed name must not carry requests to another site on the
same front). Inside an allowed upstream, the first rule whose filter matches decides: ``allow``
or ``block``. No matching rule means block: nothing passes by accident.
"""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.net.http import url

from addons.errors import CleartextRefused, HostNotAllowed, MisdirectedRequest, NotConfigured, PolicyBlocked
from addons.flowmeta import Decision, fail_closed, meta, refuse
from addons.rules import Rules, Upstream, current_rules, normal_host

NO_MATCH = "(no rule matched)"


def misdirection(flow: http.HTTPFlow, upstream: Upstream) -> str | None:
    """What other host a forward-proxy request names beside its upstream (SNI, Host/:authority), or None."""
    sni = flow.client_conn.sni
    if sni and normal_host(sni) != upstream.host:
        return f"the TLS server name (SNI) {sni!r}"
    authority = flow.request.host_header
    if authority:
        try:
            host, port = url.parse_authority(authority, check=False)
        except ValueError:
            return f"Host/:authority {authority!r}"
        if normal_host(host) != upstream.host or port not in (None, upstream.port):
            return f"Host/:authority {authority!r}"
    return None


def decide(rules: Rules, flow: http.HTTPFlow) -> Decision:
    """The first rule whose filter matches the flow decides; no match blocks."""
    for rule in rules.rules:
        matcher = rules.filters[rule.name]
        if matcher is None or matcher(flow):
            return Decision(rule.action, rule.name, rule.reason, rule.masking)
    return Decision("block", NO_MATCH, "no rule allows this request")


class Policy:
    def __init__(self) -> None:
        self.rules: Rules | None = None

    def configure(self, updated: set[str]) -> None:
        if "warden_rules" in updated:
            self.rules = current_rules()

    @fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        self._check_host(flow)

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        if not self._check_host(flow):
            return
        assert self.rules is not None
        m = meta(flow)
        m.decision = decide(self.rules, flow)
        if m.decision.action == "block":
            reason = m.decision.reason or f"blocked by rule {m.decision.rule!r}"
            refuse(flow, PolicyBlocked(f"{reason} (rule {m.decision.rule})"))

    def _check_host(self, flow: http.HTTPFlow) -> bool:
        if self.rules is None:
            refuse(flow, NotConfigured("the gateway has no valid rules loaded; see the operator log"))
            return False
        host, port = flow.request.host, flow.request.port
        upstream = self.rules.upstream_for(host, port)
        if upstream is None:
            meta(flow).decision = Decision("block", "upstreams", "host not in the rules file's upstreams")
            refuse(flow, HostNotAllowed(
                f"{host}:{port} is not an upstream of this gateway; ask an operator to add it to {self.rules.path}"
            ))
            return False
        if flow.request.method != "CONNECT" and not self._pin(flow, upstream):
            return False
        meta(flow).upstream = upstream.name
        return True

    @staticmethod
    def _pin(flow: http.HTTPFlow, upstream: Upstream) -> bool:
        """The request goes to ``upstream`` under its own name and scheme, or is refused."""
        if flow.request.scheme != upstream.scheme:
            meta(flow).decision = Decision("block", "upstreams", f"{flow.request.scheme} to a {upstream.scheme} upstream")
            refuse(flow, CleartextRefused(
                f"upstream {upstream.name!r} is reached over {upstream.scheme}, and this request came as "
                f"{flow.request.scheme}; send it to {upstream.scheme}://{upstream.host}:{upstream.port} "
                "(HTTPS_PROXY, not HTTP_PROXY)"
            ) if upstream.scheme == "https" else MisdirectedRequest(
                f"upstream {upstream.name!r} is plain HTTP; send the request as http://{upstream.host}:{upstream.port}"
            ))
            return False
        mode = getattr(flow.client_conn, "proxy_mode", None)
        if mode is None or mode.type_name == "regular":
            if (other := misdirection(flow, upstream)) is not None:
                meta(flow).decision = Decision("block", "upstreams", f"names another host: {other}")
                refuse(flow, MisdirectedRequest(
                    f"this connection goes to {upstream.host}:{upstream.port}, but the request names another host in "
                    f"{other}; connect to the host you mean (CONNECT it) and name only it"
                ))
                return False
        flow.server_conn.sni = upstream.host  # never the client's: the name the gateway's TLS asks the upstream for
        if not flow.request.host_header:
            flow.request.host_header = url.hostport(upstream.scheme, upstream.host, upstream.port)
        return True
