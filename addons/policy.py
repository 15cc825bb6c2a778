"""Policy: which upstreams may be reached, and the rules file's first-match-wins decisions.

A host that is not one of the rules file's upstreams is refused (403), at the CONNECT already in
forward mode. Inside an allowed upstream, the first rule whose filter matches decides: ``allow``
or ``block``. No matching rule means block: nothing passes by accident.
"""

from __future__ import annotations

from mitmproxy import ctx, http

from addons.errors import HostNotAllowed, NotConfigured, PolicyBlocked
from addons.flowmeta import Decision, fail_closed, meta, refuse
from addons.rules import Rules, rules_from_option

NO_MATCH = "(no rule matched)"


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

    def load(self, loader) -> None:
        loader.add_option(
            "warden_rules", str, "rules/default.yaml",
            "Warden's rules file: upstreams (the only hosts reached, and their credentials) and policy rules.",
        )

    def configure(self, updated: set[str]) -> None:
        if "warden_rules" in updated:
            self.rules = rules_from_option(ctx.options.warden_rules)

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
        meta(flow).upstream = upstream.name
        return True
