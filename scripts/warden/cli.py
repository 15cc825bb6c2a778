"""``warden``: search, show, export and verify what the gateway recorded.

Every command reads the DuckDB file (``--db``) when the gateway is stopped and the gateway's admin
API (``--admin``) while it runs. Examples::

\b
    warden flows --user alice --since 2h            # a table; --json for machines
    warden show 0f8c...                             # one flow, masked bodies, and its proof
    warden export-flows --user alice -o flows.mitm  # then: warden replay --web flows.mitm
    warden replay 0f8c... --to http://127.0.0.1:9000  # send it again to a sandbox, diff the answers
    warden verify --heads gateway.log               # exit 0 intact and signed, 1 tampered, 3 unsigned
    warden repair-journal                           # after start-up refused a damaged journal
    warden approvals approve ap-3f9c... --for 30m   # as an approver (WARDEN_TOKEN): see warden approvals --help
    warden siem --follow --cursor siem.cursor       # OCSF events for a SIEM: see warden siem --help
    warden evidence --from 30d -o pack.zip          # signed evidence pack; warden evidence verify pack.zip
    warden purge --older-than 3y --dry-run          # retention; warden hold add --flow ID --reason ... spares
    warden keys rotate --signing                    # old public keys kept: older checkpoints still verify
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scripts.warden.approvals import approvals_app, grants_app, revoke_app
from scripts.warden.evidence import evidence_app
from scripts.warden.flows import flows_app
from scripts.warden.options import State
from scripts.warden.replay import replay_app
from scripts.warden.retention import hold_app, keys_app, purge_app
from scripts.warden.rules import rules_app
from scripts.warden.show import show_app
from scripts.warden.siem import siem_app
from scripts.warden.tokens import token_app
from scripts.warden.verify import verify_app

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
# Nameless sub-apps merge their commands into this one; the order here is the order `warden --help` lists.
app.add_typer(flows_app)
app.add_typer(show_app)
app.add_typer(replay_app)
app.add_typer(verify_app)
app.add_typer(token_app)
app.add_typer(rules_app, name="rules")
app.add_typer(approvals_app, name="approvals")
app.add_typer(grants_app, name="grants")
app.add_typer(revoke_app)
app.add_typer(siem_app)
app.add_typer(evidence_app, name="evidence")
app.add_typer(purge_app)
app.add_typer(hold_app, name="hold")
app.add_typer(keys_app, name="keys")


@app.callback()
def main_options(
    db: Annotated[str, typer.Option(
        envvar="WARDEN_DB", help="The store file (used when the gateway is stopped).")] = State.db,
    admin: Annotated[str, typer.Option(
        envvar="WARDEN_ADMIN", help="The gateway's admin API (used while it runs).")] = State.admin,
    token: Annotated[str | None, typer.Option(envvar="WARDEN_TOKEN", help=(
        "Token for the admin API (one of identity.admin_groups). Default: signed on the spot with the embedded "
        "issuer's key, for the --rules file's identity.audience and first admin group, when this user can read "
        "it."))] = None,
    issuer_key: Annotated[Path, typer.Option(
        envvar="WARDEN_ISSUER_KEY", help="The embedded issuer's key.")] = State.issuer_key,
    rules: Annotated[Path, typer.Option(envvar="WARDEN_RULES", help=(
        "The gateway's rules file: its identity.audience and identity.admin_groups shape the CLI's own "
        "token."))] = State.rules,
) -> None:
    State.db, State.admin, State.token, State.issuer_key, State.rules = db, admin, token, issuer_key, rules


def main() -> None:
    app()


if __name__ == "__main__":
    main()
