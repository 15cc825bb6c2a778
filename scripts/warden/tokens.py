"""``warden token``: sign a token with the embedded development issuer."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from addons.rules.durations import DurationError, parse_duration
from addons.store.keys import KeyFileError
from scripts.warden.options import State, fail, identity

token_app = typer.Typer()


def _seconds(text: str) -> int:
    try:
        return math.ceil(parse_duration(text).total_seconds())
    except DurationError as e:
        raise fail(f"--ttl: {e}") from None


@token_app.command()
def token(
    user: Annotated[str, typer.Argument(help="The subject (sub) the token names.")],
    groups: Annotated[str, typer.Option(help="Comma-separated groups, e.g. dev,security.")] = "",
    ttl: Annotated[str, typer.Option(help="Lifetime: seconds or 15m, 1h, 1d, 1w.")] = "1h",
    email: Annotated[str | None, typer.Option(help="The email claim.")] = None,
    audience: Annotated[str | None, typer.Option(
        help="The aud claim (default: the --rules file's identity.audience).")] = None,
    key: Annotated[Path | None, typer.Option(help="The embedded issuer's key (default: --issuer-key).")] = None,
) -> None:
    """Sign a token with the embedded development issuer. Example:
    HTTPS_PROXY=http://alice:$(warden token alice --groups dev)@127.0.0.1:8080"""
    from addons.auth.issuer import EmbeddedIssuer

    key = key or State.issuer_key
    if not key.exists():
        raise fail(f"--key: {key} does not exist; start the gateway once (make run) to create it")
    try:
        issuer = EmbeddedIssuer.load_or_create(key)
    except KeyFileError as e:
        raise fail(str(e)) from None
    groups_list = [g.strip() for g in groups.split(",") if g.strip()]
    minted = issuer.mint(user, audience=audience or identity().audience, groups=groups_list, ttl=_seconds(ttl),
                         email=email)
    sys.stdout.write(minted + "\n")
