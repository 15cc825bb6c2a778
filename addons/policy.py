"""Policy: which upstreams may be reached, and the rules file's first-match-wins decisions.

A host that is not one of the rules file's upstreams is refused (403), at the CONNECT already in
forward mode. A request reaches its upstream only as that upstream: over the scheme it declares
(a cleartext request to an https upstream is refused, 403), with the upstream's name as the TLS
server name the gateway sends, and, in forward mode, with no other name in the client's SNI or in
Host/:authority (421: a CONNECT to an allowed name must not carry requests to another site on the
same front). Inside an allowed upstream, the first rule whose filter and condition match decides:
``allow``, ``block``, or ``review`` (the approval addon holds the request for approvers). No matching
rule means block: nothing passes by accident.
"""

from __future__ import annotations

import re
import string
import weakref
from dataclasses import dataclass

from mitmproxy import ctx, http
from mitmproxy.net.http import url

from addons.bodies.usage import RequestShape
from addons.flow.answers import fail_closed, refuse
from addons.flow.errors import (
    AmbiguousPath,
    CleartextRefused,
    HostNotAllowed,
    MisdirectedRequest,
    NotConfigured,
    PolicyBlocked,
    PolicyUnevaluable,
)
from addons.flow.meta import DECISION, PENDING, UPSTREAM, Decision, ReviewTerms
from addons.rules.conditions import EvaluationError, Facts
from addons.rules.facts import facts_for
from addons.rules.model import Rule, Rules, Upstream, current_rules, normal_host

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


class ConditionFailed(Exception):
    """A rule's condition could not be evaluated on this request: the request is refused (fail closed)."""

    def __init__(self, rule: str, why: str) -> None:
        super().__init__(f"rule {rule!r}: {why}")
        self.rule = rule


@dataclass(frozen=True)
class Step:
    """One rule as ``decide`` weighed it (for ``warden rules explain``): its filter's and condition's verdicts."""

    rule: str
    filter: bool | None  # None: the rule has no filter
    condition: str  # "true", "false", "none" (no condition), "needs pii", or the evaluation error


def decide(rules: Rules, flow: http.HTTPFlow, facts: Facts, start: int = 0,
           trace: list[Step] | None = None) -> Decision:
    """The first rule (from ``start``) whose filter and condition match the flow decides; no match blocks. A rule whose
    condition reads ``pii`` while ``facts`` has none yet gives a ``pending`` decision naming it: masking's analysis
    comes first, then ``decide`` again from that rule. ``trace`` collects each rule weighed. Raises
    ``ConditionFailed``."""
    analysed = facts.plain["pii"] is not None
    together = None
    if not analysed and rules.together is not None:
        try:
            together = facts.evaluate(rules.together)
        except EvaluationError:
            together = None  # one of them fails: evaluate them in order, so only one reached decides the refusal
    for rule, matcher, condition, place in rules.weighed[start:]:
        filtered = None if matcher is None else bool(matcher(flow))
        verdict = "none"
        if filtered is not False and condition is not None:
            if condition.reads_pii and not analysed:
                verdict = "needs pii"
            elif together is not None and place is not None:
                verdict = "true" if together[place] is True else "false"
            else:
                try:
                    verdict = "true" if facts.evaluate(condition.program) is True else "false"
                except EvaluationError as e:
                    if trace is not None:
                        trace.append(Step(rule.name, filtered, f"error: {e}"))
                    raise ConditionFailed(rule.name, str(e)) from None
        if trace is not None:
            trace.append(Step(rule.name, filtered, verdict))
        if filtered is False or verdict == "false":
            continue
        if verdict == "needs pii":
            return Decision(PENDING, rule.name, "decided after PII analysis")
        return _decision(rules, rule, facts)
    return Decision("block", NO_MATCH, "no rule allows this request")


def _decision(rules: Rules, rule: Rule, facts: Facts) -> Decision:
    """What ``rule`` decides for the caller: a review carries a snapshot of its terms (the rules may be reloaded
    while it waits); a service account passes only under the service accounts' own rules, once there are any."""
    if rule.action == "allow" and rules.services_declared and not rule.services and \
            (facts.plain["identity"] or {}).get("kind") == "service":
        return Decision("block", rule.name, "service accounts pass only under their own rules (services: true), and "
                                            f"rule {rule.name!r} is not one; ask an operator to add a rule for the job")
    review = None if rule.review is None else ReviewTerms(
        **{**rule.review.model_dump(exclude={"webhook"}), "approvers": tuple(rule.review.approvers),
           "skip_groups": tuple(rule.review.skip_groups)})
    reason = rule.reason or (f"waits for approval by {', '.join(rule.review.approvers)}" if rule.review else "")
    return Decision(rule.action, rule.name, reason, rule.masking, rule.status, review)


class Policy:
    def __init__(self) -> None:
        self.rules: Rules | None = None
        # A decision waiting for PII analysis: the rules it began under and what the request asks (memory only).
        self.pending: weakref.WeakKeyDictionary[http.HTTPFlow, tuple[Rules, RequestShape]] = \
            weakref.WeakKeyDictionary()

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
        rules = self.rules
        if flow.request.path != "*":
            flow.request.path = normal_path(flow.request.path)  # rules judge, and the upstream gets, one spelling
        intake = ctx.master.addons.get("intake")
        shape = intake.shape_of(flow) if intake is not None else RequestShape()
        self._decide(flow, rules, shape)

    def decide_after_analysis(self, flow: http.HTTPFlow, pii: dict) -> Decision:
        """Finish a ``pending`` decision with what masking's analysis found (``pii``: counts, total, entities); a
        block refuses the flow. Called by masking once it has analysed the request, before it masks."""
        rules, shape = self.pending.pop(flow)
        held = DECISION.of(flow)
        assert held is not None and held.action == PENDING
        start = next(i for i, rule in enumerate(rules.rules) if rule.name == held.rule)
        return self._decide(flow, rules, shape, pii, start)

    def _decide(self, flow: http.HTTPFlow, rules: Rules, shape: RequestShape, pii: dict | None = None,
                start: int = 0) -> Decision:
        """Decide (from rule ``start``, with ``pii`` once analysed), refuse what is blocked or ambiguous, and keep
        what a pending decision needs for later."""
        try:
            decision = decide(rules, flow, self._facts(rules, flow, shape, pii), start)
            read_otherwise = self._ambiguity(flow, rules, decision, shape, pii, start)
        except ConditionFailed as e:
            return self._unevaluable(flow, e)
        DECISION.set(flow, decision)
        if read_otherwise is not None:
            decision = DECISION.set(flow, Decision("block", decision.rule,
                                                   "the path decides otherwise as servers may read it"))
            refuse(flow, AmbiguousPath(
                f"the path {flow.request.path!r} reads as {read_otherwise!r} to servers that decode %2F, %5C or "
                "'\\' as '/' or drop ';' parameters, and the rules decide that spelling otherwise; "
                "send the path as the upstream should read it"
            ))
            return decision
        if decision.action == PENDING:
            self.pending[flow] = (rules, shape)
            return decision
        self._enforce(flow, decision)
        return decision

    @staticmethod
    def _facts(rules: Rules, flow: http.HTTPFlow, shape: RequestShape, pii: dict | None) -> Facts:
        facts = facts_for(rules, flow, shape)
        return facts if pii is None else facts.with_pii(pii)

    @staticmethod
    def _enforce(flow: http.HTTPFlow, decision: Decision) -> None:
        if decision.action == "block":
            reason = decision.reason or f"blocked by rule {decision.rule!r}"
            refuse(flow, PolicyBlocked(f"{reason} (rule {decision.rule})", status=decision.status))

    @staticmethod
    def _unevaluable(flow: http.HTTPFlow, e: ConditionFailed) -> Decision:
        decision = DECISION.set(flow, Decision("block", e.rule, "its condition could not be evaluated"))
        refuse(flow, PolicyUnevaluable(f"{e}; the request was not forwarded: ask an operator to fix the condition"))
        return decision

    def _ambiguity(self, flow: http.HTTPFlow, rules: Rules, decision: Decision, shape: RequestShape,
                   pii: dict | None, start: int) -> str | None:
        """The other spelling of the path, if a server could read it so and the rules decide it otherwise (with the
        same findings: a decision that waited for analysis is checked again once it is made)."""
        path = flow.request.path
        other = lenient_path(path)
        if other == path:
            return None
        flow.request.path = other
        try:
            elsewise = decide(rules, flow, self._facts(rules, flow, shape, pii), start)
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
