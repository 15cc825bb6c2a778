"""``warden rules``: check a rules file before the gateway loads it, and explain a decision.

\b
    warden rules check rules/default.yaml
    warden rules explain rules/default.yaml POST https://api.openai.com/v1/fine_tuning/jobs
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from mitmproxy import connection, http
from rich.console import Console
from rich.table import Table

from addons.policy import decide
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


@rules_app.command()
def explain(
    path: Annotated[Path, typer.Argument(help="The rules file.")],
    method: Annotated[str, typer.Argument(help="HTTP method, e.g. POST.")],
    url: Annotated[str, typer.Argument(help="The full URL, e.g. https://api.openai.com/v1/chat/completions.")],
) -> None:
    """Say what the gateway would decide for a request, and why. Example: warden rules explain rules/default.yaml GET https://example.com/"""
    rules = _load(path)
    try:
        request = http.Request.make(method.upper(), url)
    except ValueError as e:
        raise typer.BadParameter(f"{url!r}: {e}", param_hint="URL") from None
    upstream = rules.upstream_for(request.host, request.port)
    if upstream is None:
        out.print(f"[red]refused (403 host_not_allowed)[/]: {request.host}:{request.port} is not an upstream",
                  highlight=False)
        raise typer.Exit(0)
    flow = http.HTTPFlow(connection.Client(peername=("127.0.0.1", 0), sockname=("127.0.0.1", 0), timestamp_start=0),
                         connection.Server(address=(request.host, request.port)))
    flow.request = request
    decision = decide(rules, flow)
    colour = "green" if decision.action == "allow" else "red"
    out.print(f"[{colour}]{decision.action}[/] by rule [bold]{decision.rule}[/] on upstream {upstream.name}"
              + (f": {decision.reason}" if decision.reason else ""), highlight=False)
    if decision.action == "allow":
        profile = decision.masking or "chosen by the caller's groups (default: default)"
        out.print(f"masking profile: {profile}", highlight=False)
