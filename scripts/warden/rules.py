"""``warden rules``: check a rules file before the gateway loads it, and explain a decision.

\b
    warden rules check rules/default.yaml
    warden rules explain rules/default.yaml POST https://api.openai.com/v1/fine_tuning/jobs
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from mitmproxy import connection, http
from rich.console import Console
from rich.table import Table

from addons.bodies.jsonlimits import parse_json
from addons.bodies.usage import RequestShape, request_shape
from addons.flow.errors import MalformedBody
from addons.flow.meta import IDENTITY, UPSTREAM, Decision
from addons.identity import identity_from_claims
from addons.masking.census import Census, census, widest
from addons.policy import PENDING, ConditionFailed, Step, decide, facts_for, normal_path
from addons.rules.model import Rules, RulesError, load_rules

rules_app = typer.Typer(help=__doc__, no_args_is_help=True, rich_markup_mode=None)
out = Console()
err = Console(stderr=True)


def _load(path: Path) -> Rules:
    try:
        return load_rules(path)
    except RulesError as e:
        err.print(str(e), highlight=False, markup=False)
        raise typer.Exit(1) from None


@rules_app.command()
def check(path: Annotated[Path, typer.Argument(help="The rules file.")] = Path("rules/default.yaml")) -> None:
    """Validate a rules file (errors name file and field; exit 1) and show what it allows. Example: warden rules
    check rules/default.yaml"""
    rules = _load(path)
    ident = rules.identity
    out.print(f"[green]{path}: valid[/]. Identity: issuer {ident.issuer}, audience {ident.audience}, groups from "
              f"'{ident.groups_claim}', admin groups {', '.join(ident.admin_groups)}", highlight=False)
    upstreams = Table(title="upstreams (every other host is refused)", title_justify="left")
    for column in ("name", "host", "credential", "status"):
        upstreams.add_column(column)
    for up in rules.upstreams:
        if up.credential is None:
            header, status = "-", "none injected"
        else:
            header = up.credential.header
            status = f"[yellow]missing: {rules.missing[up.name]} (503)[/]" if up.name in rules.missing else "set"
        upstreams.add_row(up.name, f"{up.host}:{up.port}", header, status)
    out.print(upstreams)
    table = Table(title="rules (first match wins; no match blocks)", title_justify="left")
    for column in ("#", "name", "filter", "action", "reason"):
        table.add_column(column)
    for i, rule in enumerate(rules.rules):
        table.add_row(str(i), rule.name, rule.filter or "(any)", rule.action, rule.reason)
    out.print(table)
    _masking(rules)


def _masking(rules: Rules) -> None:
    masking = rules.masking
    table = Table(title=f"masking profiles (responses: {masking.responses}; uninspectable bodies: "
                        f"{masking.unknown_content}; originals: {masking.originals})", title_justify="left")
    for column in ("profile", "for groups", "entity", "operator", "min score"):
        table.add_column(column)
    for name, groups in [("default", "(everyone else)")] + [(p.name, ", ".join(p.groups) or "(by rule)")
                                                           for p in masking.profiles]:
        profile = masking.profile(None if name == "default" else name)
        if not profile.entities:
            table.add_row(name, groups, "(nothing masked)", "", "")
        for i, entity in enumerate(sorted(profile.entities)):
            spec = profile.operators[entity]
            how = spec.type + (f" keep_last={spec.keep_last}" if spec.keep_last else "") + \
                (f" value={spec.value!r}" if spec.value is not None else "")
            table.add_row(name if i == 0 else "", groups if i == 0 else "", entity, how,
                          f"{profile.thresholds[entity]:g}")
    out.print(table)


def _pii_option(values: list[str], rules: Rules) -> dict[str, int]:
    known = widest(rules.masking).entities
    counts: dict[str, int] = {}
    for value in values:
        entity, sep, number = value.partition("=")
        if not sep or not number.strip().isdigit():
            raise typer.BadParameter(f"{value!r}: write ENTITY=COUNT, e.g. EMAIL_ADDRESS=2", param_hint="--pii")
        if entity not in known:
            raise typer.BadParameter(f"{entity!r} is not an entity these rules mask ({', '.join(sorted(known))})",
                                     param_hint="--pii")
        counts[entity] = int(number)
    return counts


def _analysed(rules: Rules, request: http.Request) -> dict[str, int]:
    """What the gateway's analyzer finds in ``request``'s body, counted as policy counts it."""
    from addons.masking.payloads import parse_body
    from addons.masking.protocol import Unit
    from addons.masking.recognizers import engine_spec
    from addons.masking.worker import Analyzer

    parsed = parse_body(request.path, request.headers.get("content-type", ""), request.content or b"")
    if parsed is None:
        return {}
    texts = [slot.text for slot in parsed[0].slots]
    with err.status("loading the PII analyzer (spaCy) ..."):
        spans = Analyzer(engine_spec(rules.masking)).analyze([Unit(t) for t in texts])
    return {e: n for e, n in census(rules.masking, texts, spans).counts.items() if n}


@rules_app.command()
def explain(
    path: Annotated[Path, typer.Argument(help="The rules file.")],
    method: Annotated[str, typer.Argument(help="HTTP method, e.g. POST.")],
    url: Annotated[str, typer.Argument(help="The full URL, e.g. https://api.openai.com/v1/chat/completions.")],
    user: Annotated[str, typer.Option(help="The caller's sub.")] = "someone",
    group: Annotated[list[str] | None, typer.Option(help="A group of the caller (repeat for several).")] = None,
    email: Annotated[str | None, typer.Option(help="The caller's e-mail.")] = None,
    client_id: Annotated[str | None, typer.Option(help="The token's client id (service accounts).")] = None,
    body: Annotated[Path | None, typer.Option(help="A file holding the request body (JSON unless --content-type).",
                                              exists=True, dir_okay=False)] = None,
    content_type: Annotated[str, typer.Option(help="The body's Content-Type.")] = "application/json",
    pii: Annotated[list[str] | None, typer.Option(
        help="What analysis finds, ENTITY=COUNT (repeat); without it, rules that read pii analyse --body.")] = None,
    at: Annotated[str | None, typer.Option(help="When, ISO 8601 (default now), e.g. 2026-12-01T22:00:00+01:00.")]
    = None,
) -> None:
    """Say what the gateway would decide for a request, and why: each rule's filter and condition. Example: warden
    rules explain rules/default.yaml POST https://api.openai.com/v1/files --user alice --group contractors"""
    rules = _load(path)
    try:
        request = http.Request.make(method.upper(), url, body.read_bytes() if body else b"",
                                    http.Headers(content_type=content_type) if body else http.Headers())
        now = datetime.fromisoformat(at) if at else None
    except ValueError as e:
        raise typer.BadParameter(f"{e}") from None
    upstream = rules.upstream_for(request.host, request.port)
    if upstream is None:
        out.print(f"[red]refused (403 host_not_allowed)[/]: {request.host}:{request.port} is not an upstream",
                  highlight=False)
        raise typer.Exit(0)
    flow = http.HTTPFlow(connection.Client(peername=("127.0.0.1", 0), sockname=("127.0.0.1", 0), timestamp_start=0),
                         connection.Server(address=(request.host, request.port)))
    flow.request = request
    request.path = normal_path(request.path)
    identity = identity_from_claims({"sub": user, "email": email, "groups": group or [], "client_id": client_id},
                                    rules.identity, "bearer")
    IDENTITY.set(flow, identity)
    UPSTREAM.set(flow, upstream.name)
    try:
        shape = request_shape(parse_json(request.content or b"")) if body and "json" in content_type else RequestShape()
    except MalformedBody as e:
        raise typer.BadParameter(e.message, param_hint="--body") from None
    facts = facts_for(rules, flow, shape, now)
    trace: list[Step] = []
    try:
        decision = decide(rules, flow, facts, trace=trace)
        if decision.action == PENDING:
            counts = _pii_option(pii or [], rules) if pii or body is None else _analysed(rules, request)
            found = census(rules.masking, [], []).counts | counts
            out.print(f"PII found: {', '.join(f'{e} {n}' for e, n in counts.items() if n) or 'none'}",
                      highlight=False)
            start = next(i for i, r in enumerate(rules.rules) if r.name == decision.rule)
            trace = [step for step in trace if step.rule != decision.rule]
            decision = decide(rules, flow, facts.with_pii(Census(found).facts()), start, trace=trace)
    except ConditionFailed as e:
        decision = Decision("block", e.rule, f"its condition could not be evaluated ({e}): refused with 500")
    table = Table(title=f"rules weighed for {identity.sub} ({identity.kind}; groups: "
                        f"{', '.join(identity.groups) or 'none'}), first match wins", title_justify="left")
    for column in ("rule", "filter", "condition", "action"):
        table.add_column(column)
    by_name = {r.name: r for r in rules.rules}
    for step in trace:
        rule = by_name[step.rule]
        shown = "(any)" if step.filter is None else f"{rule.filter}: {'matches' if step.filter else 'no match'}"
        cond = "(none)" if rule.when is None else f"{rule.when}: {step.condition}"
        table.add_row(step.rule, shown, cond, rule.action)
    out.print(table)
    colour = "green" if decision.action == "allow" else "red"
    status = f" ({decision.status})" if decision.action == "block" and decision.rule in by_name else ""
    out.print(f"[{colour}]{decision.action}{status}[/] by rule [bold]{decision.rule}[/] on upstream {upstream.name}"
              + (f": {decision.reason}" if decision.reason else ""), highlight=False)
    if decision.action == "allow":
        profile = decision.masking or f"chosen by the caller's groups: " \
                                      f"{rules.masking.profile_for(None, identity.groups).name}"
        out.print(f"masking profile: {profile}", highlight=False)
