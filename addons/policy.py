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

import re
import string

from mitmproxy import http
from mitmproxy.net.http import url

from addons.flow.answers import fail_closed, refuse
from addons.flow.errors import (
    AmbiguousPath,
    CleartextRefused,
    HostNotAllowed,
    MisdirectedRequest,
    NotConfigured,
    PolicyBlocked,
)
from addons.flow.meta import DECISION, UPSTREAM, Decision
from addons.rules.model import Rules, Upstream, current_rules, normal_host

NO_MATCH = "(no rule matched)"


_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")


def _names_other(authority: str, upstream: Upstream) -> bool:
    try:
        host, port = url.parse_authority(authority, check=False)
    except ValueError:
        return True
    return normal_host(host) != upstream.host or port not in (None, upstream.port)


def misdirection(flow: http.HTTPFlow, upstream: Upstream, *, forward: bool) -> str | None:
    """What names another host than ``upstream`` in this request, or None: the client's SNI (forward mode only; in
    reverse mode it names the gateway), an absolute-form target's authority (servers obey it over Host), any Host
    header or :authority, or a target that is not a path."""
    sni = flow.client_conn.sni
    if forward and sni and normal_host(sni) != upstream.host:
        return f"the TLS server name (SNI) {sni!r}"
    request = flow.request
    if request.authority and _names_other(request.authority, upstream):
        return f"the request target's authority {request.authority!r}"
    hosts = request.headers.get_all("host")
    if len(hosts) > 1:
        return f"{len(hosts)} Host headers ({', '.join(map(repr, hosts))})"
    if hosts and _names_other(hosts[0], upstream):
        return f"Host {hosts[0]!r}"
    if not request.path.startswith("/") and not (request.method == "OPTIONS" and request.path == "*"):
        return f"the request target {request.path!r}"
    return None


def normal_path(path: str) -> str:
    """The request path as rules see it and the upstream receives it (RFC 3986 6.2.2): percent-encoded unreserved
    characters decoded, other escapes in upper case, dot segments removed, repeated slashes merged. The query is
    left as sent. ``/v1/%66iles``, ``/v1//files`` and ``/x/../v1/./files`` are all ``/v1/files``."""
    target, sep, query = path.partition("?")

    def unescape(m: re.Match) -> str:
        char = chr(int(m[1], 16))
        return char if char in _UNRESERVED else f"%{m[1].upper()}"

    segments: list[str] = []
    parts = _PERCENT.sub(unescape, target).split("/")[1:]
    for i, segment in enumerate(parts):
        last = i == len(parts) - 1
        if segment in (".", ".."):
            if segment == ".." and segments:
                segments.pop()
            if last:
                segments.append("")  # "/a/b/.." and "/a/." end in a slash
        elif segment or last:  # an empty segment before the end is a repeated slash
            segments.append(segment)
    return "/" + "/".join(segments) + sep + query


_SEPARATOR_ESCAPES = re.compile(r"%(2[Ff]|5[Cc])")


def lenient_path(path: str) -> str:
    """``path`` as a lenient server may read it: ``%2F``, ``%5C`` and ``\\`` as ``/``, ``;`` parameters dropped,
    then in normal form. Rules that decide this spelling otherwise make the request ambiguous."""
    target, sep, query = path.partition("?")
    target = _SEPARATOR_ESCAPES.sub("/", target).replace("\\", "/")
    target = "/".join(segment.split(";", 1)[0] for segment in target.split("/"))
    return normal_path(target + sep + query)


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
        if flow.request.path != "*":
            flow.request.path = normal_path(flow.request.path)  # rules judge, and the upstream gets, one spelling
        decision = DECISION.set(flow, decide(self.rules, flow))
        if (read_otherwise := self._ambiguity(flow, decision)) is not None:
            DECISION.set(flow, Decision("block", decision.rule, "the path decides otherwise as servers may read it"))
            refuse(flow, AmbiguousPath(
                f"the path {flow.request.path!r} reads as {read_otherwise!r} to servers that decode %2F, %5C or "
                "'\\' as '/' or drop ';' parameters, and the rules decide that spelling otherwise; "
                "send the path as the upstream should read it"
            ))
            return
        if decision.action == "block":
            reason = decision.reason or f"blocked by rule {decision.rule!r}"
            refuse(flow, PolicyBlocked(f"{reason} (rule {decision.rule})"))

    def _ambiguity(self, flow: http.HTTPFlow, decision: Decision) -> str | None:
        """The other spelling of the path, if a server could read it so and the rules decide it otherwise."""
        assert self.rules is not None
        path = flow.request.path
        other = lenient_path(path)
        if other == path:
            return None
        flow.request.path = other
        try:
            elsewise = decide(self.rules, flow)
        finally:
            flow.request.path = path
        return other if (elsewise.action, elsewise.rule) != (decision.action, decision.rule) else None

    def _check_host(self, flow: http.HTTPFlow) -> bool:
        if self.rules is None:
            refuse(flow, NotConfigured("the gateway has no valid rules loaded; see the operator log"))
            return False
        host, port = flow.request.host, flow.request.port
        upstream = self.rules.upstream_for(host, port)
        if upstream is None:
            DECISION.set(flow, Decision("block", "upstreams", "host not in the rules file's upstreams"))
            refuse(flow, HostNotAllowed(
                f"{host}:{port} is not an upstream of this gateway; ask an operator to add it to {self.rules.path}"
            ))
            return False
        if flow.request.method != "CONNECT" and not self._pin(flow, upstream):
            return False
        UPSTREAM.set(flow, upstream.name)
        return True

    @staticmethod
    def _pin(flow: http.HTTPFlow, upstream: Upstream) -> bool:
        """The request goes to ``upstream`` under its own name and scheme, or is refused."""
        if flow.request.scheme != upstream.scheme:
            DECISION.set(flow, Decision("block", "upstreams", f"{flow.request.scheme} to a {upstream.scheme} upstream"))
            refuse(flow, CleartextRefused(
                f"upstream {upstream.name!r} is reached over {upstream.scheme}, and this request came as "
                f"{flow.request.scheme}; send it to {upstream.scheme}://{upstream.host}:{upstream.port} "
                "(HTTPS_PROXY, not HTTP_PROXY)"
            ) if upstream.scheme == "https" else MisdirectedRequest(
                f"upstream {upstream.name!r} is plain HTTP; send the request as http://{upstream.host}:{upstream.port}"
            ))
            return False
        mode = getattr(flow.client_conn, "proxy_mode", None)
        forward = mode is None or mode.type_name == "regular"
        if (other := misdirection(flow, upstream, forward=forward)) is not None:
            DECISION.set(flow, Decision("block", "upstreams", f"names another host: {other}"))
            refuse(flow, MisdirectedRequest(
                f"this request goes to {upstream.host}:{upstream.port}, but it names another host in {other}; "
                "send it to the host you mean, and name only that host"
            ))
            return False
        flow.server_conn.sni = upstream.host  # never the client's: the name the gateway's TLS asks the upstream for
        if not flow.request.is_http2:
            flow.request.authority = ""  # origin-form upstream: a server obeys an absolute-form target over Host
        # One spelling of the upstream's name (not "API.example.com." as sent): what rules match (~u) and it reads.
        assert upstream.port is not None  # Upstream's validator fills in the scheme's default port
        flow.request.host_header = url.hostport(upstream.scheme, upstream.host, upstream.port)
        return True
