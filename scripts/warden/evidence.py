"""``warden evidence``: a signed evidence pack for a period and filters, or for one flow; ``warden evidence verify``
checks a pack alone (no database), as an auditor would."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated

import typer

from addons.evidence.interaction import check_proofs
from addons.evidence.manifest import Pack, check_pack
from addons.evidence.pack import STEPS, Progress
from addons.evidence.request import EvidenceError, PackRequest
from addons.store.keys import KeyFileError, SigningKey, load_public_key, signing_keyring
from addons.store.queries import parse_when
from addons.store.search import FlowFilter
from addons.store.verification import Keys
from scripts.warden.backend import BackendError
from scripts.warden.options import connect, err, fail, out, progress

evidence_app = typer.Typer(no_args_is_help=False)

EXIT_OK, EXIT_BAD, EXIT_UNUSABLE, EXIT_UNPINNED = 0, 1, 2, 3


def _when(option: str, value: str | None):
    try:
        return parse_when(value) if value else None
    except ValueError as e:
        raise fail(f"{option}: {e}") from None


@evidence_app.callback(invoke_without_command=True)
def evidence(
    context: typer.Context,
    since: Annotated[str | None, typer.Option("--from", help="Start of the period (ISO 8601 UTC, or 7d for 7 days "
                                                             "ago).")] = None,
    until: Annotated[str | None, typer.Option("--to", help="End of the period, excluded (as --from).")] = None,
    user: Annotated[str | None, typer.Option(help="Only this identity's flows and approvals.")] = None,
    group: Annotated[str | None, typer.Option(help="Only callers in this group.")] = None,
    host: Annotated[str | None, typer.Option(help="Only flows to this upstream host.")] = None,
    entity: Annotated[str | None, typer.Option(help="Only flows where this entity type was masked.")] = None,
    flow: Annotated[str | None, typer.Option(help="One interaction: this flow, with the proof of its events.")] = None,
    output_name: Annotated[str | None, typer.Option("-o", "--output", help=(
        "FILE.zip, or a folder (DIR/, created; must be empty).")) ] = None,
    signing_key: Annotated[Path, typer.Option(envvar="WARDEN_SIGNING_KEY", help=(
        "The gateway's Ed25519 key, to sign a pack made from the stopped store (a running gateway signs with its "
        "own).")) ] = Path("certs/warden-signing.key"),
) -> None:
    """Write a signed evidence pack: flows, approvals and refusals (JSONL, CSV, Parquet), report.html, the chain
    verification, the gateway's public key and its fingerprint, and MANIFEST.sha256 signed with the gateway's key.
    While the gateway runs it builds and signs the pack itself. --flow ID gives one interaction instead.

    \b
    Examples:
      warden evidence --from 2026-01-01 --to 2026-04-01 --group finance -o q1-finance.zip
      warden evidence --flow 0f8c... -o interaction.zip
      warden evidence verify q1-finance.zip --pubkey gateway-signing.pub
    """
    if context.invoked_subcommand is not None:
        return
    if output_name is None:
        raise fail("-o FILE.zip or -o DIR/ is required (or: warden evidence verify PACK)")
    output = Path(output_name)
    if flow is not None and any(v is not None for v in (since, until, user, group, host, entity)):
        raise fail("--flow takes no other filter: a one-interaction pack is that flow")
    folder = output_name.endswith("/") or output.is_dir()
    if folder and output.exists() and any(output.iterdir()):
        raise fail(f"-o {output}: the folder is not empty")
    request = PackRequest(flow_id=flow) if flow is not None else PackRequest(filter=FlowFilter(
        since=_when("--from", since), until=_when("--to", until), user=user, group=group, host=host, entity=entity,
        limit=None))

    def key() -> tuple[SigningKey, Keys]:
        if not signing_key.exists():  # never sign with a key made up on the spot
            raise fail(f"--signing-key: {signing_key}: no such key file (the gateway's warden_signing_key)")
        try:
            signing = SigningKey.load_or_create(signing_key)
            return signing, signing_keyring(signing_key.with_suffix(".pub"))
        except KeyFileError as e:
            raise fail(f"--signing-key: {e}") from None

    backend = connect()
    with tempfile.TemporaryDirectory(prefix="warden-evidence-") as tmp:
        target = Path(tmp) / "pack.zip"
        try:
            with progress() as bar:
                task = bar.add_task("evidence pack", total=len(STEPS) if flow is None else None)
                verifying = bar.add_task("chain events verified", total=None, visible=False)

                def step(name: str) -> None:
                    bar.update(task, description=f"evidence pack: {name}", advance=0 if name == STEPS[0] else 1)
                    bar.update(verifying, visible=name == STEPS[3])

                backend.evidence(request, target, key, Progress(step, lambda n: bar.advance(verifying, n)))
        except (EvidenceError, BackendError) as e:
            raise fail(str(e)) from None
        finally:
            backend.close()
        if folder:
            output.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(target) as z:
                z.extractall(output)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(target, output)
    checked = check_pack(Pack(output))
    if not checked.ok:
        raise fail(f"wrote {output}, but it does not verify: {'; '.join(checked.problems)}", 1)
    out.print(f"wrote {output} ({checked.files} files, signed by key {checked.fingerprint}, via {backend.where})",
              highlight=False, soft_wrap=True)


@evidence_app.command("verify")
def verify_pack(
    pack: Annotated[Path, typer.Argument(help="The pack: a .zip or a folder.")],
    pubkey: Annotated[Path | None, typer.Option(help=(
        "The gateway's public key (PEM) obtained out of band: the pack must be signed by it. Without it, compare "
        "the fingerprint printed with the one the operator gave you."))] = None,
    fingerprint: Annotated[str | None, typer.Option(help=(
        "The fingerprint of the gateway's key (SHA-256 of the raw key, hex) obtained out of band, instead of "
        "--pubkey."))] = None,
) -> None:
    """Check a pack alone, without the database: every file listed in MANIFEST.sha256 with its SHA-256, no file
    unlisted, the manifest's Ed25519 signature, and (one-interaction packs) each event's proof up to a signed
    checkpoint. Exit 0 intact and signed by the pinned key (--pubkey or --fingerprint), 1 changed (the file is
    named) or signed by another key, 2 unreadable, 3 intact but its signer not pinned (anyone can sign a pack
    with a key of their own: compare the fingerprint printed with the operator's).

    Example: warden evidence verify q1.zip --pubkey gateway-signing.pub
    """
    pinned = None
    if pubkey is not None:
        try:
            pinned = load_public_key(pubkey)
        except KeyFileError as e:
            raise fail(f"--pubkey: {e}") from None
    try:
        opened = Pack(pack)
    except (FileNotFoundError, zipfile.BadZipFile) as e:
        raise fail(f"{pack}: not a readable pack (a zip or a folder): {e}", EXIT_BAD
                   if pack.exists() else EXIT_UNUSABLE) from None
    try:
        result = check_pack(opened, pinned)
        if result.ok:
            assert result.public_key is not None
            for problem in check_proofs(opened, pinned or result.public_key):
                result.bad(problem)
    finally:
        opened.close()
    if result.ok and fingerprint is not None and fingerprint.strip().lower() != result.fingerprint:
        result.bad(f"signing-key.pub: the pack is signed by key {result.fingerprint}, not by the key of the given "
                   f"fingerprint {fingerprint.strip().lower()}")
    if not result.ok:
        for problem in result.problems:
            err.print(f"[bold red]BAD[/]: {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD)
    if pinned is None and fingerprint is None:
        out.print(f"pack intact but UNPINNED: {result.files} files as listed in the manifest it carries, signed by key "
                  f"{result.fingerprint}, which anyone could have made: compare it with the fingerprint the operator "
                  "gave you, or pass --pubkey/--fingerprint (exit 3)", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_UNPINNED)
    out.print(f"pack OK: {result.files} files as listed in the signed manifest; signed by the pinned key "
              f"{result.fingerprint}", highlight=False, soft_wrap=True)
