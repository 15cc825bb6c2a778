"""Key rotation (``warden keys rotate``): a new signing, originals or hash key, the old ones kept, and a ``keys``
event on the chain naming what rotated (key ids, never key material).

The files change first (``rotate_files``), then the chain records it (``record_rotation``): should the record
fail, the gateway simply starts with the new keys and no event says so, which verification accepts; the other
order could leave a chain that names a key no file holds. On the chain the rotation reads: a checkpoint signed
with the old key, the ``keys`` event, a checkpoint signed with the new key; from then on verification accepts only
the new key's signatures (``addons.store.verification``), and every key ever used stays in the keyring
(``NAME.keys/KEY_ID.pub``) so older checkpoints and evidence packs still verify.

- signing: a new Ed25519 key; the old private key is gone, its public key stays in the keyring.
- originals: a new AES-256-GCM key; the old one moves to ``NAME.keys/ID.key`` to decrypt what it encrypted.
- hash: a new HMAC key for the ``hash`` masking operator; the old one is kept the same way (to link a value
  hashed before the rotation with a known one); hashes made after the rotation differ from those before.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from addons.store.database import Store
from addons.store.events import Event
from addons.store.keys import (
    ORIGINALS_KEY_ENV,
    PII_HASH_KEY_ENV,
    KeyFileError,
    OriginalsKey,
    SigningKey,
    keyring_dir,
    load_or_create_hash_key,
    public_pem,
    read_or_create,
    remember_public_key,
    secret_key_id,
)

KINDS = ("signing", "originals", "hash")


@dataclass
class KeyFiles:
    """Where the gateway keeps its keys (its options warden_signing_key, warden_originals_key, warden_pii_hash_key)."""

    signing: Path
    originals: Path
    hash: Path


@dataclass
class Rotated:
    """What ``rotate_files`` did: the ``keys`` event's detail, and the new keys for a running gateway to take up."""

    detail: dict[str, Any]
    signing: SigningKey | None = None
    originals: OriginalsKey | None = None
    hash: bytes | None = None


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600: a crash leaves the old file or the new, never half of one."""
    tmp = path.with_name(path.name + ".rotating")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _random_key() -> bytes:
    return base64.b64encode(os.urandom(32)) + b"\n"


def _rotate_signing(path: Path) -> tuple[dict[str, str], SigningKey]:
    old = SigningKey.load_or_create(path)  # keeps the old public key in the keyring
    private = Ed25519PrivateKey.generate()
    new = SigningKey(private)
    remember_public_key(path, new.public)
    if not (keyring_dir(path) / f"{old.key_id}.pub").exists():
        raise KeyFileError(f"{keyring_dir(path)}: cannot keep the old public key there, so what it signed would no "
                           "longer verify; nothing was rotated")
    _replace(path.with_suffix(".pub"), public_pem(new.public))
    _replace(path, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    return {"from": old.key_id, "to": new.key_id}, new


def _rotate_secret(path: Path, what: str) -> dict[str, str]:
    """Retire the key in ``path`` to ``NAME.keys/ID.key`` (kept to read what it made) and write a new one."""
    old_text = read_or_create(path, _random_key, what)
    old = base64.b64decode(old_text.strip())
    ring = keyring_dir(path)
    ring.mkdir(parents=True, exist_ok=True)
    _replace(ring / f"{secret_key_id(old)}.key", old_text)
    new_text = _random_key()
    _replace(path, new_text)
    return {"from": secret_key_id(old), "to": secret_key_id(base64.b64decode(new_text.strip()))}


def rotate_files(files: KeyFiles, kinds: list[str]) -> Rotated:
    """Rotate the keys named in ``kinds`` (of ``KINDS``) in their files; ``KeyFileError`` naming the file otherwise."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise KeyFileError(f"rotate which keys? {', '.join(KINDS)} (not {', '.join(unknown) or 'none'})")
    for kind, env in (("originals", ORIGINALS_KEY_ENV), ("hash", PII_HASH_KEY_ENV)):
        if kind in kinds and os.environ.get(env):  # refuse before any file changes
            raise KeyFileError(f"the {kind} key comes from ${env}: rotate it where that value is kept")
    rotated = Rotated(detail={})
    if "signing" in kinds:
        rotated.detail["signing"], rotated.signing = _rotate_signing(files.signing)
    if "originals" in kinds:
        rotated.detail["originals"] = _rotate_secret(files.originals, "originals key")
        rotated.originals = OriginalsKey.load(files.originals)
    if "hash" in kinds:
        rotated.detail["hash"] = _rotate_secret(files.hash, "hash key")
        rotated.hash = load_or_create_hash_key(files.hash)
    return rotated


def record_rotation(store: Store, rotated: Rotated, actor: str, reason: str | None = None) -> dict[str, Any]:
    """The rotation on the chain, through the store's writer: a checkpoint with the old signing key, the ``keys``
    event, the new key taken up, a checkpoint with it. Returns the event's seq and the two checkpoints."""

    def task(writer: Store) -> dict[str, Any]:
        before = writer.sign_now()
        event = Event(kind="keys", user=actor, fate="rotated", reason=reason, detail=rotated.detail)
        writer.append_now(event)
        if rotated.signing is not None:
            writer.use_signing_key(rotated.signing)
        after = writer.sign_now()
        return {"seq": event.seq, "rotated": rotated.detail, "checkpoint_before": before, "checkpoint_after": after}

    return store.on_writer(task)
