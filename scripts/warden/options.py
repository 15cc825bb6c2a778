"""What every ``warden`` command shares: the global options (``--db``, ``--admin``, ``--token``,
``--issuer-key``, ``--rules``), the store or admin API they open, and how a command fails."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from addons.store.database import JournalDamaged
from addons.store.keys import KeyFileError, OriginalsKey
from scripts.warden.backend import Backend, BackendError, open_backend

if TYPE_CHECKING:
    from addons.rules.model import IdentityConfig

DEFAULT_ORIGINALS_KEY = Path("certs/warden-originals.key")

out = Console()
err = Console(stderr=True)


class State:
    """The global options, as the app's callback set them."""

    db: str = "data/warden.duckdb"
    admin: str = "127.0.0.1:8081"
    token: str | None = None
    issuer_key: Path = Path("certs/warden-issuer.key")
    rules: Path = Path("rules/default.yaml")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as an error; the Exit (status ``code``) for the caller to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def identity() -> IdentityConfig:
    """The rules file's ``identity`` section (defaults if the file does not exist); credentials are not resolved."""
    import yaml  # here, not above: only commands that ask the admin API read the rules (a search starts faster)
    from pydantic import ValidationError

    from addons.rules.model import IdentityConfig

    if not State.rules.exists():
        return IdentityConfig()
    try:
        raw = yaml.safe_load(State.rules.read_text()) or {}
        return IdentityConfig.model_validate(raw.get("identity") or {} if isinstance(raw, dict) else {})
    except (OSError, yaml.YAMLError, ValidationError) as e:
        raise fail(f"--rules: {State.rules}: identity: {e}") from None


def admin_token() -> str | None:
    """--token, else a five-minute token signed with the embedded issuer's key (if this user can read it) for
    the rules file's identity.audience and first of identity.admin_groups."""
    if State.token:
        return State.token
    if not State.issuer_key.exists():
        return None
    from addons.auth.issuer import EmbeddedIssuer

    try:
        issuer = EmbeddedIssuer.load_or_create(State.issuer_key)
    except KeyFileError:
        return None
    config = identity()
    groups = [config.admin_groups[0]]
    *parents, leaf = config.groups_claim.split(".")
    claim: dict = {leaf: groups}
    for name in reversed(parents):
        claim = {name: claim}
    return issuer.mint(f"cli:{getpass.getuser()}", audience=config.audience, groups=groups, ttl=300, extra=claim)


def connect() -> Backend:
    """The running gateway's admin API, else the store file; a failure to open either ends the command."""
    try:
        return open_backend(State.db, State.admin, admin_token)
    except (BackendError, JournalDamaged) as e:
        raise fail(str(e)) from None


def originals_key(path: Path | None) -> OriginalsKey:
    """--key, else $WARDEN_ORIGINALS_KEY, else certs/warden-originals.key; never creates one."""
    try:
        if path is not None:
            return OriginalsKey.load(path)
        return OriginalsKey.from_env() or OriginalsKey.load(DEFAULT_ORIGINALS_KEY)
    except KeyFileError as e:
        raise fail(str(e)) from None


def progress() -> Progress:
    """A transient progress bar on stderr, so stdout stays the command's output."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)
