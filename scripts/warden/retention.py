"""``warden purge``, ``warden hold`` and ``warden keys rotate``: retention, incident holds and key rotation.

Each writes to the record: through the running gateway's admin API (which holds the file), or, with the gateway
stopped, on the file itself: opened for writing, the change made through the store's own writer, a checkpoint
signed with the gateway's signing key (``--signing-key``), closed.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from addons.rules.model import check_retention, purge_period
from addons.store.compaction import compact
from addons.store.database import Store, StoreError, StoreInUse, connect, held_by_another_process
from addons.store.holds import HoldError, active_holds, place_hold, release_hold
from addons.store.keys import KeyFileError, SigningKey
from addons.store.retention import purge
from addons.store.rotation import KINDS, KeyFiles, record_rotation, rotate_files
from scripts.warden.backend import AdminBackend, BackendError
from scripts.warden.options import State, admin_token, fail, out

purge_app = typer.Typer()
hold_app = typer.Typer(help="Incident holds: flows (or every flow of a user) a retention purge must spare.",
                       no_args_is_help=True)
keys_app = typer.Typer(help="The gateway's keys.", no_args_is_help=True)

SigningKeyOption = Annotated[Path, typer.Option(
    envvar="WARDEN_SIGNING_KEY", help="The gateway's signing key (its warden_signing_key), to sign the change when "
                                      "the gateway is stopped.")]
DEFAULT_SIGNING_KEY = Path("certs/warden-signing.key")


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _on_store(signing_key: Path, on_file: Callable[[Store], Any], on_admin: Callable[[AdminBackend], Any]) -> Any:
    """``on_admin`` through the running gateway's admin API, else ``on_file`` on the store opened for writing."""
    db = Path(State.db)
    if not db.exists():
        raise fail(f"{db}: no such store (--db)")
    if not held_by_another_process(db):
        if not signing_key.exists():
            raise fail(f"--signing-key: {signing_key}: no such key; the gateway's warden_signing_key signs the change")
        try:
            store = Store(db, SigningKey.load_or_create(signing_key))
        except StoreInUse:
            pass  # a gateway took it meanwhile: ask it
        except (StoreError, KeyFileError) as e:
            raise fail(str(e)) from None
        else:
            try:
                return on_file(store)
            finally:
                store.close()
    backend = AdminBackend(State.admin, admin_token())
    try:
        return on_admin(backend)
    except BackendError as e:
        raise fail(str(e)) from None
    finally:
        backend.close()


def _has_tombstones(db: Path) -> bool:
    """Whether any purge (this one, or the gateway's own since the last compaction) left tombstones in the file."""
    con = connect(db, read_only=True)
    try:
        return bool(con.execute("SELECT count(*) FROM events WHERE (record->'tombstone') IS NOT NULL LIMIT 1")
                    .fetchall()[0][0])
    finally:
        con.close()


def _period_of_rules() -> str | None:
    """The rules file's ``retention:`` (None if it sets none or does not exist)."""
    if not State.rules.exists():
        return None
    try:
        raw = yaml.safe_load(State.rules.read_text()) or {}
        value = raw.get("retention") if isinstance(raw, dict) else None
        return None if value is None else check_retention(value)
    except (OSError, yaml.YAMLError, ValueError) as e:
        raise fail(f"--rules: {State.rules}: retention: {e}") from None


def _print(data: dict, as_json: bool, line: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
    else:
        out.print(line, highlight=False)


@purge_app.command("purge")
def purge_command(
    older_than: Annotated[str | None, typer.Option(help=(
        "Purge events older than this (3y, 18w, 90d). Default: the rules file's 'retention:' (the running "
        "gateway's own rules when it runs)."))] = None,
    dry_run: Annotated[bool, typer.Option(help="Count what would be purged; change nothing.")] = False,
    signing_key: SigningKeyOption = DEFAULT_SIGNING_KEY,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """Remove the content of events older than the retention period, keeping a tombstone of each (sequence, hashes
    and the digest of what was removed), so `warden verify` still passes from the genesis. Flows under an incident
    hold (warden hold) keep their content. The purge is itself an event on the chain. Example: warden purge
    --older-than 3y --dry-run
    """
    period, length = older_than, None
    if not held_by_another_process(Path(State.db)):  # the running gateway checks against its own rules
        try:
            period, length = purge_period(older_than, _period_of_rules())
        except ValueError as e:
            raise fail(f"--older-than: {e}") from None

    def on_file(store: Store) -> dict:
        if length is None:  # a gateway held the file when asked, and let it go since
            raise fail("the gateway stopped meanwhile: run the command again")
        return {**purge(store, length, str(period), _actor(), dry_run=dry_run).as_dict(), "on_file": True}

    report = _on_store(signing_key, on_file,
                       lambda admin: admin.post("/api/purge", older_than=older_than, dry_run=str(dry_run).lower()))
    if "error" in report:  # a 409: an event that does not match its hash stops the purge
        raise fail(report["error"]["message"], 1)
    if report.pop("on_file", False) and not report["dry_run"] and _has_tombstones(Path(State.db)):
        try:  # DuckDB keeps replaced blocks: rewrite the file so the removed content leaves the disk too
            report["compacted"] = compact(Path(State.db))
        except StoreError as e:
            raise fail(f"purged, but the file could not be compacted (the removed bodies stay in its free blocks "
                       f"until then; run warden purge again with the gateway stopped): {e}", 1) from None
    verb = "would purge" if report["dry_run"] else "purged"
    _print(report, as_json, (
        f"{verb} {report['purged']} events older than {report['period']} (before {report['cutoff']} UTC); "
        f"{report['spared_held']} events of held flows or users spared; {report['kept_form1']} events in chain "
        f"form 1 kept (they cannot be tombstoned)"
        + (f"; purge events seq {', '.join(map(str, report['purge_events']))}" if report["purge_events"] else "")
        + (f"; the file rewritten without the removed content ({report['compacted']['bytes_before']:,} -> "
           f"{report['compacted']['bytes_after']:,} bytes)" if "compacted" in report else "")))


@hold_app.command("add")
def hold_add(
    reason: Annotated[str, typer.Option(help="Why (an incident, a legal hold): kept on the record.")],
    flow: Annotated[str | None, typer.Option(help="Hold this flow (its whole id).")] = None,
    user: Annotated[str | None, typer.Option(help="Hold every flow of this user (sub).")] = None,
    signing_key: SigningKeyOption = DEFAULT_SIGNING_KEY,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Place an incident hold: a purge spares the flow, or every flow of the user, until it is released. Example:
    warden hold add --user alice --reason "incident 2026-11-23"
    """
    try:
        hold = _on_store(signing_key, lambda store: place_hold(store, _actor(), reason, flow_id=flow, user=user),
                         lambda admin: admin.post("/api/holds", flow_id=flow, user=user, reason=reason))
    except HoldError as e:
        raise fail(str(e)) from None
    what = f"flow {hold['flow_id']}" if hold.get("flow_id") else f"every flow of user {hold['user']}"
    _print(hold, as_json, f"{hold['hold_id']}: {what} held ({hold['reason']}); recorded as event seq={hold['seq']}")


@hold_app.command("release")
def hold_release(
    hold_id: Annotated[str, typer.Argument(help="The hold's id (warden hold list).")],
    reason: Annotated[str, typer.Option(help="Why it is lifted: kept on the record.")],
    signing_key: SigningKeyOption = DEFAULT_SIGNING_KEY,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Release an incident hold; the next purge may then remove what it spared. Example: warden hold release
    hold-3f9c0a1b2c3d --reason "incident closed"
    """
    try:
        hold = _on_store(signing_key, lambda store: release_hold(store, _actor(), hold_id, reason),
                         lambda admin: admin.post(f"/api/holds/{hold_id}/release", reason=reason))
    except HoldError as e:
        raise fail(str(e)) from None
    _print(hold, as_json, f"{hold_id} released ({hold['reason']}); recorded as event seq={hold['seq']}")


@hold_app.command("list")
def hold_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The holds in force. Example: warden hold list --json"""
    db = Path(State.db)
    if held_by_another_process(db):
        backend = AdminBackend(State.admin, admin_token())
        try:
            holds = backend.get("/api/holds")["holds"]
        except BackendError as e:
            raise fail(str(e)) from None
        finally:
            backend.close()
    else:
        try:
            con = connect(db, read_only=True)
        except StoreError as e:
            raise fail(str(e)) from None
        try:
            holds = active_holds(con)
        finally:
            con.close()
    for hold in holds:
        what = f"flow {hold['flow_id']}" if hold.get("flow_id") else f"user {hold['user']}"
        _print(hold, as_json, f"{hold['hold_id']}  {what}  by {hold['by']} at {hold['placed_at']}: {hold['reason']}")
    if not holds and not as_json:
        out.print("no holds in force")


@keys_app.command("rotate")
def keys_rotate(
    signing: Annotated[bool, typer.Option("--signing", help="The Ed25519 checkpoint signing key.")] = False,
    originals: Annotated[bool, typer.Option("--originals", help="The AES key of original bodies.")] = False,
    hash_key: Annotated[bool, typer.Option("--hash", help="The HMAC key of the hash masking operator.")] = False,
    reason: Annotated[str | None, typer.Option(help="Why: kept on the record.")] = None,
    signing_key: SigningKeyOption = DEFAULT_SIGNING_KEY,
    originals_key: Annotated[Path, typer.Option(help="The originals key file (stopped gateway).")] = Path(
        "certs/warden-originals.key"),
    pii_hash_key: Annotated[Path, typer.Option(help="The hash key file (stopped gateway).")] = Path(
        "certs/warden-pii-hash.key"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rotate keys (all three unless some are named): the old public signing keys stay in the keyring
    (warden-signing.keys/) so older checkpoints and evidence packs verify, old originals keys stay to decrypt, the
    old hash key is kept. A 'keys' event names what rotated (key ids only), between a checkpoint signed with the
    old key and one signed with the new. Example: warden keys rotate --signing --reason "yearly rotation"
    """
    kinds = [k for k, asked in zip(KINDS, (signing, originals, hash_key), strict=True) if asked] or list(KINDS)
    files = KeyFiles(signing_key, originals_key, pii_hash_key)

    def on_file(store: Store) -> dict:
        return record_rotation(store, rotate_files(files, kinds), _actor(), reason)

    try:
        done = _on_store(signing_key, on_file,
                         lambda admin: admin.post("/api/keys/rotate", key=kinds, reason=reason))
    except KeyFileError as e:
        raise fail(str(e)) from None
    rotated = ", ".join(f"{kind} {ids['from']} -> {ids['to']}" for kind, ids in done["rotated"].items())
    _print(done, as_json, f"rotated {rotated}; recorded as keys event seq={done['seq']}")
