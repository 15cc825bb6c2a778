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

import importlib
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from scripts.warden.options import State

# Each command, the module that holds it and that module's Typer app: imported when the command runs (or when
# --help lists them all), so that a search does not first load the policy, PII, replay and evidence code. An app
# marked True is the command (a group of its own: warden rules ...); the others hold commands by these names.
# The order here is the order `warden --help` lists.
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "flows": ("scripts.warden.flows", "flows_app", False),
    "show": ("scripts.warden.show", "show_app", False),
    "export-flows": ("scripts.warden.replay", "replay_app", False),
    "replay": ("scripts.warden.replay", "replay_app", False),
    "verify": ("scripts.warden.verify", "verify_app", False),
    "repair-journal": ("scripts.warden.verify", "verify_app", False),
    "token": ("scripts.warden.tokens", "token_app", False),
    "rules": ("scripts.warden.rules", "rules_app", True),
    "approvals": ("scripts.warden.approvals", "approvals_app", True),
    "grants": ("scripts.warden.approvals", "grants_app", True),
    "revoke": ("scripts.warden.approvals", "revoke_app", False),
    "siem": ("scripts.warden.siem", "siem_app", False),
    "evidence": ("scripts.warden.evidence", "evidence_app", True),
    "purge": ("scripts.warden.retention", "purge_app", False),
    "hold": ("scripts.warden.retention", "hold_app", True),
    "keys": ("scripts.warden.retention", "keys_app", True),
}


class Commands(TyperGroup):
    """``COMMANDS``, each loaded when asked for. (The context and command are typer's own click types, which typer
    keeps private: hence ``Any``.)"""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, name, whole = COMMANDS[cmd_name]
        # Mounted as it would be on this app (its settings, a group by its name or commands merged), then taken out.
        holder = typer.Typer(**SETTINGS)
        holder.callback()(lambda: None)  # a group even for one command
        holder.add_typer(getattr(importlib.import_module(module), name), name=cmd_name if whole else None)
        return typer.main.get_command(holder).commands[cmd_name]  # type: ignore[attr-defined]


SETTINGS: dict[str, Any] = {"add_completion": False, "rich_markup_mode": None}
app = typer.Typer(cls=Commands, help=__doc__, no_args_is_help=True, **SETTINGS)


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
